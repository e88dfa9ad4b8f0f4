//! The one error type of Redwood: [`Error`] with an [`ErrorKind`], the operation that failed,
//! context pairs and the source.

use std::fmt;

use crate::types::task_error::TaskError;

/// A `Result` whose error is Redwood's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid (a wrong key, an unknown backend, an unparsable URL).
    Config,
    /// Arguments or results could not be encoded or decoded.
    Codec,
    /// The object store failed.
    Storage,
    /// A stored object was not found (a job, a result, a broadcast value).
    NotFound,
    /// The backend does not declare the capability an operation needs.
    Unsupported,
    /// The caller passed an invalid value (a task index out of range, a bad fraction, ...).
    InvalidInput,
    /// A remote task failed; [`Error::task_error`] has the details.
    TaskFailed,
    /// The job was cancelled before the task finished.
    Cancelled,
    /// A wait ran out of time.
    Timeout,
    /// The compute backend failed (a worker could not start, a pipe broke, ...).
    Backend,
    /// A task was sent to a worker running another binary or another function signature.
    Mismatch,
    /// Another client holds what this operation needs (a job it still runs).
    Conflict,
    /// Anything else; the message says what.
    Unexpected,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Config => "configuration error",
            ErrorKind::Codec => "encoding error",
            ErrorKind::Storage => "storage error",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::TaskFailed => "task failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Backend => "backend error",
            ErrorKind::Mismatch => "binary or signature mismatch",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unexpected => "unexpected error",
        };
        f.write_str(s)
    }
}

/// Redwood's error: a kind, a message, the operation, context pairs and an optional source.
pub struct Error {
    kind: ErrorKind,
    message: String,
    operation: &'static str,
    context: Vec<(&'static str, String)>,
    retryable: bool,
    /// The error code a remote service answered with (`JobExists`, `ServerBusy`, …).
    service_code: Option<Box<str>>,
    /// The store's client retried this request already (see [`Error::storage`]).
    transport_retried: bool,
    task: Option<Box<TaskError>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            operation: "",
            context: Vec::new(),
            retryable: false,
            service_code: None,
            transport_retried: false,
            task: None,
            source: None,
        }
    }

    /// Records the error code a remote service answered with, so callers branch on it as data
    /// rather than on the message text.
    pub fn with_service_code(mut self, code: impl Into<String>) -> Self {
        self.service_code = Some(code.into().into_boxed_str());
        self
    }

    /// The error code the remote service answered with, when one did (`JobExists`, say).
    pub fn service_code(&self) -> Option<&str> {
        self.service_code.as_deref()
    }

    /// The error for a failed remote task.
    pub fn from_task(task: TaskError) -> Self {
        let kind = match task.kind {
            crate::types::task_error::TaskErrorKind::Cancelled => ErrorKind::Cancelled,
            crate::types::task_error::TaskErrorKind::Refused => ErrorKind::Mismatch,
            _ => ErrorKind::TaskFailed,
        };
        let mut e = Error::new(kind, task.to_string());
        e.task = Some(Box::new(task));
        e
    }

    /// Sets the operation that failed (e.g. `"map"`, `"store.put"`).
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = operation;
        self
    }

    /// Adds a context pair (e.g. `("key", "jobs/abc/job.json")`).
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Sets the source error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Marks the error as retryable (a transient failure).
    pub fn set_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Whether the failed request was already retried by the store's client (object_store),
    /// so retrying it again would multiply requests.
    pub fn was_retried_by_transport(&self) -> bool {
        self.transport_retried
    }

    /// The message, without kind or context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The operation that failed, or `""`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The context pairs.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// The remote task failure, when this error is one.
    pub fn task_error(&self) -> Option<&TaskError> {
        self.task.as_deref()
    }

    /// Turns an object store error into a Redwood error for `operation` on `key`. Its text
    /// loses any URL query string (a SAS); remote failures other than a 4xx are transient (5xx,
    /// 408, 429, refused or cut connections, malformed responses), local ones never. A failure
    /// of a request object_store's own retry loop sent (its text starts "Error performing") was
    /// retried there already.
    pub fn storage(operation: &'static str, key: &str, err: object_store::Error) -> Self {
        let (kind, retryable) = match &err {
            object_store::Error::NotFound { .. } => (ErrorKind::NotFound, false),
            object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. } => (ErrorKind::Unsupported, false),
            object_store::Error::Generic { store, .. } => {
                let local = matches!(*store, "LocalFileSystem" | "InMemory");
                (ErrorKind::Storage, !local && !names_a_client_error(&err))
            }
            object_store::Error::JoinError { .. } => (ErrorKind::Storage, true),
            _ => (ErrorKind::Storage, false),
        };
        let text = crate::redact::transport_error(&err);
        let mut e = Error::new(kind, format!("{operation} failed"))
            .with_operation(operation)
            .with_context("key", key)
            .set_retryable(retryable);
        e.transport_retried = text.contains("Error performing ");
        e.with_source(Redacted(text))
    }

    /// An encoding or decoding error of a value of `what`.
    pub fn codec(what: &str, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::new(
            ErrorKind::Codec,
            format!("could not encode or decode {what}"),
        )
        .with_source(err)
    }
}

/// Whether an object store error reports a 4xx answer other than 408 and 429 (object_store
/// keeps the status only in its text).
fn names_a_client_error(err: &object_store::Error) -> bool {
    let text = err.to_string();
    let Some(at) = text.find("status code: ") else {
        return false;
    };
    let code = &text[at + "status code: ".len()..];
    code.starts_with('4') && !code.starts_with("408") && !code.starts_with("429")
}

/// An error source whose text had its secrets removed.
#[derive(Debug)]
struct Redacted(String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug prints like Display so that `main() -> Result` shows a readable error.
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if !self.operation.is_empty() {
            write!(f, " in {}", self.operation)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}: {v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_and_context() {
        let e = Error::new(ErrorKind::Config, "unknown backend `lokal`")
            .with_operation("Session::from_config")
            .with_context("key", "backend")
            .with_context("source", "Redwood.toml");
        let s = e.to_string();
        assert_eq!(
            s,
            "configuration error in Session::from_config: unknown backend `lokal` (key: backend, source: Redwood.toml)"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn storage_not_found_is_not_retryable() {
        let err = object_store::Error::NotFound {
            path: "a".into(),
            source: "gone".into(),
        };
        let e = Error::storage("get", "a", err);
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(!e.is_retryable());
        let generic = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "Content-Length Header missing from response".into(),
        };
        assert!(Error::storage("put", "b", generic).is_retryable());
        let local = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: "No space left on device".into(),
        };
        assert!(!Error::storage("put", "b", local).is_retryable());
        let bad_request = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "Server returned non-2xx status code: 400 Bad Request: InvalidHeaderValue"
                .into(),
        };
        assert!(!Error::storage("put", "b", bad_request).is_retryable());
        let throttled = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "Server returned non-2xx status code: 429 Too Many Requests".into(),
        };
        assert!(Error::storage("put", "b", throttled).is_retryable());
    }

    #[test]
    fn storage_errors_keep_no_signature() {
        let err = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "error sending request for url (http://127.0.0.1:9/c/k?sv=1&sig=SECRET)".into(),
        };
        let e = Error::storage("get", "k", err);
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert!(
            e.to_string().contains("http://127.0.0.1:9/c/k?<redacted>"),
            "{e}"
        );
    }
}
