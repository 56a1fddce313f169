//! The protobuf codec of every tickmesh service: prost's, except that a request that does not
//! decode (truncated or random bytes) is INVALID_ARGUMENT saying so, not INTERNAL, which would
//! blame the server.

use std::any::type_name;

use tonic::codec::{BufferSettings, Codec as TonicCodec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Prost's codec with decode errors mapped to INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> TonicCodec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(self.0.decoder())
    }
}

/// A decoder whose failures say which message did not decode.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                let name = type_name::<U>().rsplit("::").next().unwrap_or("message");
                Status::invalid_argument(format!(
                    "the bytes received are not a valid tickmesh.v1.{name}: {}",
                    status.message()
                ))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// A message already encoded: the bytes of a `T`, sent as they are. A reply put together from
/// bytes kept ready (a page of held candles, a cached indicator series) skips prost's
/// field-by-field encoding; on the wire it is the `T` it stands for.
pub struct Encoded<T> {
    bytes: bytes::Bytes,
    message: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("message", &type_name::<T>())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl<T: prost::Message + Default> Encoded<T> {
    /// `message`, encoded.
    pub fn new(message: &T) -> Self {
        Self::from_bytes(message.encode_to_vec())
    }

    /// Bytes that are the encoding of a `T` (the caller builds them field by field, the way
    /// prost would: each field's tag, then its value).
    pub fn from_bytes(bytes: impl Into<bytes::Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            message: std::marker::PhantomData,
        }
    }

    /// The message these bytes encode.
    pub fn decode(&self) -> Result<T, prost::DecodeError> {
        T::decode(self.bytes.as_ref())
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded bytes, shared (a cheap clone, e.g. to keep them for a repeat).
    pub fn bytes(&self) -> bytes::Bytes {
        self.bytes.clone()
    }
}

/// The codec of a method answered with [`Encoded`] messages; requests decode like [`Codec`]'s.
#[derive(Debug)]
pub struct EncodedCodec<T, U>(std::marker::PhantomData<fn() -> (T, U)>);

impl<T, U> Default for EncodedCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> TonicCodec for EncodedCodec<T, U>
where
    T: Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = Encoded<T>;
    type Decode = U;
    type Encoder = EncodedEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstCodec::<U, U>::default().decoder())
    }
}

/// Writes an [`Encoded`] message's bytes into the frame in one copy.
#[derive(Debug)]
pub struct EncodedEncoder<T>(std::marker::PhantomData<fn() -> T>);

impl<T> tonic::codec::Encoder for EncodedEncoder<T> {
    type Item = Encoded<T>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Encoded<T>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use bytes::BufMut as _;
        buf.reserve(item.bytes.len());
        buf.put_slice(&item.bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prost::Message as _;

    #[test]
    fn an_encoded_message_decodes_to_itself() {
        let candle = crate::v1::Candle {
            symbol: "GOOG".into(),
            open_time_us: 1_700_000_000_000_000,
            close: 101.5,
            closed: true,
            ..Default::default()
        };
        let encoded = Encoded::new(&candle);
        assert_eq!(encoded.as_bytes(), candle.encode_to_vec().as_slice());
        assert_eq!(encoded.decode().unwrap(), candle);
    }
}
