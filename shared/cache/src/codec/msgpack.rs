//! MessagePack through serde mirrors of the proto types (prost types do not implement serde).

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tickmesh_proto::v1::{Candle, Signal, StrategyVote};

use super::LatestPriceRecord;
use crate::error::CodecError;

#[derive(Serialize, Deserialize)]
#[serde(remote = "Candle")]
struct CandleDef {
    symbol: String,
    interval: i32,
    open_time_us: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    trade_count: u64,
    closed: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "StrategyVote")]
struct VoteDef {
    strategy: i32,
    action: i32,
    strength: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Signal")]
struct SignalDef {
    symbol: String,
    interval: i32,
    time_us: i64,
    strategy: i32,
    action: i32,
    confidence: f64,
    price: f64,
    indicators: HashMap<String, f64>,
    #[serde(with = "votes")]
    votes: Vec<StrategyVote>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "LatestPriceRecord")]
struct PriceDef {
    symbol: String,
    price: f64,
    time_us: i64,
    size: f64,
}

/// Borrowed wrappers that serialize through the mirrors.
struct Ser<'a, T>(&'a T);

/// Owned wrappers that deserialize through the mirrors.
struct De<T>(T);

macro_rules! through {
    ($ty:ty, $def:ident) => {
        impl Serialize for Ser<'_, $ty> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $def::serialize(self.0, s)
            }
        }

        impl<'de> Deserialize<'de> for De<$ty> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $def::deserialize(d).map(De)
            }
        }
    };
}

through!(Candle, CandleDef);
through!(StrategyVote, VoteDef);
through!(Signal, SignalDef);
through!(LatestPriceRecord, PriceDef);

mod votes {
    use super::*;

    pub fn serialize<S: Serializer>(votes: &[StrategyVote], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(votes.iter().map(Ser))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StrategyVote>, D::Error> {
        Ok(Vec::<De<StrategyVote>>::deserialize(d)?
            .into_iter()
            .map(|De(v)| v)
            .collect())
    }
}

/// A sequence of borrowed candles.
struct CandlesSer<'a>(&'a [Candle]);

impl Serialize for CandlesSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Ser))
    }
}

pub(crate) fn encode_candles(candles: &[Candle]) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec(&CandlesSer(candles))?)
}

pub(crate) fn decode_candles(bytes: &[u8]) -> Result<Vec<Candle>, CodecError> {
    let candles: Vec<De<Candle>> = rmp_serde::from_slice(bytes)?;
    Ok(candles.into_iter().map(|De(c)| c).collect())
}

pub(crate) fn encode_price(price: &LatestPriceRecord) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec(&Ser(price))?)
}

pub(crate) fn decode_price(bytes: &[u8]) -> Result<LatestPriceRecord, CodecError> {
    let De(price) = rmp_serde::from_slice(bytes)?;
    Ok(price)
}

pub(crate) fn encode_signal(signal: &Signal) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec(&Ser(signal))?)
}

pub(crate) fn decode_signal(bytes: &[u8]) -> Result<Signal, CodecError> {
    let De(signal) = rmp_serde::from_slice(bytes)?;
    Ok(signal)
}
