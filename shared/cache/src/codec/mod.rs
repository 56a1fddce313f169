//! Encodings of cached values, chosen by `serialization_method`: protobuf (prost, the default),
//! MessagePack (rmp-serde over serde mirrors of the proto types) and a compact fixed-layout
//! binary of our own.
//!
//! Covered value types: a list of candles (`Vec<Candle>`), a latest-price record
//! ([`LatestPriceRecord`]) and a [`Signal`].

mod binary;
mod msgpack;

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tickmesh_proto::v1::{Candle, SerializationMethod, Signal};

pub use crate::error::CodecError;
pub use binary::Reader;

/// The latest trade of a symbol: what the `latest_prices` namespace holds.
///
/// Its protobuf form is wire-compatible with `tickmesh.v1.LatestPrice` plus field 4.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LatestPriceRecord {
    /// Instrument symbol.
    #[prost(string, tag = "1")]
    pub symbol: String,
    /// Last traded price.
    #[prost(double, tag = "2")]
    pub price: f64,
    /// Trade time, microseconds since the epoch, UTC.
    #[prost(int64, tag = "3")]
    pub time_us: i64,
    /// Trade size.
    #[prost(double, tag = "4")]
    pub size: f64,
}

/// A list of candles as one protobuf message (wire-compatible with `GetCandlesResponse`).
#[derive(Clone, PartialEq, prost::Message)]
struct CandleList {
    #[prost(message, repeated, tag = "1")]
    candles: Vec<Candle>,
}

/// A value type the codecs know.
pub trait CacheValue: Sized + Send + Sync + 'static {
    /// Protobuf bytes.
    fn to_protobuf(&self) -> Vec<u8>;
    /// From protobuf bytes.
    fn from_protobuf(bytes: &[u8]) -> Result<Self, CodecError>;
    /// MessagePack bytes.
    fn to_msgpack(&self) -> Result<Vec<u8>, CodecError>;
    /// From MessagePack bytes.
    fn from_msgpack(bytes: &[u8]) -> Result<Self, CodecError>;
    /// Appends the custom binary form.
    fn to_binary(&self, out: &mut Vec<u8>) -> Result<(), CodecError>;
    /// Reads the custom binary form.
    fn from_binary(reader: &mut Reader<'_>) -> Result<Self, CodecError>;
}

/// Encodes and decodes values of one type.
pub trait Codec<T>: Send + Sync {
    /// The bytes of a value.
    fn encode(&self, value: &T) -> Result<Bytes, CodecError>;
    /// A value from its bytes; truncated or foreign bytes are an error, never a panic.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
    /// Which `SerializationMethod` this is.
    fn method(&self) -> SerializationMethod;
}

/// Protobuf through prost.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProtobufCodec;

/// MessagePack through rmp-serde (structs as arrays, enums as their numbers).
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePackCodec;

/// tickmesh's fixed-layout binary: little-endian fixed-width numbers, strings with a 2-byte
/// length, and in candle lists each distinct symbol written once.
#[derive(Debug, Clone, Copy, Default)]
pub struct BinaryCodec;

impl<T: CacheValue> Codec<T> for ProtobufCodec {
    fn encode(&self, value: &T) -> Result<Bytes, CodecError> {
        Ok(value.to_protobuf().into())
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        T::from_protobuf(bytes)
    }

    fn method(&self) -> SerializationMethod {
        SerializationMethod::ProtocolBuffers
    }
}

impl<T: CacheValue> Codec<T> for MessagePackCodec {
    fn encode(&self, value: &T) -> Result<Bytes, CodecError> {
        Ok(value.to_msgpack()?.into())
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        T::from_msgpack(bytes)
    }

    fn method(&self) -> SerializationMethod {
        SerializationMethod::Messagepack
    }
}

impl<T: CacheValue> Codec<T> for BinaryCodec {
    fn encode(&self, value: &T) -> Result<Bytes, CodecError> {
        let mut out = Vec::new();
        value.to_binary(&mut out)?;
        Ok(out.into())
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let mut reader = Reader::new(bytes);
        let value = T::from_binary(&mut reader)?;
        reader.finish()?;
        Ok(value)
    }

    fn method(&self) -> SerializationMethod {
        SerializationMethod::CustomBinary
    }
}

