//! Candles of any bar size, aggregated at query time from a stored interval (`GetCandles` with
//! `bar`): fixed sizes aligned to the Unix epoch, and days, weeks (from Monday) and months in
//! UTC, in a time zone or as an exchange's sessions.
//!
//! A period is found from each stored bar's open time alone, so the aggregation is one pass
//! over the stored rows in time order: open of the first, high max, low min, close of the last,
//! volume and trade count summed. Stored daily bars stand for their UTC date (a feed's daily
//! bar is labelled with its trading day at midnight UTC), whatever the zone.

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use tickmesh_proto::v1::{Candle, Interval, MarketSession};

use crate::{CandleQuery, CandleRow, Store, StoreError};

const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;
/// Longest bar: a year of days.
const MAX_DAYS: i64 = 366;

/// The stored intervals, coarsest first, with their lengths.
const STORED: [(Interval, i64); 7] = [
    (Interval::Interval1d, DAY),
    (Interval::Interval4h, 4 * 3_600 * SECOND),
    (Interval::Interval1h, 3_600 * SECOND),
    (Interval::Interval15m, 900 * SECOND),
    (Interval::Interval5m, 300 * SECOND),
    (Interval::Interval1m, 60 * SECOND),
    (Interval::Interval1s, SECOND),
];

/// The stored intervals, coarsest first.
pub fn stored() -> impl Iterator<Item = Interval> {
    STORED.iter().map(|(interval, _)| *interval)
}

/// A bar size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// A fixed length, aligned to the epoch.
    Micros(i64),
    /// A count of calendar days.
    Days(i64),
    /// A calendar week from Monday.
    Week,
    /// A calendar month.
    Month,
}

/// `"4h"`, `"2d"`, `"1w"`, `"1mo"`, ... or why not.
pub fn parse_bar(text: &str) -> Result<Size, String> {
    let usage =
        || format!("a count and a unit (s, m, h, d, w, mo), like 4h, 2d, 1w or 1mo; got {text:?}");
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (count, unit) = text.split_at(digits);
    let n: i64 = count.parse().map_err(|_| usage())?;
    if n == 0 {
        return Err(format!("the count must be at least 1; got {text:?}"));
    }
    let fixed = |unit_us: i64| {
        n.checked_mul(unit_us)
            .filter(|&us| us <= MAX_DAYS * DAY)
            .map(Size::Micros)
            .ok_or_else(|| format!("at most {MAX_DAYS} days; got {text:?}"))
    };
    match unit {
        "s" => fixed(SECOND),
        "m" => fixed(60 * SECOND),
        "h" => fixed(3_600 * SECOND),
        "d" if n <= MAX_DAYS => Ok(Size::Days(n)),
        "d" => Err(format!("at most {MAX_DAYS} days; got {text:?}")),
        "w" if n == 1 => Ok(Size::Week),
        "mo" if n == 1 => Ok(Size::Month),
        "w" | "mo" => Err(format!(
            "weeks and months come one at a time (1w, 1mo); got {text:?}"
        )),
        _ => Err(usage()),
    }
}

/// What the periods are aligned to.
#[derive(Debug, Clone)]
pub enum Align {
    /// UTC days.
    Utc,
    /// Local days of a zone.
    Zone(TimeZone),
    /// An exchange's regular sessions: weekdays from `open` (inclusive) to `close` (exclusive).
    Session {
        /// The exchange's zone.
        tz: TimeZone,
        /// Local open.
        open: Time,
        /// Local close.
        close: Time,
    },
}

/// A `time_zone` request field, or why not.
pub fn zone(name: &str) -> Result<Align, String> {
    TimeZone::get(name)
        .map(Align::Zone)
        .map_err(|e| format!("an IANA time zone such as America/New_York ({e})"))
}

/// The session named `name` among `sessions`, or why not.
pub fn session(name: &str, sessions: &[MarketSession]) -> Result<Align, String> {
    let Some(s) = sessions.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = sessions.iter().map(|s| s.name.as_str()).collect();
        return Err(format!(
            "no session named {name:?} in adaptive_ttl.sessions (known: {})",
            known.join(", ")
        ));
    };
    let clock = |text: &str| {
        let (h, m) = text.split_once(':')?;
        Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
    };
    let tz = TimeZone::get(&s.time_zone).map_err(|e| format!("session {name}: {e}"))?;
    match (clock(&s.open_time), clock(&s.close_time)) {
        (Some(open), Some(close)) if open < close => Ok(Align::Session { tz, open, close }),
        _ => Err(format!("session {name} has no valid open and close times")),
    }
}

