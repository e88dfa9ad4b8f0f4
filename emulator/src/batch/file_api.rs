//! The file API of tasks and nodes: listing, reading (whole, by `ocp-range` or as `HEAD`) and
//! deleting; never a file outside the task's or node's folder.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::BatchError;
use super::middleware::query_pairs;
use super::odata::list;
use super::resources::Resource;
use super::server::{Data, Shared};

/// The folder of a task that ran (or runs), from its `nodeInfo`.
fn task_folder(data: &Data, job: &str, task: &str) -> Result<PathBuf, BatchError> {
    if data.jobs.get(job).is_none() {
        return Err(BatchError::not_found("JobNotFound", "job"));
    }
    let resource = data
        .tasks
        .get(&job.to_lowercase())
        .and_then(|t| t.get(task))
        .ok_or_else(|| BatchError::not_found("TaskNotFound", "task"))?;
    let info = resource.body.get("nodeInfo");
    let field = |name: &str| info.and_then(|i| i.get(name)).and_then(Value::as_str);
    let (Some(pool), Some(node), Some(root)) =
        (field("poolId"), field("nodeId"), field("taskRootDirectory"))
    else {
        return Err(BatchError::new(
            StatusCode::CONFLICT,
            "TaskNotStarted",
            "The specified task has not started on a node yet.",
        ));
    };
    let node = data
        .nodes
        .get(&pool.to_lowercase())
        .and_then(|list| list.iter().find(|n| n.id == node))
        .ok_or_else(|| BatchError::not_found("NodeNotFound", "node"))?;
    Ok(node.dir.join(root))
}

pub(super) async fn list_task_files(
    State(state): State<Shared>,
    Path((job, task)): Path<(String, String)>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let folder = task_folder(&state.data(), &job, &task)?;
    let path = format!("/jobs/{job}/tasks/{task}/files");
    list_folder(&state, &folder, &path, &query)
}

/// `GET /pools/{pool}/nodes/{node}/files`: the node's files, from its root folder.
pub(super) async fn list_node_files(
    State(state): State<Shared>,
    Path((pool, node)): Path<(String, String)>,
    request: Request,
) -> Result<Response, BatchError> {
    let query = query_pairs(&request);
    let folder = node_folder(&state.data(), &pool, &node)?;
    let path = format!("/pools/{pool}/nodes/{node}/files");
    list_folder(&state, &folder, &path, &query)
}

/// The entries of `folder` (and below it, with `recursive=true`) as a paged list of files.
fn list_folder(
    state: &Shared,
    folder: &std::path::Path,
    path: &str,
    query: &[(String, String)],
) -> Result<Response, BatchError> {
    let recursive = query
        .iter()
        .any(|(k, v)| k == "recursive" && v.eq_ignore_ascii_case("true"));
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let entry_path = entry.path();
            // Not followed: a link is listed, never walked (it could lead out of the folder).
            let Ok(meta) = std::fs::symlink_metadata(&entry_path) else {
                continue;
            };
            let name = entry_path
                .strip_prefix(folder)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if meta.is_dir() && recursive {
                pending.push(entry_path.clone());
            }
            let time = |t: std::io::Result<std::time::SystemTime>| {
                t.map(super::resources::rfc3339).unwrap_or_default()
            };
            let mut body = Map::new();
            body.insert("name".into(), Value::from(name.clone()));
            body.insert(
                "url".into(),
                Value::from(format!("{}{path}/{name}", state.url)),
            );
            body.insert("isDirectory".into(), Value::from(meta.is_dir()));
            body.insert(
                "properties".into(),
                json!({
                    "creationTime": time(meta.created().or_else(|_| meta.modified())),
                    "lastModified": time(meta.modified()),
                    "contentLength": meta.len(),
                    "contentType": "application/octet-stream",
                    "fileMode": if meta.is_dir() { "040755" } else { "0100644" },
                }),
            );
            files.push(Resource::new(body, std::time::SystemTime::now()));
        }
    }
    files.sort_by(|a, b| a.str("name").cmp(&b.str("name")));
    list(state, "files", path, query, files.iter())
}

/// The root folder of a node of a pool.
fn node_folder(data: &Data, pool: &str, node: &str) -> Result<PathBuf, BatchError> {
    if data.pools.get(pool).is_none() {
        return Err(BatchError::not_found("PoolNotFound", "pool"));
    }
    data.nodes
        .get(&pool.to_lowercase())
        .and_then(|nodes| nodes.iter().find(|n| n.id == node))
        .map(|n| n.dir.clone())
        .ok_or_else(|| BatchError::not_found("NodeNotFound", "node"))
}

