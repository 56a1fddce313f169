//! How the caching service stores a typed [`CacheValue`]: two header bytes, the value's kind
//! (its `oneof` field number) and the `SerializationMethod` it was encoded with, then the
//! value's bytes in that encoding.
//!
//! Why a header rather than the whole `CacheValue` as protobuf: the codecs of
//! `tickmesh-cache` encode a value of a type known in advance, so the kind has to be known
//! before decoding, and a protobuf wrapper would put protobuf framing around MessagePack or
//! binary payloads. Why the method too: a live change of `serialization_method`, or pods with
//! different settings sharing one Redis, must not make the entries already stored unreadable.

use bytes::Bytes;
use tickmesh_cache::codec::{CodecError, LatestPriceRecord, codec_for};
use tickmesh_proto::v1::cache_value::Kind;
use tickmesh_proto::v1::{
    CacheValue, CachedLatestPrice, IndicatorSeriesList, SerializationMethod, Signal,
};

use prost::Message;

const OPAQUE: u8 = 1;
const LATEST_PRICE: u8 = 2;
const INDICATORS: u8 = 3;
const SIGNAL: u8 = 4;

/// Why stored bytes are not a value this service wrote.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// Fewer bytes than the header.
    #[error("stored value has no header")]
    NoHeader,
    /// A kind byte no `CacheValue` kind has.
    #[error("stored value of unknown kind {0}")]
    Kind(u8),
    /// A method byte no `SerializationMethod` has.
    #[error("stored value of unknown serialization method {0}")]
    Method(u8),
    /// The value's bytes do not decode.
    #[error("stored value undecodable: {0}")]
    Codec(#[from] CodecError),
    /// The indicator series' bytes do not decode.
    #[error("stored indicator series undecodable: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// The stored form of `kind`: typed values in `method`'s encoding (indicator series, which the
/// library's codecs do not cover, as protobuf), opaque bytes as they are.
pub fn encode(kind: &Kind, method: SerializationMethod) -> Result<Bytes, CodecError> {
    let (tag, method, body): (u8, SerializationMethod, Bytes) = match kind {
        Kind::Opaque(bytes) => (
            OPAQUE,
            SerializationMethod::Unspecified,
            Bytes::copy_from_slice(bytes),
        ),
        Kind::LatestPrice(price) => (
            LATEST_PRICE,
            method,
            codec_for::<LatestPriceRecord>(method).encode(&LatestPriceRecord {
                symbol: price.symbol.clone(),
                price: price.price,
                time_us: price.time_us,
                size: price.size,
            })?,
        ),
        Kind::Indicators(list) => (
            INDICATORS,
            SerializationMethod::ProtocolBuffers,
            list.encode_to_vec().into(),
        ),
        Kind::Signal(signal) => (SIGNAL, method, codec_for::<Signal>(method).encode(signal)?),
    };
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&[tag, method as u8]);
    out.extend_from_slice(&body);
    Ok(out.into())
}

/// The value `stored` holds (bytes written by [`encode`]).
pub fn decode(stored: &[u8]) -> Result<CacheValue, ValueError> {
    let [tag, method, body @ ..] = stored else {
        return Err(ValueError::NoHeader);
    };
    let method = SerializationMethod::try_from(i32::from(*method))
        .map_err(|_| ValueError::Method(*method))?;
    let kind = match *tag {
        OPAQUE => Kind::Opaque(body.to_vec()),
        LATEST_PRICE => {
            let record = codec_for::<LatestPriceRecord>(method).decode(body)?;
            Kind::LatestPrice(CachedLatestPrice {
                symbol: record.symbol,
                price: record.price,
                time_us: record.time_us,
                size: record.size,
            })
        }
        INDICATORS => Kind::Indicators(IndicatorSeriesList::decode(body)?),
        SIGNAL => Kind::Signal(codec_for::<Signal>(method).decode(body)?),
        other => return Err(ValueError::Kind(other)),
    };
    Ok(CacheValue { kind: Some(kind) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tickmesh_proto::v1::{IndicatorSeries, Interval, SignalAction};

    use super::*;

    const METHODS: [SerializationMethod; 4] = [
        SerializationMethod::Unspecified,
        SerializationMethod::ProtocolBuffers,
        SerializationMethod::Messagepack,
        SerializationMethod::CustomBinary,
    ];

    fn kinds() -> Vec<Kind> {
        vec![
            Kind::Opaque(b"series".to_vec()),
            Kind::Opaque(Vec::new()),
            Kind::LatestPrice(CachedLatestPrice {
                symbol: "BTC-USD".into(),
                price: 61_234.5,
                time_us: 1_709_251_200_000_000,
                size: 0.1,
            }),
            Kind::Indicators(IndicatorSeriesList {
                series: vec![IndicatorSeries {
                    symbol: "GOOG".into(),
                    interval: Interval::Interval1d as i32,
                    time_us: vec![1, 2],
                    ..Default::default()
                }],
            }),
            Kind::Signal(Signal {
                symbol: "GOOG".into(),
                interval: Interval::Interval1d as i32,
                time_us: 1_709_251_200_000_000,
                action: SignalAction::Buy as i32,
                confidence: 0.75,
                price: 140.5,
                ..Default::default()
            }),
        ]
    }

    #[test]
    fn every_kind_reads_back_in_every_serialization_method() {
        for method in METHODS {
            for kind in kinds() {
                let stored = encode(&kind, method).unwrap();
                assert_eq!(decode(&stored).unwrap().kind, Some(kind), "{method:?}");
            }
        }
    }

    #[test]
    fn a_value_reads_back_after_the_serialization_method_changed() {
        let signal = kinds().pop().unwrap();
        let stored = encode(&signal, SerializationMethod::CustomBinary).unwrap();
        // Nothing about the current setting is needed to read it.
        assert_eq!(decode(&stored).unwrap().kind, Some(signal));
    }

    #[test]
    fn foreign_bytes_are_an_error_not_a_panic() {
        assert!(matches!(decode(b""), Err(ValueError::NoHeader)));
        assert!(matches!(decode(b"\x01"), Err(ValueError::NoHeader)));
        assert!(matches!(decode(b"\x09\x01"), Err(ValueError::Kind(9))));
        assert!(matches!(decode(b"\x04\x09"), Err(ValueError::Method(9))));
        assert!(decode(b"\x04\x03\xff").is_err());
    }
}
