//! The control plane's gRPC codec: prost's encoding with small starting buffers. Every connected
//! proxy holds one discovery stream for its lifetime, and tonic's default 8 KiB encode and decode
//! buffers per stream were a large share of the controller's memory per proxy at 2,000 proxies;
//! the messages of a settled stream (ACKs, small deltas) fit in far less, and a buffer still grows
//! to fit a large one (a proxy's first full config).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Where each stream's buffers start.
const BUFFER_BYTES: usize = 1024;
/// How much a stream encodes before it yields to flush (tonic's default is 32 KiB).
const YIELD_BYTES: usize = 8 * 1024;

/// Used by the generated clients and servers of `weft.proto` (see `build.rs`).
pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
    }
}
