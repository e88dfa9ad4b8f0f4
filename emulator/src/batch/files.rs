//! A task's files: `resourceFiles` downloaded into the working directory before it runs
//! (`httpUrl`, or `storageContainerUrl` with `blobPrefix`, e.g. Azurite SAS URLs), and
//! `outputFiles` uploaded to their container URL afterwards, per `uploadCondition`.
//!
//! An `httpUrl` file is fetched with a conditional GET (storage checks the SAS), at most once a
//! second per URL: a file many tasks share (the program itself) crosses the wire once per
//! change, where the service would download it for every task; the copy is a hard link of the
//! cached file.
//! `fileMode` (octal, default `0770` as on Linux nodes) sets the file's permissions.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

/// Tries of one resource-file download.
const DOWNLOAD_ATTEMPTS: u32 = 4;

/// Downloaded `httpUrl` files: the ETag and the cached copy of each URL (without its query).
#[derive(Debug)]
pub struct DownloadCache {
    dir: PathBuf,
    /// By URL without its query: ETag, cached file, when storage last accepted it, and the
    /// full URL it accepted then.
    entries: Mutex<HashMap<String, (String, PathBuf, Instant, String)>>,
}

/// How long a revalidated download is used without asking storage again.
const FRESH_FOR: Duration = Duration::from_secs(1);