/// The plan of a request's `bar`, `time_zone` and `session` fields (sessions from
/// `adaptive_ttl.sessions`), or the field at fault and why.
pub fn request_plan(
    bar: &str,
    time_zone: &str,
    session_name: &str,
    sessions: &[MarketSession],
) -> Result<Plan, (&'static str, String)> {
    let size = parse_bar(bar).map_err(|e| ("bar", e))?;
    let align = match (time_zone, session_name) {
        ("", "") => Align::Utc,
        (tz, "") => zone(tz).map_err(|e| ("time_zone", e))?,
        ("", name) => session(name, sessions).map_err(|e| ("session", e))?,
        _ => return Err(("session", "either time_zone or session, not both".into())),
    };
    Plan::new(size, align).map_err(|e| ("bar", e))
}

/// Why `bar` cannot be made for `symbol`, which has rows of the `stored` intervals only.
pub fn unmakeable(bar: &str, symbol: &str, stored: &[Interval]) -> String {
    let names: Vec<&str> = stored.iter().map(|i| i.as_str_name()).collect();
    format!(
        "{bar} cannot be made from what is stored for {symbol} ({}): bars of a stored interval \
         must each fall inside one period",
        names.join(", ")
    )
}

/// How one request's bars are made.
#[derive(Debug, Clone)]
pub struct Plan {
    size: Size,
    align: Align,
}

/// Micros from local midnight to `t`.
fn since_midnight(t: Time) -> i64 {
    i64::from(t.hour()) * 3_600 * SECOND + i64::from(t.minute()) * 60 * SECOND
}

impl Plan {
    /// A plan, or why `align` does not go with `size` (a fixed size is aligned to the epoch).
    pub fn new(size: Size, align: Align) -> Result<Self, String> {
        if matches!(size, Size::Micros(_)) && !matches!(align, Align::Utc) {
            return Err(
                "time_zone and session apply to bars of days, weeks and months (2d, 1w, 1mo)"
                    .into(),
            );
        }
        Ok(Self { size, align })
    }

    /// The stored intervals that can make these bars, coarsest first: those whose bars each
    /// fall inside one period (intraday ones of at most an hour in a zone, dividing the open
    /// and close times of a session).
    pub fn sources(&self) -> Vec<Interval> {
        STORED
            .iter()
            .filter(|(interval, len)| match (&self.size, &self.align) {
                (Size::Micros(bar), _) => bar % len == 0,
                (_, Align::Utc) => true,
                (_, _) if *interval == Interval::Interval1d => true,
                (_, Align::Zone(_)) => *len <= 3_600 * SECOND,
                (_, Align::Session { open, close, .. }) => {
                    *len <= 3_600 * SECOND
                        && since_midnight(*open) % len == 0
                        && since_midnight(*close) % len == 0
                }
            })
            .map(|(interval, _)| *interval)
            .collect()
    }

