//! What a worker process on a node or an instance needs to run tasks handed to it in groups
//! (a Functions message, a Batch pack): the job's container as a store through a read SAS, and
//! each task's arguments.

use base64::Engine;
use redwood_core::{Error, ErrorKind, Result, Storage};

use crate::sas_io::SasBlobs;

/// The job's container as a store, read through the message's SAS (for what tasks read:
/// broadcasts, results of other jobs).
pub(crate) fn sas_storage(container: &str, read_sas: &str) -> Result<Storage> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("`{container}` is not a container URL"),
        )
    };
    let url = reqwest::Url::parse(container).map_err(|_| bad())?;
    let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    let (name, parents) = segments.split_last().ok_or_else(bad)?;
    let host = url.host_str().ok_or_else(bad)?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let mut endpoint = format!("{}://{host}{port}", url.scheme());
    for p in parents {
        endpoint.push('/');
        endpoint.push_str(p);
    }
    // Path-style (an emulator): the account is the first segment; else the host's first label.
    let account = match parents.first() {
        Some(a) => a.to_string(),
        None => host.split('.').next().unwrap_or(host).to_string(),
    };
    let connection =
        format!("AccountName={account};BlobEndpoint={endpoint};SharedAccessSignature={read_sas}");
    let options = std::collections::BTreeMap::from([("connection_string".to_string(), connection)]);
    Storage::open_with(&format!("az://{name}"), &options)
}

/// One task's input: its range in the job's packed inputs, or its arguments inline (base64).
pub(crate) struct TaskInput<'a> {
    /// The task's index.
    pub task: u64,
    /// Its byte range in the job's inputs.
    pub range: (u64, u64),
    /// Its arguments, inline.
    pub args: Option<&'a str>,
}

/// Each task's arguments: inline, else read from `input` in one request covering the tasks'
/// ranges (or one each when they are far apart).
pub(crate) async fn read_args(
    blobs: &SasBlobs,
    input: &str,
    tasks: &[TaskInput<'_>],
) -> Result<Vec<bytes::Bytes>> {
    let engine = base64::engine::general_purpose::STANDARD;
    let stored: Vec<&TaskInput<'_>> = tasks.iter().filter(|t| t.args.is_none()).collect();
    let mut covering = None;
    if let (Some(lo), Some(hi)) = (
        stored.iter().map(|t| t.range.0).min(),
        stored.iter().map(|t| t.range.1).max(),
    ) {
        let needed: u64 = stored
            .iter()
            .map(|t| t.range.1.saturating_sub(t.range.0))
            .sum();
        if hi.saturating_sub(lo) <= needed.saturating_mul(4).max(64 * 1024) {
            covering = Some((lo, blobs.fetch(input, Some(lo..hi)).await?));
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let bytes = match (t.args, &covering) {
            (Some(inline), _) => bytes::Bytes::from(engine.decode(inline).map_err(|e| {
                Error::new(
                    ErrorKind::Codec,
                    format!("task {}: inline arguments are not base64: {e}", t.task),
                )
            })?),
            (None, Some((lo, all))) => {
                let start = usize::try_from(t.range.0.saturating_sub(*lo));
                let end = usize::try_from(t.range.1.saturating_sub(*lo));
                match (start, end) {
                    (Ok(s), Ok(e)) if s <= e && e <= all.len() => all.slice(s..e),
                    _ => {
                        return Err(Error::new(
                            ErrorKind::Codec,
                            format!("task {}: its range is outside the input", t.task),
                        ));
                    }
                }
            }
            (None, None) => blobs.fetch(input, Some(t.range.0..t.range.1)).await?,
        };
        out.push(bytes);
    }
    Ok(out)
}
