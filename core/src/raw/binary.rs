//! The identity of the running executable: the sha256 of its bytes, computed once per process.

use std::io::Read;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// The lower-case hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn hash_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The sha256 of the running executable (`std::env::current_exe()`), computed on first use.
pub fn current_binary_hash() -> Result<&'static str> {
    static HASH: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let got = HASH.get_or_init(|| {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot locate the executable: {e}"))?;
        hash_file(&exe).map_err(|e| format!("cannot read the executable {}: {e}", exe.display()))
    });
    got.as_deref()
        .map_err(|msg| Error::new(ErrorKind::Backend, msg.clone()).with_operation("binary hash"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let h = current_binary_hash().unwrap();
        assert_eq!(h.len(), 64);
    }
}
