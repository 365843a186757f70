//! Gossip messages compressed once for the wire, on connections that negotiated ALPN
//! `cairn/3`.
//!
//! chitchat's own compression (its protocol V1) compresses a digest two or three times
//! per message, each time with a fresh zstd context. Sites of this build run chitchat
//! uncompressed (V0) and the transport compresses each whole message once, the delta
//! included, with one zstd context kept for the purpose. A packed message is
//!
//! ```text
//! encoding (RAW 0 | ZSTD 1) | body (the message, or one zstd frame of it)
//! ```
//!
//! A small message, or one that does not shrink, goes raw. A compressed frame must give
//! its decompressed size, which must be at most what a gossip message may be; a peer
//! cannot make a site allocate more than that, whatever its frame claims.
//!
//! Pure logic: no I/O, no clock.

use std::sync::{Mutex, PoisonError};

/// The encoding byte of a message carried as it is.
pub(crate) const RAW: u8 = 0;
/// The encoding byte of a message carried as one zstd frame.
pub(crate) const ZSTD: u8 = 1;
/// Messages up to this size go raw (a zstd frame's header would eat the gain).
const COMPRESS_ABOVE: usize = 96;
/// zstd's level: 1, its fastest positive one. On a synthetic chitchat digest of 100
/// sites (5.6 KB, random 16-hex-digit names) it compresses a fifth faster than the
/// default 3 (14 against 18 µs), to the same size (1,931 against 1,966 bytes).
const LEVEL: i32 = 1;

/// One zstd context of each kind per process (at most 150 and 96 KB), made on first use and
/// shared: a few dozen messages a second do not contend, and a context per worker
/// thread would cost a site that much memory again per thread.
static COMPRESSOR: Mutex<Option<zstd::bulk::Compressor<'static>>> = Mutex::new(None);
static DECOMPRESSOR: Mutex<Option<zstd::bulk::Decompressor<'static>>> = Mutex::new(None);

/// Why a packed message was not taken (the sender is broken or hostile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnpackError {
    /// Not even an encoding byte.
    #[error("empty packed gossip message")]
    Empty,
    /// An encoding byte this build does not know.
    #[error("unknown gossip encoding {0}")]
    Encoding(u8),
    /// A frame that gives no size, or one above what a gossip message may be.
    #[error("compressed gossip message of {size:?} bytes decompressed; at most {max} may be")]
    Size { size: Option<u64>, max: usize },
    /// A frame that does not decompress to the size it gave.
    #[error("compressed gossip message does not decompress: {0}")]
    Zstd(String),
}

/// `message` as it goes on the wire: compressed if that makes it smaller.
pub(crate) fn pack(message: &[u8]) -> Vec<u8> {
    if message.len() > COMPRESS_ABOVE
        && let Some(out) = compress(message).filter(|out| out.len() <= message.len())
    {
        return out;
    }
    let mut out = Vec::with_capacity(1 + message.len());
    out.push(RAW);
    out.extend_from_slice(message);
    out
}

/// [`ZSTD`] and a frame of `message`, or `None` if zstd cannot (no memory for a context).
fn compress(message: &[u8]) -> Option<Vec<u8>> {
    let mut slot = COMPRESSOR.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_none() {
        *slot = zstd::bulk::Compressor::new(LEVEL).ok();
    }
    let compressor = slot.as_mut()?;
    let mut out = vec![0u8; 1 + zstd::zstd_safe::compress_bound(message.len())];
    out[0] = ZSTD;
    let len = compressor.compress_to_buffer(message, &mut out[1..]).ok()?;
    out.truncate(1 + len);
    Some(out)
}

/// The message in `packed`, which must come out at most `max` bytes long.
pub(crate) fn unpack(packed: &[u8], max: usize) -> Result<Vec<u8>, UnpackError> {
    let (&encoding, body) = packed.split_first().ok_or(UnpackError::Empty)?;
    match encoding {
        RAW if body.len() <= max => Ok(body.to_vec()),
        RAW => Err(UnpackError::Size { size: Some(body.len() as u64), max }),
        ZSTD => {
            let size = zstd::zstd_safe::get_frame_content_size(body).ok().flatten();
            let capacity = size
                .and_then(|size| usize::try_from(size).ok())
                .filter(|&size| size <= max)
                .ok_or(UnpackError::Size { size, max })?;
            decompress(body, capacity)
        }
        other => Err(UnpackError::Encoding(other)),
    }
}

