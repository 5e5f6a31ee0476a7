//! The gRPC codec of the generated service: prost messages, with the statuses the OaaS
//! servers give for bad input. A message that is not a valid protobuf message of the
//! method's type is `INVALID_ARGUMENT` (tonic's own prost codec says `INTERNAL`, which
//! clients would take for a server defect); messages over the size limit are handled by
//! tonic and [`crate::server`] (`RESOURCE_EXHAUSTED`).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// A prost [`Codec`] whose decode errors are `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct OprcCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for OprcCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for OprcCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = OprcEncoder<T>;
    type Decoder = OprcDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        OprcEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        OprcDecoder(PhantomData)
    }
}

/// Encodes prost messages.
#[derive(Debug, Clone, Default)]
pub struct OprcEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for OprcEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding the response failed: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Decodes prost messages; malformed bytes are `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Default)]
pub struct OprcDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for OprcDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "malformed {}: {e}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message")
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
