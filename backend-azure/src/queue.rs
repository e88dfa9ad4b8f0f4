//! Azure Storage Queues (and Azurite's queue service) through Microsoft's `azure_storage_queue`
//! client, authorised by an account SAS Redwood mints from the account key (or the connection
//! string's own SAS). Each call has a tracing span and Redwood's one storage retry policy; errors
//! name the account, the queue and the operation, never a signature.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use azure_core::http::{ClientOptions, RequestContent, RetryOptions, Transport, XmlFormat};
use azure_storage_queue::QueueClient;
use azure_storage_queue::models::{
    QueueClientReceiveMessagesOptions, QueueClientSendMessageOptions, QueueMessage,
};
use tracing::Instrument;

use redwood_core::retry::RetryPolicy;
use redwood_core::{Error, ErrorKind, Result};

use crate::account::{AccountSettings, parse_connection_string};
use crate::sas::account_sas;

/// The REST version the client speaks (Azure and Azurite both serve it).
const QUEUE_API_VERSION: &str = "2021-08-06";
/// How long a minted SAS is valid; a client re-mints after a day.
const SAS_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
const SAS_RENEW_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The most messages one receive returns (the service's limit).
pub const MAX_RECEIVE: u32 = 32;
/// The largest message text the service takes (64 KiB).
pub const MAX_MESSAGE_TEXT: usize = 64 * 1024;

/// One storage account's queue service.
#[derive(Clone)]
pub struct QueueService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    account: String,
    endpoint: String,
    key: Option<String>,
    /// A SAS given with the account (used as is), when there is no key.
    given_sas: Option<String>,
    http: Arc<reqwest::Client>,
    /// The SAS in use and when it was minted.
    minted: RwLock<(String, Instant)>,
}

impl fmt::Debug for QueueService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueService")
            .field("account", &self.inner.account)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl QueueService {
    /// The queue service of the account a connection string names.
    pub fn from_connection_string(connection_string: &str) -> Result<QueueService> {
        QueueService::new(&parse_connection_string(connection_string)?)
    }

    /// The queue service of `settings`' account: it needs a queue endpoint and a key or SAS.
    pub fn new(settings: &AccountSettings) -> Result<QueueService> {
        let account = settings.account.clone().unwrap_or_default();
        let endpoint = settings.queue_endpoint.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "the storage account has no queue endpoint (give AccountName or QueueEndpoint)",
            )
        })?;
        if settings.key.is_none() && settings.sas.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the queue service of account `{account}` needs an account key or a SAS \
                     (AccountKey= or SharedAccessSignature= in the connection string)"
                ),
            ));
        }
        let http = crate::http_client::http_client(Some(Duration::from_secs(60)), false)?;
        let inner = ServiceInner {
            account,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            key: settings.key.clone(),
            given_sas: settings.sas.clone(),
            http: Arc::new(http),
            minted: RwLock::new((String::new(), Instant::now())),
        };
        let sas = inner.mint()?;
        if let Ok(mut m) = inner.minted.write() {
            *m = (sas, Instant::now());
        }
        Ok(QueueService {
            inner: Arc::new(inner),
        })
    }

    /// The account's name.
    pub fn account(&self) -> &str {
        &self.inner.account
    }

    /// The queue service's endpoint (no trailing `/`).
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// A SAS (query string) for a process that only takes messages from queues of this
    /// account and puts failed ones in another (read, add, update, process), valid until
    /// `expiry`; the SAS this service was given when it has no key.
    pub fn worker_sas(&self, expiry: SystemTime) -> Result<String> {
        match (&self.inner.key, &self.inner.given_sas) {
            (Some(key), _) => account_sas(&self.inner.account, key, "q", "raup", expiry),
            (None, _) => self.inner.sas(),
        }
    }

    /// A queue of this account. Its name must be valid (3-63 lower-case letters, digits and
    /// single hyphens, starting and ending with a letter or digit).
    pub fn queue(&self, name: &str) -> Result<Queue> {
        if !valid_queue_name(name) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`{name}` is not a valid queue name (3-63 lower-case letters, digits and \
                     single hyphens, starting and ending with a letter or digit)"
                ),
            ));
        }
        Ok(Queue {
            service: self.clone(),
            name: name.to_string(),
            client: RwLock::new(None),
        })
    }
}

impl ServiceInner {
    /// A SAS for the whole queue service: the given one, or one minted with the key.
    fn mint(&self) -> Result<String> {
        match (&self.key, &self.given_sas) {
            (Some(key), _) => account_sas(
                &self.account,
                key,
                "q",
                "rwdaup",
                SystemTime::now() + SAS_LIFETIME,
            ),
            (None, Some(sas)) => Ok(sas.clone()),
            (None, None) => Err(Error::new(
                ErrorKind::Config,
                "no key or SAS for the queue service",
            )),
        }
    }

    /// The SAS to use now, re-minted when old.
    fn sas(&self) -> Result<String> {
        if let Ok(m) = self.minted.read()
            && m.1.elapsed() < SAS_RENEW_AFTER
        {
            return Ok(m.0.clone());
        }
        let sas = self.mint()?;
        if let Ok(mut m) = self.minted.write() {
            *m = (sas.clone(), Instant::now());
        }
        Ok(sas)
    }
}

