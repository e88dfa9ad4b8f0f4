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

/// The environment variable through which a process hands the processes it starts from its
/// own executable that executable's hash (`<file id>=<sha256>`), so they do not hash it
/// again; a process whose executable is another file (another id) ignores it.
pub const HASH_ENV: &str = "REDWOOD_BINARY_SHA256";

static HASH: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// A file's identity as far as its hash goes: device, inode, size and modification time
/// (`None` where the platform does not tell them).
pub fn file_id(path: &std::path::Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(format!(
            "{}-{}-{}-{}.{}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The hash handed down in [`HASH_ENV`] (its `value`), if it is this executable's.
fn inherited_hash(exe: &std::path::Path, value: Option<String>) -> Option<String> {
    let value = value?;
    let (id, hash) = value.split_once('=')?;
    let valid = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    (valid && file_id(exe)? == id).then(|| hash.to_string())
}

/// The sha256 of the running executable (`std::env::current_exe()`), computed on first use
/// (or handed down by the process that started it, see [`HASH_ENV`]).
pub fn current_binary_hash() -> Result<&'static str> {
    let got = HASH.get_or_init(|| {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot locate the executable: {e}"))?;
        if let Some(hash) = inherited_hash(&exe, std::env::var(HASH_ENV).ok()) {
            return Ok(hash);
        }
        hash_file(&exe).map_err(|e| format!("cannot read the executable {}: {e}", exe.display()))
    });
    got.as_deref()
        .map_err(|msg| Error::new(ErrorKind::Backend, msg.clone()).with_operation("binary hash"))
}

/// Records the running executable's hash when it is known without reading the file (a cache
/// kept by file id); a hash already known stays.
pub fn assume_current_hash(hash: String) {
    let _ = HASH.set(Ok(hash));
}

/// The [`HASH_ENV`] value for processes started from this executable, when its hash is
/// already known (never computed here: starting a process must not read the whole file).
pub fn hash_env_value() -> Option<String> {
    let hash = HASH.get()?.as_ref().ok()?;
    let id = file_id(&std::env::current_exe().ok()?)?;
    Some(format!("{id}={hash}"))
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

    #[cfg(unix)]
    #[test]
    fn a_handed_down_hash_counts_only_for_the_same_file() {
        let exe = std::env::current_exe().unwrap();
        let id = file_id(&exe).unwrap();
        let hash = "ab".repeat(32);
        let handed = |v: String| inherited_hash(&exe, Some(v));
        assert_eq!(handed(format!("{id}={hash}")), Some(hash.clone()));
        assert_eq!(
            handed(format!("1-2-3-4.5={hash}")),
            None,
            "another file's hash"
        );
        assert_eq!(handed(format!("{id}=not-a-hash")), None, "not a sha256");
        assert_eq!(inherited_hash(&exe, None), None);
        assert_eq!(
            hash_env_value().map(|v| v.starts_with(&id)),
            HASH.get().map(|h| h.is_ok())
        );
    }
}
