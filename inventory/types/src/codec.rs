//! The one place where cairn turns values into bytes and back.
//!
//! Everything cairn stores or sends is encoded here, so the wire and disk encoding can
//! be replaced in one place. Two envelopes exist:
//!
//! - **plain** (`encode` / `decode`): `[format version][payload]`, for messages inside
//!   frames that carry their own checksum or length checks;
//! - **checked** (`encode_checked` / `decode_checked`): `[format version][crc32c LE, 4
//!   bytes][payload]`, for every value stored in the inventory and every batch of log
//!   entries on the wire. The checksum covers the version byte and the payload.
//!
//! The payload is bincode 2 (serde, standard configuration: little-endian varints).
//! Decoding never trusts its input: the version is checked first, lengths are bounded by
//! [`MAX_DECODE_BYTES`], and trailing bytes are an error.

use serde::{Serialize, de::DeserializeOwned};

/// The format version written as the first byte of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

/// The largest input `decode` and `decode_checked` accept, and the most bytes a decoded
/// value may claim. Frames and records are bounded far below this by their own limits;
/// this bound only keeps a forged length from asking for unbounded memory.
pub const MAX_DECODE_BYTES: usize = 64 << 20;

/// Length of the checked envelope's header: version byte plus CRC32C.
pub const CHECKED_HEADER_LEN: usize = 5;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_DECODE_BYTES>,
>;

const CONFIG: Config = bincode::config::standard().with_limit::<MAX_DECODE_BYTES>();

/// Why bytes could not be turned into a value (or a value into bytes).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The input was empty or shorter than its envelope header.
    #[error("truncated: {len} bytes is shorter than the {needed}-byte header")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// The first byte names a format this build does not know.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// CRC32C found in the header.
        stored: u32,
        /// CRC32C computed over the bytes.
        computed: u32,
    },
    /// The input is larger than [`MAX_DECODE_BYTES`].
    #[error("input of {len} bytes exceeds the decode limit of {max} bytes")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not a valid encoding of the expected type.
    #[error("undecodable payload: {0}")]
    Decode(String),
    /// The payload decoded but bytes were left over.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// The value could not be encoded (a bug in a `Serialize` impl).
    #[error("cannot encode value: {0}")]
    Encode(String),
}

/// Encodes `value` in the plain envelope: `[FORMAT_VERSION][payload]`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_VERSION);
    write_payload(value, &mut out)?;
    Ok(out)
}

/// Decodes a value from the plain envelope.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    check_len(bytes, 1)?;
    check_version(bytes[0])?;
    read_payload(&bytes[1..])
}

/// Encodes `value` in the checked envelope: `[FORMAT_VERSION][crc32c][payload]`.
pub fn encode_checked<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    encode_checked_into(value, &mut out)?;
    Ok(out)
}

/// Like [`encode_checked`], but clears and reuses `out`, so hot paths (log appends)
/// need no allocation per value.
pub fn encode_checked_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.clear();
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0; 4]);
    write_payload(value, out)?;
    let crc = checksum(out[0], &out[CHECKED_HEADER_LEN..]);
    out[1..CHECKED_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes a value from the checked envelope, verifying version and checksum first.
pub fn decode_checked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    check_len(bytes, CHECKED_HEADER_LEN)?;
    check_version(bytes[0])?;
    let mut stored = [0; 4];
    stored.copy_from_slice(&bytes[1..CHECKED_HEADER_LEN]);
    let stored = u32::from_le_bytes(stored);
    let payload = &bytes[CHECKED_HEADER_LEN..];
    let computed = checksum(bytes[0], payload);
    if stored != computed {
        return Err(CodecError::ChecksumMismatch { stored, computed });
    }
    read_payload(payload)
}

/// CRC32C over the version byte and the payload.
fn checksum(version: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[version]), payload)
}

fn write_payload<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, CONFIG)
        .map(drop)
        .map_err(|e| CodecError::Encode(e.to_string()))
}

fn read_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(payload, CONFIG).map_err(|e| CodecError::Decode(e.to_string()))?;
    match payload.len() - used {
        0 => Ok(value),
        extra => Err(CodecError::TrailingBytes(extra)),
    }
}

fn check_len(bytes: &[u8], needed: usize) -> Result<(), CodecError> {
    if bytes.len() < needed {
        return Err(CodecError::Truncated { len: bytes.len(), needed });
    }
    if bytes.len() > MAX_DECODE_BYTES {
        return Err(CodecError::TooLarge { len: bytes.len(), max: MAX_DECODE_BYTES });
    }
    Ok(())
}

fn check_version(found: u8) -> Result<(), CodecError> {
    if found != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion { found, supported: FORMAT_VERSION });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u128,
        name: String,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        tags: Vec<u32>,
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (
            any::<u128>(),
            ".{0,20}",
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(any::<u32>(), 0..10),
        )
            .prop_map(|(id, name, body, tags)| Sample { id, name, body, tags })
    }

    proptest! {
        #[test]
        fn plain_round_trips(value in sample()) {
            let bytes = encode(&value).unwrap();
            prop_assert_eq!(bytes[0], FORMAT_VERSION);
            prop_assert_eq!(decode::<Sample>(&bytes).unwrap(), value);
        }

        #[test]
        fn checked_round_trips(value in sample()) {
            let bytes = encode_checked(&value).unwrap();
            prop_assert_eq!(decode_checked::<Sample>(&bytes).unwrap(), value);
        }

        #[test]
        fn any_single_bit_flip_in_a_checked_value_is_caught(value in sample(), bit in any::<prop::sample::Index>()) {
            let mut bytes = encode_checked(&value).unwrap();
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_checked::<Sample>(&bytes).is_err());
        }

        #[test]
        fn every_truncation_of_a_checked_value_is_an_error(value in sample(), cut in any::<prop::sample::Index>()) {
            let bytes = encode_checked(&value).unwrap();
            let cut = cut.index(bytes.len());
            prop_assert!(decode_checked::<Sample>(&bytes[..cut]).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<Sample>(&bytes);
            let _ = decode_checked::<Sample>(&bytes);
        }
    }

    #[test]
    fn unknown_version_is_named() {
        let mut bytes = encode(&7u32).unwrap();
        bytes[0] = 9;
        assert_eq!(
            decode::<u32>(&bytes),
            Err(CodecError::UnsupportedVersion { found: 9, supported: FORMAT_VERSION })
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&7u32).unwrap();
        bytes.push(0);
        assert_eq!(decode::<u32>(&bytes), Err(CodecError::TrailingBytes(1)));
    }

    #[test]
    fn forged_huge_length_does_not_allocate_unbounded() {
        // Version byte, then a varint length of u64::MAX for a Vec<u8>.
        let bytes = [FORMAT_VERSION, 255, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