/// The codec `serialization_method` names (unset: protobuf).
pub fn codec_for<T: CacheValue>(method: SerializationMethod) -> Arc<dyn Codec<T>> {
    match method {
        SerializationMethod::Messagepack => Arc::new(MessagePackCodec),
        SerializationMethod::CustomBinary => Arc::new(BinaryCodec),
        SerializationMethod::ProtocolBuffers | SerializationMethod::Unspecified => {
            Arc::new(ProtobufCodec)
        }
    }
}

impl CacheValue for Vec<Candle> {
    fn to_protobuf(&self) -> Vec<u8> {
        // Field 1, length-delimited, per candle: the bytes of `CandleList` without copying the
        // candles into one.
        const KEY: u8 = (1 << 3) | 2;
        let len = self
            .iter()
            .map(|c| {
                let n = c.encoded_len();
                1 + prost::length_delimiter_len(n) + n
            })
            .sum();
        let mut out = Vec::with_capacity(len);
        for candle in self {
            out.push(KEY);
            // Writing into a Vec cannot run out of room.
            let _ = candle.encode_length_delimited(&mut out);
        }
        out
    }

    fn from_protobuf(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(CandleList::decode(bytes)?.candles)
    }

    fn to_msgpack(&self) -> Result<Vec<u8>, CodecError> {
        msgpack::encode_candles(self)
    }

    fn from_msgpack(bytes: &[u8]) -> Result<Self, CodecError> {
        msgpack::decode_candles(bytes)
    }

    fn to_binary(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        binary::write_candles(self, out)
    }

    fn from_binary(reader: &mut Reader<'_>) -> Result<Self, CodecError> {
        binary::read_candles(reader)
    }
}