impl DownloadCache {
    /// A cache keeping its copies in `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Self {
        DownloadCache {
            dir,
            entries: Mutex::default(),
        }
    }

    fn lookup(&self, url: &str) -> Option<(String, PathBuf, Instant, String)> {
        self.entries.lock().ok()?.get(url).cloned()
    }

    /// Records that storage just accepted `full_url` for the cached copy of `url`.
    fn checked(&self, url: &str, full_url: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(url)
        {
            entry.2 = Instant::now();
            entry.3 = full_url.to_string();
        }
    }

    /// Stores a fresh download and returns the cached file's path.
    fn store(
        &self,
        url: &str,
        full_url: &str,
        etag: &str,
        bytes: &Bytes,
    ) -> Result<PathBuf, String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let file = self.dir.join(uuid_like());
        std::fs::write(&file, bytes)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                url.to_string(),
                (
                    etag.to_string(),
                    file.clone(),
                    Instant::now(),
                    full_url.to_string(),
                ),
            );
        }
        Ok(file)
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("file-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Downloads every resource file; an error says which one failed.
pub async fn download(
    http: &reqwest::Client,
    cache: &DownloadCache,
    files: &[Value],
    wd: &Path,
) -> Result<(), String> {
    for f in files {
        let text = |name: &str| f.get(name).and_then(Value::as_str);
        if let Some(url) = text("httpUrl") {
            let path = text("filePath").ok_or("a resource file with httpUrl needs a filePath")?;
            let target = inside(wd, path)?;
            let mode = match text("fileMode") {
                None => 0o770,
                Some(m) => u32::from_str_radix(m, 8)
                    .map_err(|_| format!("fileMode `{m}` is not an octal mode like 0755"))?,
            };
            fetch_cached(http, cache, url, &target).await?;
            set_mode(&target, mode)?;
        } else if let Some(container) = text("storageContainerUrl") {
            let folder = inside(wd, text("filePath").unwrap_or(""))?;
            for name in list_blobs(http, container, text("blobPrefix").unwrap_or("")).await? {
                let target = inside(&folder, &name)?;
                write(&target, get(http, &blob_url(container, &name)).await?)?;
            }
        } else if text("autoStorageContainerName").is_some() {
            return Err(
                "autoStorageContainerName needs a storage account linked to the Batch \
                        account, which the emulator does not have: use storageContainerUrl"
                    .into(),
            );
        } else {
            return Err(
                "a resource file needs httpUrl, storageContainerUrl or autoStorageContainerName"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Uploads the output files whose condition holds for `exit_code`.
pub async fn upload(
    http: &reqwest::Client,
    files: &[Value],
    wd: &Path,
    exit_code: Option<i32>,
) -> Result<usize, String> {
    let mut uploaded = 0;
    for f in files {
        let pattern = f
            .get("filePattern")
            .and_then(Value::as_str)
            .ok_or("an output file needs a filePattern")?;
        let condition = f
            .get("uploadOptions")
            .and_then(|o| o.get("uploadCondition"))
            .and_then(Value::as_str)
            .unwrap_or("taskcompletion")
            .to_ascii_lowercase();
        let wanted = match condition.as_str() {
            "tasksuccess" => exit_code == Some(0),
            "taskfailure" => exit_code != Some(0),
            _ => true,
        };
        if !wanted {
            continue;
        }
        let container = f
            .get("destination")
            .and_then(|d| d.get("container"))
            .ok_or("an output file needs destination.container")?;
        let url = container
            .get("containerUrl")
            .and_then(Value::as_str)
            .ok_or("an output file needs destination.container.containerUrl")?;
        let path = container.get("path").and_then(Value::as_str).unwrap_or("");
        let wildcard = pattern.contains(['*', '?']);
        for file in matching(wd, pattern)? {
            let file_name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = match (wildcard, path.is_empty()) {
                (_, true) => file_name,
                (true, false) => format!("{}/{file_name}", path.trim_end_matches('/')),
                (false, false) => path.to_string(),
            };
            let bytes =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let response = http
                .put(blob_url(url, &name))
                .header("x-ms-blob-type", "BlockBlob")
                .header("x-ms-version", "2022-11-02")
                .body(bytes)
                .send()
                .await
                .map_err(|e| format!("cannot upload {name}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!(
                    "uploading {name} was refused: HTTP {}",
                    response.status()
                ));
            }
            uploaded += 1;
        }
    }
    Ok(uploaded)
}

/// `path` under `root`, refusing absolute paths and `..`.
pub(super) fn inside(root: &Path, path: &str) -> Result<PathBuf, String> {
    let relative = Path::new(path);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "the path `{path}` leaves the task's working directory"
        ));
    }
    Ok(root.join(relative))
}

/// Fetches `url` into `target`, revalidating a cached copy with `If-None-Match`.
async fn fetch_cached(
    http: &reqwest::Client,
    cache: &DownloadCache,
    url: &str,
    target: &Path,
) -> Result<(), String> {
    let (plain, _) = url.split_once('?').unwrap_or((url, ""));
    let cached = cache.lookup(plain);
    // Skip asking storage only for the very URL (SAS included) it just accepted.
    if let Some((_, file, checked, checked_url)) = &cached
        && checked.elapsed() < FRESH_FOR
        && checked_url == url
    {
        return link(file, target);
    }
    // Like the node agent, retry broken connections and server errors a few times.
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        let mut request = http.get(url).header("x-ms-version", "2022-11-02");
        if let Some((etag, ..)) = &cached {
            request = request.header("If-None-Match", etag);
        }
        match request.send().await {
            Ok(r) if !r.status().is_server_error() || attempt >= DOWNLOAD_ATTEMPTS => break r,
            Err(e) if attempt >= DOWNLOAD_ATTEMPTS => {
                return Err(format!("cannot download {plain}: {}", e.without_url()));
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await,
        }
    };
    let source = if response.status() == reqwest::StatusCode::NOT_MODIFIED
        && let Some((_, file, ..)) = cached
    {
        cache.checked(plain, url);
        file
    } else if response.status().is_success() {
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("cannot download {plain}: {}", e.without_url()))?;
        match etag {
            Some(etag) => cache.store(plain, url, &etag, &bytes)?,
            None => return write(target, bytes),
        }
    } else {
        return Err(format!(
            "downloading {plain} was refused: HTTP {}",
            response.status()
        ));
    };
    link(&source, target)
}

/// Puts a cached file at `target`: a hard link, or a copy where links do not work.
fn link(source: &Path, target: &Path) -> Result<(), String> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let _ = std::fs::remove_file(target);
    std::fs::hard_link(source, target)
        .or_else(|_| std::fs::copy(source, target).map(|_| ()))
        .map_err(|e| format!("cannot write {}: {e}", target.display()))
}

#[cfg(unix)]
fn set_mode(target: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", target.display()))
}