    /// The period of a stored bar of `source` opening at `t`: its label (open time) and end,
    /// or `None` outside every session.
    pub fn period(&self, source: Interval, t: i64) -> Option<(i64, i64)> {
        let days = |n: i64, label: Date| -> Option<Date> {
            label.checked_add(jiff::Span::new().days(n)).ok()
        };
        if let Size::Micros(len) = self.size {
            let start = t.div_euclid(len) * len;
            return Some((start, start + len));
        }
        let instant = Timestamp::from_microsecond(t).ok()?;
        let (tz, open) = match &self.align {
            Align::Utc => (TimeZone::UTC, Time::midnight()),
            Align::Zone(tz) => (tz.clone(), Time::midnight()),
            Align::Session { tz, open, .. } => (tz.clone(), *open),
        };
        let date = if source == Interval::Interval1d {
            instant.to_zoned(TimeZone::UTC).date()
        } else {
            let local = instant.to_zoned(tz.clone());
            if let Align::Session { open, close, .. } = &self.align {
                let weekend = matches!(local.weekday(), Weekday::Saturday | Weekday::Sunday);
                if weekend || local.time() < *open || local.time() >= *close {
                    return None;
                }
            }
            local.date()
        };
        let (first, next) = match self.size {
            Size::Micros(_) => unreachable!("handled above"),
            Size::Days(n) => {
                let epoch = Date::constant(1970, 1, 1);
                let since = i64::from(epoch.until(date).ok()?.get_days());
                let first = days(since.div_euclid(n) * n, epoch)?;
                (first, days(n, first)?)
            }
            Size::Week => {
                let first = days(-i64::from(date.weekday().to_monday_zero_offset()), date)?;
                (first, days(7, first)?)
            }
            Size::Month => {
                let first = date.first_of_month();
                (first, first.checked_add(jiff::Span::new().months(1)).ok()?)
            }
        };
        let at = |d: Date, time: Time| -> Option<i64> {
            Some(tz.to_timestamp(d.to_datetime(time)).ok()?.as_microsecond())
        };
        Some((at(first, open)?, at(next, Time::midnight())?))
    }
}

/// One bar being aggregated.
#[derive(Debug, Clone)]
pub struct Building {
    bar: Candle,
    end: i64,
    all_closed: bool,
    /// Open time of its last stored bar (the page cursor once it is sent).
    pub last_us: i64,
}

impl Building {
    /// A bar labelled `label`, ending at `end`, started by `row`.
    pub fn start(label: i64, end: i64, row: &CandleRow) -> Self {
        Self {
            bar: Candle {
                symbol: row.symbol.clone(),
                interval: Interval::Unspecified as i32,
                open_time_us: label,
                open: row.open,
                high: row.high,
                low: row.low,
                close: row.close,
                volume: row.volume,
                trade_count: u64::try_from(row.trade_count).unwrap_or_default(),
                closed: false,
            },
            end,
            all_closed: row.closed,
            last_us: row.open_time_us,
        }
    }

    /// Whether this bar is labelled `label`.
    pub fn is(&self, label: i64) -> bool {
        self.bar.open_time_us == label
    }

    /// Adds the stored bar before the ones added so far (reading newest first).
    fn add_earlier(&mut self, row: &CandleRow) {
        let bar = &mut self.bar;
        bar.open = row.open;
        bar.high = bar.high.max(row.high);
        bar.low = bar.low.min(row.low);
        bar.volume += row.volume;
        bar.trade_count += u64::try_from(row.trade_count).unwrap_or_default();
        self.all_closed &= row.closed;
    }

    /// Adds the next stored bar of the same period.
    pub fn add(&mut self, row: &CandleRow) {
        let bar = &mut self.bar;
        bar.high = bar.high.max(row.high);
        bar.low = bar.low.min(row.low);
        bar.close = row.close;
        bar.volume += row.volume;
        bar.trade_count += u64::try_from(row.trade_count).unwrap_or_default();
        self.all_closed &= row.closed;
        self.last_us = row.open_time_us;
    }

    /// The finished bar: closed once its stored bars are and its period has ended by `now_us`.
    pub fn finish(self, now_us: i64) -> Candle {
        Candle {
            closed: self.all_closed && self.end <= now_us,
            ..self.bar
        }
    }
}

/// Stored bars read from the store at a time.
const READ: i64 = 5_000;
/// Stored bars read at most for one page (it ends at the bar in progress then).
pub const MAX_READ: usize = 200_000;

/// What to resample: one symbol's stored bars of `source` with open times in `[start, end)`.
#[derive(Debug, Clone)]
pub struct Range {
    /// Instrument symbol.
    pub symbol: String,
    /// Inclusive lower bound of the stored bars' open times.
    pub start_us: Option<i64>,
    /// Exclusive upper bound.
    pub end_us: Option<i64>,
}

impl Range {
    fn query(
        &self,
        source: Interval,
        after_us: Option<i64>,
        descending: bool,
        limit: i64,
    ) -> CandleQuery {
        CandleQuery {
            symbol: self.symbol.clone(),
            interval_code: source as i16,
            start_us: self.start_us,
            end_us: self.end_us,
            after_us,
            descending,
            limit,
        }
    }
}

