//! The one place that knows how values become bytes: bincode 2 through serde, and a format
//! version byte in front of every stored object so the format can change later.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, ErrorKind, Result};

/// The version byte written in front of every object Redwood stores.
pub const FORMAT_VERSION: u8 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value (no version byte; for values nested inside a versioned object).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config())
        .map_err(|e| Error::codec(std::any::type_name::<T>(), e))
}

/// Appends the encoding of a value to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| Error::codec(std::any::type_name::<T>(), e))
}

/// Writes the stored form of a value (version byte, then the value) to any writer, without
/// building it in memory first.
pub fn encode_versioned_to<T: Serialize + ?Sized, W: std::io::Write>(
    value: &T,
    out: &mut W,
) -> Result<u64> {
    out.write_all(&[FORMAT_VERSION])
        .map_err(|e| Error::codec(std::any::type_name::<T>(), e))?;
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|n| n as u64 + 1)
        .map_err(|e| Error::codec(std::any::type_name::<T>(), e))
}

/// The sha256 (lower-case hex) and length of a value's stored form, computed as it is encoded
/// (nothing is buffered).
pub fn versioned_sha256<T: Serialize + ?Sized>(value: &T) -> Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(Sha256::new());
    let len = encode_versioned_to(value, &mut hashing)?;
    Ok((crate::raw::binary::hex(&hashing.0.finalize()), len))
}

/// Decodes a value written by [`encode`]; trailing bytes are an error. Corrupt or hostile bytes
/// are a [`ErrorKind::Codec`] error, never a huge allocation: the lengths inside may claim at
/// most 16 times the input's size in all (and at least 1 MiB), through bincode's decode limit.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let decoded = match bytes.len() {
        0..=0xF_FFFF => decode_limited::<T, { 1 << 20 }>(bytes),
        0x10_0000..=0xFF_FFFF => decode_limited::<T, { 1 << 24 }>(bytes),
        0x100_0000..=0xFFF_FFFF => decode_limited::<T, { 1 << 28 }>(bytes),
        0x1000_0000..=0xFFFF_FFFF => decode_limited::<T, { 1 << 32 }>(bytes),
        _ => decode_limited::<T, { usize::MAX }>(bytes),
    };
    let (value, used) = decoded.map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => Error::new(
            ErrorKind::Codec,
            format!(
                "a length inside {} bytes of {} claims more than they hold: the bytes are \
                 corrupt",
                bytes.len(),
                std::any::type_name::<T>()
            ),
        ),
        e => Error::codec(std::any::type_name::<T>(), e),
    })?;
    if used != bytes.len() {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "{} trailing bytes after a value of {}",
                bytes.len() - used,
                std::any::type_name::<T>()
            ),
        ));
    }
    Ok(value)
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice::<T, _>(bytes, config().with_limit::<LIMIT>())
}

/// Encodes a value for storage: the version byte, then the value.
pub fn encode_versioned<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT_VERSION];
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes a stored object written by [`encode_versioned`], checking its version byte.
pub fn decode_versioned<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    decode(check_version(bytes)?)
}

/// Checks the version byte of a stored object and returns the bytes after it.
pub fn check_version(bytes: &[u8]) -> Result<&[u8]> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => Ok(rest),
        Some((v, _)) => Err(Error::new(
            ErrorKind::Codec,
            format!(
                "stored object has format version {v}, this build reads version {FORMAT_VERSION}"
            ),
        )),
        None => Err(Error::new(ErrorKind::Codec, "stored object is empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let v = (1u64, "two".to_string(), vec![3.0f64]);
        let bytes = encode_versioned(&v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String, Vec<f64>) = decode_versioned(&bytes).unwrap();
        assert_eq!(back, v);

        let mut wrong = bytes.clone();
        wrong[0] = 9;
        let err = decode_versioned::<(u64, String, Vec<f64>)>(&wrong).unwrap_err();
        assert!(err.to_string().contains("format version 9"), "{err}");
    }

    #[test]
    fn streaming_hash_matches_the_buffered_form() {
        let v: Vec<u64> = (0..10_000).collect();
        let bytes = encode_versioned(&v).unwrap();
        let (sha, len) = versioned_sha256(&v).unwrap();
        assert_eq!(len, bytes.len() as u64);
        assert_eq!(sha, crate::raw::binary::sha256_hex(&bytes));
    }

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        use crate::raw::envelope::Outcome;
        // An outcome whose byte string claims 2^40 bytes in 13 bytes (it aborted the client).
        let hostile = [0x01, 0x00, 0xfd, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0];
        let err = Outcome::from_stored(&hostile).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("corrupt"), "{err}");
        // Strings too, and values just under a tier's edge still decode.
        let mut long = encode(&"x".repeat(5000)).unwrap();
        long[1] = 0xff; // a larger length than the bytes hold
        assert!(decode::<String>(&long).is_err());
        let big: Vec<u8> = vec![1; (1 << 20) - 16];
        let bytes = encode(&serde_bytes::ByteBuf::from(big.clone())).unwrap();
        let back: serde_bytes::ByteBuf = decode(&bytes).unwrap();
        assert_eq!(back.into_vec(), big);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&7u32).unwrap();
        bytes.push(0);
        assert_eq!(decode::<u32>(&bytes).unwrap_err().kind(), ErrorKind::Codec);
    }
}
