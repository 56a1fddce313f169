//! The custom fixed-layout binary encoding.
//!
//! Every value starts with a tag byte naming its type and layout version. Numbers are
//! little-endian and fixed-width, strings carry a `u16` length. A candle list writes its
//! distinct symbols once in a table, then one fixed-size row per candle.

use std::collections::HashMap;

use tickmesh_proto::v1::{Candle, Signal, StrategyVote};

use super::LatestPriceRecord;
use crate::error::CodecError;

const TAG_CANDLES: u8 = 0xC1;
const TAG_PRICE: u8 = 0xC2;
const TAG_SIGNAL: u8 = 0xC3;

/// Bytes of one candle row: symbol index, interval, open time, OHLCV, trade count, closed.
pub(crate) const CANDLE_BYTES: usize = 2 + 4 + 8 + 5 * 8 + 8 + 1;

/// Reads the binary layout, failing on bytes that end early.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(CodecError::Truncated(self.bytes.len()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, CodecError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::Utf8)
    }

    fn tag(&mut self, expected: u8) -> Result<(), CodecError> {
        let found = self.u8()?;
        if found != expected {
            return Err(CodecError::WrongTag { expected, found });
        }
        Ok(())
    }

    /// Fails if bytes are left over.
    pub(crate) fn finish(&self) -> Result<(), CodecError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

fn put_str(out: &mut Vec<u8>, text: &str, what: &'static str) -> Result<(), CodecError> {
    let len = u16::try_from(text.len()).map_err(|_| CodecError::TooLong(what))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn put_count(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), CodecError> {
    let n = u16::try_from(n).map_err(|_| CodecError::TooLong(what))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

pub(crate) fn write_candles(candles: &[Candle], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let count = u32::try_from(candles.len()).map_err(|_| CodecError::TooLong("candle list"))?;
    // Symbol table: usually one symbol; the previous candle's index is tried first.
    let mut index: HashMap<&str, u16> = HashMap::new();
    let mut symbols: Vec<&str> = Vec::new();
    let mut rows: Vec<u16> = Vec::with_capacity(candles.len());
    let mut last: Option<(&str, u16)> = None;
    for candle in candles {
        let symbol = candle.symbol.as_str();
        let i = match last {
            Some((s, i)) if s == symbol => i,
            _ => match index.get(symbol) {
                Some(&i) => i,
                None => {
                    let i = u16::try_from(symbols.len())
                        .map_err(|_| CodecError::TooLong("symbol table"))?;
                    index.insert(symbol, i);
                    symbols.push(symbol);
                    i
                }
            },
        };
        last = Some((symbol, i));
        rows.push(i);
    }
    let table: usize = symbols.iter().map(|s| 2 + s.len()).sum();
    out.reserve(1 + 4 + 2 + table + candles.len() * CANDLE_BYTES);
    out.push(TAG_CANDLES);
    out.extend_from_slice(&count.to_le_bytes());
    put_count(out, symbols.len(), "symbol table")?;
    for symbol in &symbols {
        put_str(out, symbol, "symbol")?;
    }
    for (candle, i) in candles.iter().zip(rows) {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&candle.interval.to_le_bytes());
        out.extend_from_slice(&candle.open_time_us.to_le_bytes());
        for v in [
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            candle.volume,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&candle.trade_count.to_le_bytes());
        out.push(u8::from(candle.closed));
    }
    Ok(())
}

pub(crate) fn read_candles(r: &mut Reader<'_>) -> Result<Vec<Candle>, CodecError> {
    r.tag(TAG_CANDLES)?;
    let count = r.u32()? as usize;
    let n_symbols = usize::from(r.u16()?);
    let symbols = (0..n_symbols)
        .map(|_| r.string())
        .collect::<Result<Vec<_>, _>>()?;
    // The rows must all be there before anything is allocated for them.
    let rows = count
        .checked_mul(CANDLE_BYTES)
        .ok_or(CodecError::Truncated(r.bytes.len()))?;
    if r.bytes.len() - r.at < rows {
        return Err(CodecError::Truncated(r.bytes.len()));
    }
    let mut candles = Vec::with_capacity(count);
    for _ in 0..count {
        let i = usize::from(r.u16()?);
        let symbol = symbols.get(i).ok_or(CodecError::Truncated(r.at))?.clone();
        candles.push(Candle {
            symbol,
            interval: r.i32()?,
            open_time_us: r.i64()?,
            open: r.f64()?,
            high: r.f64()?,
            low: r.f64()?,
            close: r.f64()?,
            volume: r.f64()?,
            trade_count: r.u64()?,
            closed: r.u8()? != 0,
        });
    }
    Ok(candles)
}

pub(crate) fn write_price(p: &LatestPriceRecord, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.reserve(1 + 2 + p.symbol.len() + 24);
    out.push(TAG_PRICE);
    put_str(out, &p.symbol, "symbol")?;
    out.extend_from_slice(&p.price.to_le_bytes());
    out.extend_from_slice(&p.time_us.to_le_bytes());
    out.extend_from_slice(&p.size.to_le_bytes());
    Ok(())
}

pub(crate) fn read_price(r: &mut Reader<'_>) -> Result<LatestPriceRecord, CodecError> {
    r.tag(TAG_PRICE)?;
    Ok(LatestPriceRecord {
        symbol: r.string()?,
        price: r.f64()?,
        time_us: r.i64()?,
        size: r.f64()?,
    })
}

pub(crate) fn write_signal(s: &Signal, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.push(TAG_SIGNAL);
    put_str(out, &s.symbol, "symbol")?;
    out.extend_from_slice(&s.interval.to_le_bytes());
    out.extend_from_slice(&s.time_us.to_le_bytes());
    out.extend_from_slice(&s.strategy.to_le_bytes());
    out.extend_from_slice(&s.action.to_le_bytes());
    out.extend_from_slice(&s.confidence.to_le_bytes());
    out.extend_from_slice(&s.price.to_le_bytes());
    put_count(out, s.indicators.len(), "indicator map")?;
    for (name, value) in &s.indicators {
        put_str(out, name, "indicator name")?;
        out.extend_from_slice(&value.to_le_bytes());
    }
    put_count(out, s.votes.len(), "vote list")?;
    for vote in &s.votes {
        out.extend_from_slice(&vote.strategy.to_le_bytes());
        out.extend_from_slice(&vote.action.to_le_bytes());
        out.extend_from_slice(&vote.strength.to_le_bytes());
    }
    Ok(())
}

pub(crate) fn read_signal(r: &mut Reader<'_>) -> Result<Signal, CodecError> {
    r.tag(TAG_SIGNAL)?;
    let symbol = r.string()?;
    let interval = r.i32()?;
    let time_us = r.i64()?;
    let strategy = r.i32()?;
    let action = r.i32()?;
    let confidence = r.f64()?;
    let price = r.f64()?;
    let n = usize::from(r.u16()?);
    let mut indicators = HashMap::with_capacity(n.min(64));
    for _ in 0..n {
        let name = r.string()?;
        indicators.insert(name, r.f64()?);
    }
    let n = usize::from(r.u16()?);
    let mut votes = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        votes.push(StrategyVote {
            strategy: r.i32()?,
            action: r.i32()?,
            strength: r.f64()?,
        });
    }
    Ok(Signal {
        symbol,
        interval,
        time_us,
        strategy,
        action,
        confidence,
        price,
        indicators,
        votes,
    })
}