/// Where the bars of `plan` come from: the coarsest of its sources with rows in the range.
/// `Err` lists the intervals that do have rows when none of the sources does; `Ok(None)` means
/// no rows at all.
pub async fn source(
    store: &Store,
    plan: &Plan,
    range: &Range,
) -> Result<Result<Option<Interval>, Vec<Interval>>, StoreError> {
    for interval in plan.sources() {
        if !store
            .candles(&range.query(interval, None, false, 1))
            .await?
            .is_empty()
        {
            return Ok(Ok(Some(interval)));
        }
    }
    let mut with_rows = Vec::new();
    for interval in stored() {
        if !store
            .candles(&range.query(interval, None, false, 1))
            .await?
            .is_empty()
        {
            with_rows.push(interval);
        }
    }
    Ok(if with_rows.is_empty() {
        Ok(None)
    } else {
        Err(with_rows)
    })
}

/// One ascending page of resampled bars.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The bars, oldest first.
    pub bars: Vec<Candle>,
    /// When more follow: the open time of the last stored bar in `bars` (the next page's
    /// `after_us`).
    pub cursor: Option<i64>,
}

/// At most `limit` bars of `plan` from the stored bars of `source` after `after_us`, oldest
/// first; fewer when [`MAX_READ`] stored bars were read.
pub async fn ascending(
    store: &Store,
    plan: &Plan,
    range: &Range,
    source: Interval,
    after_us: Option<i64>,
    limit: usize,
    now_us: i64,
) -> Result<Page, StoreError> {
    let mut page = Page::default();
    let mut building: Option<Building> = None;
    let (mut cursor, mut read) = (after_us, 0usize);
    'pages: loop {
        let rows = store
            .candles(&range.query(source, cursor, false, READ))
            .await?;
        for row in &rows {
            read += 1;
            let Some((label, end)) = plan.period(source, row.open_time_us) else {
                continue;
            };
            match building.as_mut() {
                Some(bar) if bar.is(label) => bar.add(row),
                _ => {
                    if let Some(done) = building.take() {
                        let last = done.last_us;
                        page.bars.push(done.finish(now_us));
                        if page.bars.len() >= limit || read >= MAX_READ {
                            page.cursor = Some(last);
                            break 'pages;
                        }
                    }
                    building = Some(Building::start(label, end, row));
                }
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == READ => cursor = Some(last.open_time_us),
            _ => break,
        }
    }
    if page.cursor.is_none()
        && let Some(done) = building.take()
    {
        page.bars.push(done.finish(now_us));
    }
    Ok(page)
}