impl CacheValue for LatestPriceRecord {
    fn to_protobuf(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    fn from_protobuf(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(Self::decode(bytes)?)
    }

    fn to_msgpack(&self) -> Result<Vec<u8>, CodecError> {
        msgpack::encode_price(self)
    }

    fn from_msgpack(bytes: &[u8]) -> Result<Self, CodecError> {
        msgpack::decode_price(bytes)
    }

    fn to_binary(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        binary::write_price(self, out)
    }

    fn from_binary(reader: &mut Reader<'_>) -> Result<Self, CodecError> {
        binary::read_price(reader)
    }
}

impl CacheValue for Signal {
    fn to_protobuf(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    fn from_protobuf(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(Self::decode(bytes)?)
    }

    fn to_msgpack(&self) -> Result<Vec<u8>, CodecError> {
        msgpack::encode_signal(self)
    }

    fn from_msgpack(bytes: &[u8]) -> Result<Self, CodecError> {
        msgpack::decode_signal(bytes)
    }

    fn to_binary(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        binary::write_signal(self, out)
    }

    fn from_binary(reader: &mut Reader<'_>) -> Result<Self, CodecError> {
        binary::read_signal(reader)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;
    use tickmesh_proto::v1::{GetCandlesResponse, LatestPrice, StrategyVote};

    use super::*;

    fn finite() -> impl Strategy<Value = f64> {
        any::<f64>().prop_filter("finite", |x| x.is_finite())
    }

    prop_compose! {
        fn candle()(
            symbol in prop::sample::select(vec!["AAPL", "BTC-USD", "NYSE:IBM", ""]),
            interval in any::<i32>(),
            open_time_us in any::<i64>(),
            ohlcv in prop::array::uniform5(finite()),
            trade_count in any::<u64>(),
            closed in any::<bool>(),
        ) -> Candle {
            Candle {
                symbol: symbol.to_owned(),
                interval,
                open_time_us,
                open: ohlcv[0],
                high: ohlcv[1],
                low: ohlcv[2],
                close: ohlcv[3],
                volume: ohlcv[4],
                trade_count,
                closed,
            }
        }
    }

    prop_compose! {
        fn price()(symbol in "[ -~]{0,40}", price in finite(), time_us in any::<i64>(), size in finite())
            -> LatestPriceRecord {
            LatestPriceRecord { symbol, price, time_us, size }
        }
    }

    prop_compose! {
        fn signal()(
            symbol in "[A-Z:./-]{0,12}",
            interval in any::<i32>(),
            time_us in any::<i64>(),
            strategy in any::<i32>(),
            action in any::<i32>(),
            confidence in finite(),
            price in finite(),
            indicators in prop::collection::hash_map("[a-z_0-9]{1,12}", finite(), 0..8),
            votes in prop::collection::vec((any::<i32>(), any::<i32>(), finite()), 0..5),
        ) -> Signal {
            Signal {
                symbol,
                interval,
                time_us,
                strategy,
                action,
                confidence,
                price,
                indicators,
                votes: votes
                    .into_iter()
                    .map(|(strategy, action, strength)| StrategyVote { strategy, action, strength })
                    .collect(),
            }
        }
    }

    fn codecs<T: CacheValue>() -> [Arc<dyn Codec<T>>; 3] {
        [
            codec_for(SerializationMethod::ProtocolBuffers),
            codec_for(SerializationMethod::Messagepack),
            codec_for(SerializationMethod::CustomBinary),
        ]
    }

    proptest! {
        #[test]
        fn candle_lists_roundtrip(candles in prop::collection::vec(candle(), 0..40)) {
            for codec in codecs::<Vec<Candle>>() {
                let bytes = codec.encode(&candles).unwrap();
                prop_assert_eq!(&codec.decode(&bytes).unwrap(), &candles, "{:?}", codec.method());
            }
        }

        #[test]
        fn prices_roundtrip(record in price()) {
            for codec in codecs::<LatestPriceRecord>() {
                let bytes = codec.encode(&record).unwrap();
                prop_assert_eq!(&codec.decode(&bytes).unwrap(), &record, "{:?}", codec.method());
            }
        }

        #[test]
        fn signals_roundtrip(signal in signal()) {
            for codec in codecs::<Signal>() {
                let bytes = codec.encode(&signal).unwrap();
                prop_assert_eq!(&codec.decode(&bytes).unwrap(), &signal, "{:?}", codec.method());
            }
        }

        #[test]
        fn truncated_bytes_are_errors_not_panics(candles in prop::collection::vec(candle(), 1..5), cut in 0usize..1000) {
            for codec in codecs::<Vec<Candle>>() {
                let bytes = codec.encode(&candles).unwrap();
                let cut = cut % bytes.len();
                // Protobuf may decode a prefix that ends on a field boundary; the point is no panic.
                let _ = codec.decode(&bytes[..cut]);
            }
            let bytes = BinaryCodec.encode(&candles).unwrap();
            let cut = cut % bytes.len();
            prop_assert!(Codec::<Vec<Candle>>::decode(&BinaryCodec, &bytes[..cut]).is_err());
        }
    }

    #[test]
    fn protobuf_forms_are_wire_compatible_with_the_query_messages() {
        let candles = vec![Candle {
            symbol: "AAPL".into(),
            close: 1.5,
            ..Default::default()
        }];
        let bytes = ProtobufCodec.encode(&candles).unwrap();
        assert_eq!(
            GetCandlesResponse::decode(&bytes[..]).unwrap().candles,
            candles
        );

        let record = LatestPriceRecord {
            symbol: "AAPL".into(),
            price: 190.5,
            time_us: 7,
            size: 3.0,
        };
        let bytes = ProtobufCodec.encode(&record).unwrap();
        let latest = LatestPrice::decode(&bytes[..]).unwrap();
        assert_eq!(
            (latest.symbol.as_str(), latest.price, latest.time_us),
            ("AAPL", 190.5, 7)
        );
    }

    #[test]
    fn a_binary_value_of_another_type_is_refused() {
        let record = LatestPriceRecord::default();
        let bytes = BinaryCodec.encode(&record).unwrap();
        assert!(matches!(
            Codec::<Signal>::decode(&BinaryCodec, &bytes),
            Err(CodecError::WrongTag { .. })
        ));
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(
            Codec::<LatestPriceRecord>::decode(&BinaryCodec, &longer),
            Err(CodecError::Trailing(1))
        ));
    }

    #[test]
    fn the_binary_candle_list_writes_each_symbol_once() {
        let candles: Vec<Candle> = (0..100)
            .map(|i| Candle {
                symbol: "BTC-USD".into(),
                open_time_us: i * 60_000_000,
                ..Default::default()
            })
            .collect();
        let binary = BinaryCodec.encode(&candles).unwrap();
        // Tag, count, symbol table (count, length, bytes), then fixed-size rows.
        assert_eq!(binary.len(), 1 + 4 + 2 + 2 + 7 + 100 * binary::CANDLE_BYTES);
    }
}
