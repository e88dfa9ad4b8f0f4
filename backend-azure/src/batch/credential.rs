//! Microsoft Entra ID for the Batch API: an `azure_identity` credential chosen by configuration,
//! and a cache that asks it for a new bearer token only shortly before the current one expires.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use azure_core::credentials::TokenCredential;
use azure_core::time::OffsetDateTime;
use azure_identity::{
    AzureCliCredential, ClientSecretCredential, DeveloperToolsCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential,
};
use redwood_core::{Error, ErrorKind, Result};
use tokio::sync::Mutex;

/// The scope of a token for the Batch data plane.
pub const BATCH_SCOPE: &str = "https://batch.core.windows.net//.default";

/// A token is renewed when it has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// Which Entra ID credential signs Batch requests (the `auth` setting of a region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// A service principal's secret: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// The managed identity of the VM, App Service or container the client runs in; a
    /// user-assigned one when a client id is given (`AZURE_CLIENT_ID`).
    ManagedIdentity,
    /// Kubernetes workload identity: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity,
    /// The account logged in with `az login`.
    AzureCli,
    /// The Azure CLI, then the Azure Developer CLI (`azd auth login`).
    DeveloperTools,
    /// The first that applies: client secret when its variables are set, then workload identity
    /// when a federated token file is set, then developer tools; managed identity when
    /// `IDENTITY_ENDPOINT` or `MSI_ENDPOINT` says the client runs on Azure.
    Auto,
}

impl CredentialKind {
    /// Parses the `auth` setting; the error lists the accepted values.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(
            match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
                "client-secret" => CredentialKind::ClientSecret,
                "managed-identity" => CredentialKind::ManagedIdentity,
                "workload-identity" => CredentialKind::WorkloadIdentity,
                "azure-cli" => CredentialKind::AzureCli,
                "developer-tools" => CredentialKind::DeveloperTools,
                "auto" | "entra" => CredentialKind::Auto,
                other => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "`auth = \"{other}\"` is not a Batch credential: use shared-key, \
                         client-secret, managed-identity, workload-identity, azure-cli, \
                         developer-tools or auto"
                        ),
                    ));
                }
            },
        )
    }

    /// Builds the credential, reading what it needs from the environment.
    pub fn build(&self) -> Result<Arc<dyn TokenCredential>> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let failed = |what: &str, e: azure_core::Error| {
            Error::new(
                ErrorKind::Config,
                format!("cannot set up the {what} credential for Batch: {e}"),
            )
        };
        let need = |name: &str, what: &str| {
            env(name).ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("the {what} credential for Batch needs {name} to be set"),
                )
            })
        };
        Ok(match self {
            CredentialKind::ClientSecret => {
                let what = "client-secret";
                ClientSecretCredential::new(
                    &need("AZURE_TENANT_ID", what)?,
                    need("AZURE_CLIENT_ID", what)?,
                    need("AZURE_CLIENT_SECRET", what)?.into(),
                    None,
                )
                .map_err(|e| failed(what, e))?
            }
            CredentialKind::ManagedIdentity => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: env("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
                    ..Default::default()
                };
                ManagedIdentityCredential::new(Some(options))
                    .map_err(|e| failed("managed-identity", e))?
            }
            CredentialKind::WorkloadIdentity => {
                WorkloadIdentityCredential::new(None).map_err(|e| failed("workload-identity", e))?
            }
            CredentialKind::AzureCli => {
                AzureCliCredential::new(None).map_err(|e| failed("azure-cli", e))?
            }
            CredentialKind::DeveloperTools => {
                DeveloperToolsCredential::new(None).map_err(|e| failed("developer-tools", e))?
            }
            CredentialKind::Auto => {
                let kind = if env("AZURE_CLIENT_SECRET").is_some() {
                    CredentialKind::ClientSecret
                } else if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
                    CredentialKind::WorkloadIdentity
                } else if env("IDENTITY_ENDPOINT").is_some() || env("MSI_ENDPOINT").is_some() {
                    CredentialKind::ManagedIdentity
                } else {
                    CredentialKind::DeveloperTools
                };
                tracing::debug!(credential = ?kind, "Batch credential chosen");
                return kind.build();
            }
        })
    }
}

/// A bearer token source for one Batch account: the credential and its last token.
#[derive(Clone)]
pub(crate) struct TokenSource {
    credential: Arc<dyn TokenCredential>,
    cached: Arc<Mutex<Option<(String, OffsetDateTime)>>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub(crate) fn new(credential: Arc<dyn TokenCredential>) -> Self {
        TokenSource {
            credential,
            cached: Arc::default(),
        }
    }

    /// Drops the cached token (the service refused it), so the next request gets a new one.
    pub(crate) async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    /// The `Authorization` value, and whether the token was just issued: the cached token, or a
    /// new one when it expires soon.
    pub(crate) async fn authorization(&self, account: &str) -> Result<(String, bool)> {
        let mut cached = self.cached.lock().await;
        let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
        if let Some((token, expires)) = cached.as_ref()
            && *expires > renew_at
        {
            return Ok((format!("Bearer {token}"), false));
        }
        let span = tracing::info_span!("batch.get_token", account);
        let _enter = span.enter();
        let token = self
            .credential
            .get_token(&[BATCH_SCOPE], None)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("cannot get an Entra ID token for Batch account `{account}`: {e}"),
                )
            })?;
        let secret = token.token.secret().to_string();
        *cached = Some((secret.clone(), token.expires_on));
        Ok((format!("Bearer {secret}"), true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_settings_parse_and_unknown_ones_are_named() {
        assert_eq!(
            CredentialKind::parse("managed_identity").unwrap(),
            CredentialKind::ManagedIdentity
        );
        assert_eq!(
            CredentialKind::parse("Azure-CLI").unwrap(),
            CredentialKind::AzureCli
        );
        let e = CredentialKind::parse("password").unwrap_err().to_string();
        assert!(
            e.contains("password") && e.contains("workload-identity"),
            "{e}"
        );
    }
}