/// The last `count` bars of `plan` from the stored bars of `source`, oldest first (the first
/// may be cut by the range's start).
pub async fn latest(
    store: &Store,
    plan: &Plan,
    range: &Range,
    source: Interval,
    count: usize,
    now_us: i64,
) -> Result<Vec<Candle>, StoreError> {
    let mut bars = Vec::new();
    let mut building: Option<Building> = None;
    let mut cursor = None;
    'pages: while bars.len() < count {
        let rows = store
            .candles(&range.query(source, cursor, true, READ))
            .await?;
        for row in &rows {
            let Some((label, end)) = plan.period(source, row.open_time_us) else {
                continue;
            };
            match building.as_mut() {
                Some(bar) if bar.is(label) => bar.add_earlier(row),
                _ => {
                    if let Some(done) = building.take() {
                        bars.push(done.finish(now_us));
                        if bars.len() >= count {
                            break 'pages;
                        }
                    }
                    building = Some(Building::start(label, end, row));
                }
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == READ => cursor = Some(last.open_time_us),
            _ => {
                if let Some(done) = building.take() {
                    bars.push(done.finish(now_us));
                }
                break;
            }
        }
    }
    bars.reverse();
    Ok(bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_microsecond()
    }

    #[test]
    fn bar_sizes_parse_and_bad_ones_say_why() {
        assert_eq!(parse_bar("4h"), Ok(Size::Micros(4 * 3_600 * SECOND)));
        assert_eq!(parse_bar("90s"), Ok(Size::Micros(90 * SECOND)));
        assert_eq!(parse_bar("2d"), Ok(Size::Days(2)));
        assert_eq!(parse_bar("1w"), Ok(Size::Week));
        assert_eq!(parse_bar("1mo"), Ok(Size::Month));
        for bad in [
            "",
            "h",
            "0h",
            "4x",
            "2w",
            "3mo",
            "400d",
            "99999999999999h",
            "-1h",
        ] {
            assert!(parse_bar(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_divide_the_bar_and_fit_the_session() {
        let plan = Plan::new(parse_bar("10m").unwrap(), Align::Utc).unwrap();
        assert_eq!(
            plan.sources(),
            [
                Interval::Interval5m,
                Interval::Interval1m,
                Interval::Interval1s
            ]
        );
        let sessions = xnys();
        let plan = Plan::new(Size::Days(1), session("XNYS", &sessions).unwrap()).unwrap();
        // 09:30 is not on an hour: hourly bars would straddle the open.
        assert_eq!(
            plan.sources()[..2],
            [Interval::Interval1d, Interval::Interval15m]
        );
        assert!(session("XLON", &sessions).unwrap_err().contains("XNYS"));
        assert!(Plan::new(Size::Micros(DAY), zone("Europe/Paris").unwrap()).is_err());
    }

    /// The New York Stock Exchange's regular session.
    fn xnys() -> [MarketSession; 1] {
        [MarketSession {
            name: "XNYS".into(),
            time_zone: "America/New_York".into(),
            open_time: "09:30".into(),
            close_time: "16:00".into(),
            symbols: vec![],
        }]
    }

    #[test]
    fn local_days_follow_daylight_saving() {
        let plan = Plan::new(Size::Days(1), zone("America/New_York").unwrap()).unwrap();
        // 2017-11-05 in New York: 25 hours, from 04:00 UTC to 05:00 UTC the next day.
        let (label, end) = plan
            .period(Interval::Interval1h, us("2017-11-05T12:00:00Z"))
            .unwrap();
        assert_eq!(
            (label, end),
            (us("2017-11-05T04:00:00Z"), us("2017-11-06T05:00:00Z"))
        );
        // 03:00 UTC on the 5th is still the 4th in New York.
        let (label, _) = plan
            .period(Interval::Interval1h, us("2017-11-05T03:00:00Z"))
            .unwrap();
        assert_eq!(label, us("2017-11-04T04:00:00Z"));
        // A stored daily bar counts for its UTC date.
        let (label, _) = plan
            .period(Interval::Interval1d, us("2017-11-06T00:00:00Z"))
            .unwrap();
        assert_eq!(label, us("2017-11-06T05:00:00Z"));
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let week = Plan::new(Size::Week, Align::Utc).unwrap();
        // Thursday 2018-02-01 is in the week of Monday 2018-01-29 (which spans a month end).
        assert_eq!(
            week.period(Interval::Interval1d, us("2018-02-01T00:00:00Z")),
            Some((us("2018-01-29T00:00:00Z"), us("2018-02-05T00:00:00Z")))
        );
        let month = Plan::new(Size::Month, Align::Utc).unwrap();
        assert_eq!(
            month.period(Interval::Interval1h, us("2018-02-28T23:00:00Z")),
            Some((us("2018-02-01T00:00:00Z"), us("2018-03-01T00:00:00Z")))
        );
    }

    #[test]
    fn session_days_leave_out_the_rest_of_the_day() {
        let sessions = xnys();
        let plan = Plan::new(Size::Days(1), session("XNYS", &sessions).unwrap()).unwrap();
        // Summer: 09:30 New York is 13:30 UTC.
        assert_eq!(
            plan.period(Interval::Interval15m, us("2017-07-03T13:30:00Z")),
            Some((us("2017-07-03T13:30:00Z"), us("2017-07-04T04:00:00Z")))
        );
        assert_eq!(
            plan.period(Interval::Interval15m, us("2017-07-03T13:15:00Z")),
            None
        );
        assert_eq!(
            plan.period(Interval::Interval15m, us("2017-07-03T20:00:00Z")),
            None
        );
        // Saturday.
        assert_eq!(
            plan.period(Interval::Interval15m, us("2017-07-08T15:00:00Z")),
            None
        );
    }
}