/// The zstd frame `frame`, which must decompress to at most `capacity` bytes.
fn decompress(frame: &[u8], capacity: usize) -> Result<Vec<u8>, UnpackError> {
    let zstd = |e: std::io::Error| UnpackError::Zstd(e.to_string());
    let mut slot = DECOMPRESSOR.lock().unwrap_or_else(PoisonError::into_inner);
    let decompressor = match &mut *slot {
        Some(decompressor) => decompressor,
        empty => empty.insert(zstd::bulk::Decompressor::new().map_err(zstd)?),
    };
    decompressor.decompress(frame, capacity).map_err(zstd)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Something like a digest: ids, addresses and counters, repetitive as they are.
    fn digest_like(sites: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for i in 0..sites {
            bytes.extend(format!("{:032x}", (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15)).as_bytes());
            bytes.extend([4, 127, 0, 0, 1]);
            bytes.extend((7000 + i as u16).to_le_bytes());
            bytes.extend((1_700_000_000u64 + i as u64).to_le_bytes());
            bytes.extend((i as u64 * 13).to_le_bytes());
        }
        bytes
    }

    #[test]
    fn a_digest_goes_compressed_and_comes_back_whole() {
        let message = digest_like(100);
        let packed = pack(&message);
        assert_eq!(packed[0], ZSTD);
        assert!(packed.len() < message.len() * 3 / 4, "{} of {}", packed.len(), message.len());
        assert_eq!(unpack(&packed, 1 << 20).unwrap(), message);
    }

    #[test]
    fn small_or_random_messages_go_raw() {
        assert_eq!(pack(b"ack"), b"\0ack");
        let noise: Vec<u8> = (0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let packed = pack(&noise);
        assert!(packed.len() <= noise.len() + 1);
        assert_eq!(unpack(&packed, 4096).unwrap(), noise);
    }

    #[test]
    fn hostile_packings_are_refused_with_what_is_wrong() {
        assert_eq!(unpack(&[], 100), Err(UnpackError::Empty));
        assert_eq!(unpack(&[7, 1, 2], 100), Err(UnpackError::Encoding(7)));
        assert_eq!(unpack(&[RAW, 1, 2, 3], 2), Err(UnpackError::Size { size: Some(3), max: 2 }));
        // A frame that says it holds more than a message may be is not decompressed.
        let big = pack(&vec![b'a'; 100_000]);
        assert_eq!(unpack(&big, 50_000), Err(UnpackError::Size { size: Some(100_000), max: 50_000 }));
        // A frame that does not say its size.
        let mut streamed = Vec::new();
        {
            let mut encoder = zstd::stream::write::Encoder::new(&mut streamed, 3).unwrap();
            std::io::Write::write_all(&mut encoder, &[b'b'; 500]).unwrap();
            encoder.finish().unwrap();
        }
        let mut packed = vec![ZSTD];
        packed.extend(&streamed);
        assert!(matches!(unpack(&packed, 1000), Err(UnpackError::Size { size: None, .. })));
        // A frame cut short.
        let digest = pack(&digest_like(50));
        assert!(matches!(unpack(&digest[..digest.len() / 2], 1 << 20), Err(UnpackError::Zstd(_))));
    }

    proptest! {
        #[test]
        fn whatever_is_packed_comes_back(message in proptest::collection::vec(0u8..4, 0..3000)) {
            prop_assert_eq!(unpack(&pack(&message), 3000).unwrap(), message);
        }

        /// Any bytes unpack or are refused, never panic, never exceed the bound.
        #[test]
        fn any_bytes_unpack_within_the_bound_or_are_refused(
            encoding in 0u8..3,
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let packed: Vec<u8> = std::iter::once(encoding).chain(body).collect();
            if let Ok(message) = unpack(&packed, 1000) {
                prop_assert!(message.len() <= 1000);
            }
        }

        /// A real frame with bytes of its header changed (its size among them) never
        /// panics and never decompresses past the bound.
        #[test]
        fn a_frame_with_a_tampered_header_stays_within_the_bound(flip in 4usize..12, value in any::<u8>()) {
            let mut packed = pack(&digest_like(30));
            if flip < packed.len() {
                packed[flip] = value;
            }
            if let Ok(message) = unpack(&packed, 1 << 20) {
                prop_assert!(message.len() <= 1 << 20);
            }
        }
    }
}