/// `DELETE /jobs/{job}/tasks/{task}/files/{path}` (`recursive=true` for a folder).
pub(super) async fn delete_task_file(
    State(state): State<Shared>,
    Path((job, task, path)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response, BatchError> {
    let folder = task_folder(&state.data(), &job, &task)?;
    delete_file(&folder, &path, &query_pairs(&request))
}

/// `DELETE /pools/{pool}/nodes/{node}/files/{path}` (`recursive=true` for a folder).
pub(super) async fn delete_node_file(
    State(state): State<Shared>,
    Path((pool, node, path)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response, BatchError> {
    let folder = node_folder(&state.data(), &pool, &node)?;
    delete_file(&folder, &path, &query_pairs(&request))
}

/// Deletes a file (or, with `recursive=true`, a folder and what it holds) inside `folder`;
/// never anything outside it.
fn delete_file(
    folder: &std::path::Path,
    path: &str,
    query: &[(String, String)],
) -> Result<Response, BatchError> {
    let recursive = query
        .iter()
        .any(|(k, v)| k == "recursive" && v.eq_ignore_ascii_case("true"));
    let missing = || {
        BatchError::new(
            StatusCode::NOT_FOUND,
            "FileNotFound",
            "The specified file does not exist.",
        )
        .with("FilePath", path.to_string())
    };
    let target = super::files::inside(folder, path).map_err(|_| missing())?;
    let (Ok(real_folder), Ok(meta)) = (folder.canonicalize(), std::fs::symlink_metadata(&target))
    else {
        return Err(missing());
    };
    // The parent is resolved (not the entry: a link is deleted, never what it points at).
    let parent_inside = target
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .is_some_and(|p| p.starts_with(&real_folder));
    if !parent_inside || target == folder {
        return Err(missing());
    }
    let removed = if meta.is_dir() {
        if recursive {
            std::fs::remove_dir_all(&target)
        } else {
            std::fs::remove_dir(&target).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::DirectoryNotEmpty, "not empty")
            })
        }
    } else {
        std::fs::remove_file(&target)
    };
    match removed {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Err(BatchError::new(
            StatusCode::CONFLICT,
            "DirectoryNotEmpty",
            "The folder is not empty; delete it with recursive=true.",
        )
        .with("FilePath", path.to_string())),
        Err(_) => Err(missing()),
    }
}

pub(super) async fn get_task_file(
    State(state): State<Shared>,
    Path((job, task, path)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response, BatchError> {
    let folder = task_folder(&state.data(), &job, &task)?;
    let url = format!("{}/jobs/{job}/tasks/{task}/files/{path}", state.url);
    file_response(&folder, &path, url, &request)
}

/// A file of a node (e.g. `startup/stderr.txt`, the start task's), relative to its root folder.
pub(super) async fn get_node_file(
    State(state): State<Shared>,
    Path((pool, node, path)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response, BatchError> {
    let folder = node_folder(&state.data(), &pool, &node)?;
    let url = format!("{}/pools/{pool}/nodes/{node}/files/{path}", state.url);
    file_response(&folder, &path, url, &request)
}

/// The file at `path` inside `folder`, with the service's file headers: never a file outside
/// the folder (an absolute path, `..`, or a link that leads out is not found), only the bytes
/// an `ocp-range: bytes=<first>-<last>` asks for, and no body for `HEAD`.
fn file_response(
    folder: &std::path::Path,
    path: &str,
    url: String,
    request: &Request,
) -> Result<Response, BatchError> {
    use std::io::{Read, Seek};
    let missing = || {
        BatchError::new(
            StatusCode::NOT_FOUND,
            "FileNotFound",
            "The specified file does not exist.",
        )
        .with("FilePath", path.to_string())
    };
    let file = super::files::inside(folder, path).map_err(|_| missing())?;
    let (Ok(real), Ok(real_folder)) = (file.canonicalize(), folder.canonicalize()) else {
        return Err(missing());
    };
    if !real.starts_with(&real_folder) || !real.is_file() {
        return Err(missing());
    }
    let mut opened = std::fs::File::open(&real).map_err(|_| missing())?;
    let meta = opened.metadata().map_err(|_| missing())?;
    let size = meta.len();
    let range = match request.headers().get("ocp-range").map(|v| v.to_str()) {
        None => None,
        Some(Ok(text)) => Some(parse_range(text, size).ok_or_else(|| {
            BatchError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The range specified is invalid for the current size of the resource.",
            )
            .with("Range", text.to_string())
        })?),
        Some(Err(_)) => {
            return Err(BatchError::new(
                StatusCode::BAD_REQUEST,
                "InvalidHeaderValue",
                "The value for one of the HTTP headers is not in the correct format.",
            )
            .with("HeaderName", "ocp-range"));
        }
    };
    let (start, len) = range.unwrap_or((0, size));
    let body = if request.method() == Method::HEAD {
        Body::empty()
    } else {
        let mut bytes = Vec::new();
        opened
            .seek(std::io::SeekFrom::Start(start))
            .and_then(|_| opened.by_ref().take(len).read_to_end(&mut bytes))
            .map_err(|_| missing())?;
        Body::from(bytes)
    };
    let created = meta
        .modified()
        .map(httpdate::fmt_http_date)
        .unwrap_or_default();
    // The service answers a ranged read with 200 (not 206): `ocp-range` is its own header, and
    // the SDKs accept 200 only.
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("content-length", HeaderValue::from(len));
    headers.insert(
        "ocp-batch-file-isdirectory",
        HeaderValue::from_static("false"),
    );
    headers.insert("ocp-batch-file-mode", HeaderValue::from_static("0100644"));
    for (name, value) in [
        ("ocp-batch-file-url", url),
        ("ocp-creation-time", created.clone()),
        ("last-modified", created),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    Ok(response)
}

/// `bytes=<first>-<last>` (or `bytes=<first>-`) of a file of `size` bytes, as (start, length).
fn parse_range(text: &str, size: u64) -> Option<(u64, u64)> {
    let (first, last) = text.trim().strip_prefix("bytes=")?.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = match last.trim() {
        "" => size.checked_sub(1)?,
        l => l.parse::<u64>().ok()?.min(size.checked_sub(1)?),
    };
    (first <= last).then(|| (first, last - first + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 10)));
        assert_eq!(parse_range("bytes=90-1000", 100), Some((90, 10)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=18446744073709551615-", 100), None);
    }
}
