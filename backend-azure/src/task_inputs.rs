//! What a worker process on a node or an instance needs to run tasks handed to it in groups
//! (a Functions message, a Batch pack): the job's container as a store through a read SAS, and
//! each task's arguments.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use redwood_core::raw::backend::JobSpec;
use redwood_core::raw::executor::OpenRequest;
use redwood_core::{Error, ErrorKind, Result, Storage, TaskOptions};

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

/// The job a worker process runs tasks of, as the message or task spec that started it names it.
pub(crate) struct JobOnNode<'a> {
    /// The job id.
    pub job: &'a str,
    /// The remote function's id.
    pub function: &'a str,
    /// The function's signature hash.
    pub signature: u64,
    /// The sha256 of the executable the tasks must run in.
    pub binary: &'a str,
    /// The container URL (no query).
    pub container: &'a str,
    /// A read-only SAS (query string) on the container.
    pub read_sas: &'a str,
    /// The per-task timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
}

impl JobOnNode<'_> {
    /// The request that opens this job on the process's local pool: tasks launched on it read
    /// through the read SAS and answer at the pool's ends.
    pub(crate) fn open_request(&self) -> Result<OpenRequest> {
        let mut options = TaskOptions::new();
        if let Some(ms) = self.timeout_ms {
            options = options.timeout(Duration::from_millis(ms));
        }
        let spec = JobSpec {
            id: self.job.to_string(),
            function: self.function.to_string(),
            signature: self.signature,
            binary: self.binary.to_string(),
            task_count: u64::MAX,
            options,
        };
        let storage = sas_storage(self.container, self.read_sas)?;
        Ok(OpenRequest::new(Arc::new(spec), storage))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_url_makes_a_store() {
        for url in [
            "http://127.0.0.1:10000/devstoreaccount1/box",
            "https://acct.blob.core.windows.net/box",
        ] {
            let s = sas_storage(url, "sv=1&sig=SECRET").unwrap();
            assert!(!format!("{s:?}").contains("SECRET"));
        }
        assert!(sas_storage("not a url", "").is_err());
    }
}
