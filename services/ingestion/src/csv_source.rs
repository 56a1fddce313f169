//! Reading market data from CSV files (a header row, then one row per candle or tick), for
//! `tickmesh replay` and the `ReplaySource` RPC.

use std::path::Path;

use tickmesh_proto::domain::quote;
use tickmesh_proto::v1::{Candle, Interval, Side, Tick};
use tickmesh_store::time::days_from_civil;

/// What the rows of a file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// OHLCV bars: time, open, high, low, close[, volume].
    Candles,
    /// Trades: time, price, size[, trade_id][, side].
    Ticks,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file or a row could not be read.
    #[error("{0}")]
    Csv(#[from] csv::Error),
    /// A row holds something that is not what its column needs.
    #[error("line {line}: {reason}")]
    Row {
        /// 1-based line number in the file.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The header lacks a needed column.
    #[error("no column for {0} in the header")]
    MissingColumn(&'static str),
    /// The candle interval could not be inferred.
    #[error("the candle interval is unknown: {0}")]
    Interval(String),
}

/// A batch of rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// Candles, with their interval set.
    Candles(Vec<Candle>),
    /// Ticks.
    Ticks(Vec<Tick>),
}

impl Batch {
    /// Rows in the batch.
    pub fn len(&self) -> usize {
        match self {
            Batch::Candles(c) => c.len(),
            Batch::Ticks(t) => t.len(),
        }
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Time of the first row.
    pub fn first_time_us(&self) -> Option<i64> {
        match self {
            Batch::Candles(c) => c.first().map(|c| c.open_time_us),
            Batch::Ticks(t) => t.first().map(|t| t.time_us),
        }
    }
}

/// Parses a timestamp: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.frac]` (also with `T`, optional
/// `Z`), all UTC, or an integer count of seconds, milliseconds or microseconds since the epoch
/// (told apart by magnitude).
pub fn parse_time_us(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    if let Ok(n) = text.parse::<i64>() {
        return match n.unsigned_abs() {
            0..1_000_000_000_000 => n.checked_mul(1_000_000),
            1_000_000_000_000..1_000_000_000_000_000 => n.checked_mul(1_000),
            _ => Some(n),
        };
    }
    let (date, clock) = match text.split_once([' ', 'T']) {
        Some((d, c)) => (d, Some(c)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    if !(1..=9999).contains(&year) {
        return None;
    }
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut us = days_from_civil(year, month, day) * 86_400_000_000;
    if let Some(clock) = clock {
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let mut fields = hms.splitn(3, ':');
        let h: i64 = fields.next()?.parse().ok()?;
        let m: i64 = fields.next()?.parse().ok()?;
        let s: i64 = fields.next().unwrap_or("0").parse().ok()?;
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        let frac_us: i64 = if frac.is_empty() {
            0
        } else {
            let digits: String = frac.chars().take(6).collect();
            digits.parse::<i64>().ok()? * 10_i64.pow(6 - digits.len() as u32)
        };
        us += ((h * 60 + m) * 60 + s) * 1_000_000 + frac_us;
    }
    Some(us)
}

/// The interval named `1s`, `1m`, `5m`, `15m`, `1h`, `4h` or `1d`.
pub fn interval_by_name(name: &str) -> Option<Interval> {
    Some(match name {
        "1s" => Interval::Interval1s,
        "1m" => Interval::Interval1m,
        "5m" => Interval::Interval5m,
        "15m" => Interval::Interval15m,
        "1h" => Interval::Interval1h,
        "4h" => Interval::Interval4h,
        "1d" => Interval::Interval1d,
        _ => return None,
    })
}

/// The interval of the given length in microseconds.
pub fn interval_by_length(us: i64) -> Option<Interval> {
    Interval::STORED
        .into_iter()
        .find(|&i| i.length_us() == Some(us))
}

/// Rows of a CSV file, read batch by batch.
pub struct CsvSource {
    reader: csv::Reader<std::fs::File>,
    kind: RowKind,
    symbol: String,
    time: usize,
    fields: Vec<Option<usize>>,
    interval: Option<Interval>,
    previous_time: Option<i64>,
    line: u64,
    /// Candles read before the interval was known.
    pending: Vec<Candle>,
}

impl std::fmt::Debug for CsvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvSource")
            .field("kind", &self.kind)
            .field("symbol", &self.symbol)
            .field("line", &self.line)
            .finish()
    }
}

const CANDLE_COLUMNS: [&[&str]; 5] = [
    &["open", "o"],
    &["high", "h"],
    &["low", "l"],
    &["close", "c"],
    &["volume", "vol", "v"],
];
const TICK_COLUMNS: [&[&str]; 4] = [
    &["price", "p"],
    &["size", "qty", "quantity", "amount", "volume"],
    &["trade_id", "id", "tid"],
    &["side"],
];

impl CsvSource {
    /// Opens `path`; `kind` `None` means candles unless the header has a price column.
    pub fn open(
        path: &Path,
        symbol: &str,
        kind: Option<RowKind>,
        interval: Option<Interval>,
    ) -> Result<CsvSource, SourceError> {
        let mut reader = csv::Reader::from_path(path)?;
        let names: Vec<String> = reader
            .headers()?
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let find = |aliases: &[&str]| names.iter().position(|n| aliases.contains(&n.as_str()));
        let kind = kind.unwrap_or(if find(TICK_COLUMNS[0]).is_some() {
            RowKind::Ticks
        } else {
            RowKind::Candles
        });
        let (wanted, required, labels): (&[&[&str]], usize, &[&'static str]) = match kind {
            RowKind::Candles => (&CANDLE_COLUMNS, 4, &["open", "high", "low", "close"]),
            RowKind::Ticks => (&TICK_COLUMNS, 2, &["price", "size"]),
        };
        let fields: Vec<Option<usize>> = wanted.iter().map(|a| find(a)).collect();
        if let Some(missing) = fields[..required].iter().position(Option::is_none) {
            return Err(SourceError::MissingColumn(labels[missing]));
        }
        let time = names
            .iter()
            .position(|n| ["time", "timestamp", "date", "datetime", "ts", ""].contains(&n.as_str()))
            .unwrap_or(0);
        Ok(CsvSource {
            reader,
            kind,
            symbol: symbol.to_owned(),
            time,
            fields,
            interval,
            previous_time: None,
            line: 1,
            pending: Vec::new(),
        })
    }

    /// Data rows of the file at `path` (for progress).
    pub fn count_rows(path: &Path) -> Result<u64, SourceError> {
        let mut reader = csv::Reader::from_path(path)?;
        let mut record = csv::ByteRecord::new();
        let mut rows = 0;
        while reader.read_byte_record(&mut record)? {
            rows += 1;
        }
        Ok(rows)
    }

    /// What the rows are.
    pub fn kind(&self) -> RowKind {
        self.kind
    }

    fn number(
        &self,
        record: &csv::StringRecord,
        field: usize,
        name: &str,
    ) -> Result<f64, SourceError> {
        let Some(index) = self.fields[field] else {
            return Ok(0.0);
        };
        let text = record.get(index).unwrap_or("").trim();
        text.parse().map_err(|_| SourceError::Row {
            line: self.line,
            reason: format!("{name} {} is not a number", quote(text)),
        })
    }

    /// Up to `max` more rows (`None` at the end of the file).
    pub fn next_batch(&mut self, max: usize) -> Result<Option<Batch>, SourceError> {
        let mut ticks = Vec::new();
        let mut record = csv::StringRecord::new();
        while self.pending.len() + ticks.len() < max.max(1) {
            if !self.reader.read_record(&mut record)? {
                break;
            }
            self.line += 1;
            let raw = record.get(self.time).unwrap_or("");
            let time_us = parse_time_us(raw).ok_or_else(|| SourceError::Row {
                line: self.line,
                reason: format!("cannot read the time {}", quote(raw)),
            })?;
            match self.kind {
                RowKind::Candles => {
                    if self.interval.is_none()
                        && let Some(previous) = self.previous_time
                    {
                        self.interval =
                            Some(interval_by_length(time_us - previous).ok_or_else(|| {
                                SourceError::Interval(format!(
                                    "rows {} µs apart match no interval",
                                    time_us - previous
                                ))
                            })?);
                    }
                    self.previous_time = Some(time_us);
                    let candle = Candle {
                        symbol: self.symbol.clone(),
                        interval: 0,
                        open_time_us: time_us,
                        open: self.number(&record, 0, "open")?,
                        high: self.number(&record, 1, "high")?,
                        low: self.number(&record, 2, "low")?,
                        close: self.number(&record, 3, "close")?,
                        volume: self.number(&record, 4, "volume")?,
                        trade_count: 0,
                        closed: true,
                    };
                    self.pending.push(candle);
                }
                RowKind::Ticks => {
                    let side = self.fields[3]
                        .and_then(|i| record.get(i))
                        .map(|s| match s.trim().to_ascii_lowercase().as_str() {
                            "buy" | "b" => Side::Buy,
                            "sell" | "s" => Side::Sell,
                            _ => Side::Unspecified,
                        })
                        .unwrap_or(Side::Unspecified);
                    let trade_id = self.fields[2]
                        .and_then(|i| record.get(i))
                        .map_or_else(|| self.line.to_string(), |s| s.trim().to_owned());
                    ticks.push(Tick {
                        symbol: self.symbol.clone(),
                        time_us,
                        trade_id,
                        price: self.number(&record, 0, "price")?,
                        size: self.number(&record, 1, "size")?,
                        side: side as i32,
                    });
                }
            }
        }
        match self.kind {
            RowKind::Ticks => Ok((!ticks.is_empty()).then_some(Batch::Ticks(ticks))),
            RowKind::Candles if self.pending.is_empty() => Ok(None),
            RowKind::Candles => {
                let interval = self.interval.ok_or_else(|| {
                    SourceError::Interval("a single candle; give the interval".into())
                })?;
                let mut candles = std::mem::take(&mut self.pending);
                for c in &mut candles {
                    c.interval = interval as i32;
                }
                Ok(Some(Batch::Candles(candles)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_parse_as_utc_microseconds() {
        // 2004-08-19 is 12649 days after the epoch.
        assert_eq!(parse_time_us("2004-08-19"), Some(12_649 * 86_400_000_000));
        assert_eq!(
            parse_time_us("2017-04-19 09:00:00"),
            Some(parse_time_us("2017-04-19").unwrap() + 9 * 3_600_000_000)
        );
        assert_eq!(parse_time_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_time_us("1700000000"), Some(1_700_000_000_000_000));
        assert_eq!(parse_time_us("1700000000000"), Some(1_700_000_000_000_000));
        assert_eq!(
            parse_time_us("1700000000000000"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_time_us("2004-13-01"), None);
        assert_eq!(parse_time_us("99999-01-01"), None);
        assert_eq!(parse_time_us("yesterday"), None);
    }

    #[test]
    fn intervals_are_inferred_from_row_spacing() {
        assert_eq!(
            interval_by_length(3_600_000_000),
            Some(Interval::Interval1h)
        );
        assert_eq!(interval_by_length(7), None);
    }

    #[test]
    fn a_candle_file_is_read_in_batches_with_the_inferred_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        std::fs::write(&path, ",Open,High,Low,Close,Volume\n2020-01-01,1,2,0.5,1.5,10\n2020-01-02,1,2,0.5,1.5,10\n2020-01-03,1,2,0.5,1.5,10\n").unwrap();
        let mut source = CsvSource::open(&path, "X", None, None).unwrap();
        assert_eq!(source.kind(), RowKind::Candles);
        let Some(Batch::Candles(first)) = source.next_batch(2).unwrap() else {
            panic!("candles expected");
        };
        assert_eq!(first.len(), 2);
        assert!(
            first
                .iter()
                .all(|c| c.interval == Interval::Interval1d as i32)
        );
        assert_eq!(source.next_batch(2).unwrap().map(|b| b.len()), Some(1));
        assert_eq!(source.next_batch(2).unwrap(), None);
    }
}