/// A message as received: its text and what it takes to delete or hide it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id.
    pub id: String,
    /// The receipt of this receive (needed to delete or update the message).
    pub pop_receipt: String,
    /// The text, as stored (not decoded).
    pub text: String,
    /// How often it was received, this time included.
    pub dequeue_count: u32,
    /// When it was put in the queue.
    pub insertion_time: Option<SystemTime>,
    /// When it expires.
    pub expiration_time: Option<SystemTime>,
    /// When it becomes visible again unless deleted or updated.
    pub next_visible_time: Option<SystemTime>,
}

/// One queue.
pub struct Queue {
    service: QueueService,
    name: String,
    /// The client and the SAS it was built with.
    client: RwLock<Option<(Arc<QueueClient>, String)>>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("account", &self.service.inner.account)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client for the current SAS.
    fn client(&self) -> Result<Arc<QueueClient>> {
        let sas = self.service.inner.sas()?;
        if let Ok(c) = self.client.read()
            && let Some((client, built_with)) = c.as_ref()
            && *built_with == sas
        {
            return Ok(client.clone());
        }
        let url = format!("{}/{}?{sas}", self.service.inner.endpoint, self.name);
        let url = azure_core::http::Url::parse(&url).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "the queue endpoint {} is not a URL: {e}",
                    self.service.inner.endpoint
                ),
            )
        })?;
        let options = azure_storage_queue::QueueClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions::none(),
                transport: Some(Transport::new(self.service.inner.http.clone())),
                ..Default::default()
            },
            version: QUEUE_API_VERSION.to_string(),
        };
        let client = Arc::new(
            QueueClient::new(url, None, Some(options)).map_err(|e| self.error("open", e))?,
        );
        if let Ok(mut c) = self.client.write() {
            *c = Some((client.clone(), sas));
        }
        Ok(client)
    }

    /// Runs one call with the storage retry policy, in a span.
    async fn call<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: Fn(Arc<QueueClient>) -> Fut,
        Fut: std::future::Future<Output = azure_core::Result<T>>,
    {
        let span = tracing::debug_span!("azure.queue", op = operation, queue = %self.name);
        RetryPolicy::STORAGE
            .run(operation, || async {
                let client = self.client()?;
                f(client).await.map_err(|e| self.error(operation, e))
            })
            .instrument(span)
            .await
    }

    /// Redwood's error for a failed call: the operation, account and queue, the status and the
    /// service's code; transient when worth another try. Never the URL (it carries the SAS).
    fn error(&self, operation: &'static str, e: azure_core::Error) -> Error {
        use azure_core::error::ErrorKind as Kind;
        let (why, transient, missing) = match e.kind() {
            Kind::HttpResponse {
                status, error_code, ..
            } => {
                let code = u16::from(*status);
                (
                    format!(
                        "HTTP {code}{}",
                        error_code
                            .as_deref()
                            .map(|c| format!(" {c}"))
                            .unwrap_or_default()
                    ),
                    crate::blob::is_transient_status(code),
                    code == 404,
                )
            }
            Kind::Io | Kind::Connection => (
                format!(
                    "the connection failed ({})",
                    redwood_core::redact::transport_error(&e)
                ),
                true,
                false,
            ),
            _ => (e.to_string(), false, false),
        };
        let why = redwood_core::redact::secrets(&why);
        let kind = if missing {
            ErrorKind::NotFound
        } else {
            ErrorKind::Storage
        };
        Error::new(
            kind,
            format!(
                "queue `{}` of account `{}`: cannot {}: {why}",
                self.name,
                self.service.inner.account,
                operation.trim_start_matches("queue.")
            ),
        )
        .with_operation(operation)
        .set_retryable(transient)
    }

    /// Creates the queue; one that exists already is fine.
    pub async fn create(&self) -> Result<()> {
        match self
            .call("queue.create", |c| async move { c.create(None).await })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.message().contains("QueueAlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the queue and its messages; a queue already gone is fine.
    pub async fn delete_queue(&self) -> Result<()> {
        match self
            .call("queue.delete", |c| async move { c.delete(None).await })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes every message.
    pub async fn clear(&self) -> Result<()> {
        self.call("queue.clear", |c| async move { c.clear(None).await })
            .await
            .map(|_| ())
    }

    /// Puts a message (its text as given: encode it first if readers expect base64),
    /// invisible for `hidden` first. It never expires. The message returned holds its id and
    /// receipt, to delete it or show it sooner.
    pub async fn send(&self, text: &str, hidden: Duration) -> Result<Message> {
        if text.len() > MAX_MESSAGE_TEXT {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a message of {} bytes is larger than a queue takes ({MAX_MESSAGE_TEXT})",
                    text.len()
                ),
            ));
        }
        let hidden = i32::try_from(hidden.as_secs()).unwrap_or(i32::MAX);
        let sent = self
            .call("queue.send", |c| async move {
                let message = QueueMessage {
                    message_text: Some(text.to_string()),
                };
                let content: RequestContent<QueueMessage, XmlFormat> = message.try_into()?;
                let options = QueueClientSendMessageOptions {
                    message_time_to_live: Some(-1),
                    visibility_timeout: (hidden > 0).then_some(hidden),
                    ..Default::default()
                };
                c.send_message(content, Some(options)).await?.into_model()
            })
            .await?;
        let sent = sent
            .items
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|m| {
                Some(Message {
                    id: m.message_id?,
                    pop_receipt: m.pop_receipt?,
                    text: text.to_string(),
                    dequeue_count: 0,
                    insertion_time: m.insertion_time.map(SystemTime::from),
                    expiration_time: m.expiration_time.map(SystemTime::from),
                    next_visible_time: m.time_next_visible.map(SystemTime::from),
                })
            });
        sent.ok_or_else(|| {
            Error::new(
                ErrorKind::Storage,
                format!(
                    "queue `{}`: a sent message came back without its receipt",
                    self.name
                ),
            )
        })
    }

    /// Receives up to `max` messages (at most 32), each hidden from other receivers for
    /// `visibility` (at least a second).
    pub async fn receive(&self, max: u32, visibility: Duration) -> Result<Vec<Message>> {
        let max = max.clamp(1, MAX_RECEIVE) as i32;
        let visibility = i32::try_from(visibility.as_secs().max(1)).unwrap_or(i32::MAX);
        let received = self
            .call("queue.receive", |c| async move {
                let options = QueueClientReceiveMessagesOptions {
                    number_of_messages: Some(max),
                    visibility_timeout: Some(visibility),
                    ..Default::default()
                };
                c.receive_messages(Some(options)).await?.into_model()
            })
            .await?;
        Ok(received
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Message {
                    id: m.message_id?,
                    pop_receipt: m.pop_receipt?,
                    text: m.message_text.unwrap_or_default(),
                    dequeue_count: u32::try_from(m.dequeue_count.unwrap_or(1)).unwrap_or(1),
                    insertion_time: m.insertion_time.map(SystemTime::from),
                    expiration_time: m.expiration_time.map(SystemTime::from),
                    next_visible_time: m.time_next_visible.map(SystemTime::from),
                })
            })
            .collect())
    }

    /// Deletes a received message. `NotFound` when it is gone or was received again since
    /// (its receipt no longer holds).
    pub async fn delete(&self, message: &Message) -> Result<()> {
        let (id, pop) = (message.id.as_str(), message.pop_receipt.as_str());
        self.call("queue.delete_message", |c| async move {
            c.delete_message(id, pop, None).await
        })
        .await
        .map(|_| ())
    }

    /// Hides a received message for `visibility` more (0: visible now); returns the message
    /// with its new receipt.
    pub async fn hide(&self, message: &Message, visibility: Duration) -> Result<Message> {
        let (id, pop) = (message.id.as_str(), message.pop_receipt.as_str());
        let secs = i32::try_from(visibility.as_secs()).unwrap_or(i32::MAX);
        let headers = self
            .call("queue.update_message", |c| async move {
                c.update_message(id, pop, secs, None)
                    .await
                    .map(|r| r.headers().clone())
            })
            .await?;
        let pop_receipt = headers
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                "x-ms-popreceipt",
            ))
            .map(str::to_string)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Storage,
                    format!("queue `{}`: an update gave no new receipt", self.name),
                )
            })?;
        Ok(Message {
            pop_receipt,
            next_visible_time: Some(SystemTime::now() + visibility),
            ..message.clone()
        })
    }

    /// How many messages the queue holds, as the service estimates it.
    pub async fn approximate_count(&self) -> Result<u64> {
        use azure_storage_queue::models::QueueClientGetPropertiesResultHeaders;
        let count = self
            .call("queue.properties", |c| async move {
                c.get_properties(None).await?.approximate_messages_count()
            })
            .await?;
        Ok(count.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }
}

/// Whether `name` is a valid queue name.
pub fn valid_queue_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert!(valid_queue_name("redwood-tasks"));
        assert!(valid_queue_name("redwood-tasks-poison"));
        assert!(!valid_queue_name("Tasks"));
        assert!(!valid_queue_name("ab"));
        assert!(!valid_queue_name("a--b"));
        assert!(!valid_queue_name("tasks-"));
    }

    #[test]
    fn a_service_needs_an_endpoint_and_a_credential() {
        let e =
            QueueService::from_connection_string("QueueEndpoint=http://127.0.0.1:1/a").unwrap_err();
        assert!(
            e.to_string().contains("needs an account key or a SAS"),
            "{e}"
        );
        let s = QueueService::from_connection_string(
            "AccountName=a;AccountKey=c2VjcmV0;QueueEndpoint=http://127.0.0.1:1/a",
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("c2VjcmV0"));
        let e = s.queue("Bad_Name").unwrap_err();
        assert!(e.to_string().contains("not a valid queue name"), "{e}");
    }
}