#[cfg(not(unix))]
fn set_mode(_target: &Path, _mode: u32) -> Result<(), String> {
    Ok(())
}

fn write(target: &Path, bytes: Bytes) -> Result<(), String> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(target, &bytes).map_err(|e| format!("cannot write {}: {e}", target.display()))
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Bytes, String> {
    let shown = url.split('?').next().unwrap_or(url);
    let response = http
        .get(url)
        .header("x-ms-version", "2022-11-02")
        .send()
        .await
        .map_err(|e| format!("cannot download {shown}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "downloading {shown} was refused: HTTP {}",
            response.status()
        ));
    }
    response
        .bytes()
        .await
        .map_err(|e| format!("cannot download {shown}: {e}"))
}

/// The URL of a blob in a container URL that may carry a SAS query.
fn blob_url(container: &str, name: &str) -> String {
    let (base, query) = container.split_once('?').unwrap_or((container, ""));
    let encoded: Vec<String> = name
        .split('/')
        .map(|part| {
            part.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        })
        .collect();
    let url = format!("{}/{}", base.trim_end_matches('/'), encoded.join("/"));
    if query.is_empty() {
        url
    } else {
        format!("{url}?{query}")
    }
}

/// The names of the blobs under a prefix (List Blobs, following `NextMarker`).
async fn list_blobs(
    http: &reqwest::Client,
    container: &str,
    prefix: &str,
) -> Result<Vec<String>, String> {
    let (base, query) = container.split_once('?').unwrap_or((container, ""));
    let mut names = Vec::new();
    let mut marker = String::new();
    loop {
        let mut url =
            reqwest::Url::parse(base).map_err(|e| format!("bad storageContainerUrl: {e}"))?;
        url.set_query(if query.is_empty() { None } else { Some(query) });
        url.query_pairs_mut()
            .append_pair("restype", "container")
            .append_pair("comp", "list")
            .append_pair("prefix", prefix);
        if !marker.is_empty() {
            url.query_pairs_mut().append_pair("marker", &marker);
        }
        let xml = get(http, url.as_str()).await?;
        let xml = String::from_utf8_lossy(&xml);
        names.extend(elements(&xml, "Name"));
        marker = elements(&xml, "NextMarker")
            .into_iter()
            .next()
            .unwrap_or_default();
        if marker.is_empty() {
            return Ok(names);
        }
    }
}

/// The text of every `<tag>…</tag>` in a document.
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(
            rest[..end]
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'"),
        );
        rest = &rest[end + close.len()..];
    }
    out
}

/// The files a pattern names, relative to the working directory (`*` and `?` in the last
/// part; `../stdout.txt` reaches the task folder).
fn matching(wd: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let (dir, name) = match pattern.rsplit_once('/') {
        Some((d, n)) => (wd.join(d), n),
        None => (wd.to_path_buf(), pattern),
    };
    if !name.contains(['*', '?']) {
        let file = dir.join(name);
        return Ok(if file.is_file() { vec![file] } else { vec![] });
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| wildcard(name.as_bytes(), n.to_string_lossy().as_bytes()))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pattern[1..], text) || (!text.is_empty() && wildcard(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => wildcard(&pattern[1..], &text[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert!(wildcard(b"*.txt", b"a.txt") && !wildcard(b"*.txt", b"a.csv"));
        assert!(wildcard(b"out-??.bin", b"out-07.bin"));
        assert_eq!(
            blob_url("http://h/acct/box?sv=1&sig=x", "dir/a b.txt"),
            "http://h/acct/box/dir/a%20b.txt?sv=1&sig=x"
        );
        assert_eq!(
            elements(
                "<B><Name>a&amp;b</Name></B><B><Name>c</Name></B><NextMarker/>",
                "Name"
            ),
            ["a&b", "c"]
        );
        let wd = Path::new("/w");
        assert!(inside(wd, "../etc/passwd").is_err());
        assert!(inside(wd, "/etc/passwd").is_err());
        assert_eq!(
            inside(wd, "in/data.txt").unwrap(),
            Path::new("/w/in/data.txt")
        );
    }
}
