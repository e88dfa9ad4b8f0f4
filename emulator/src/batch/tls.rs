//! HTTPS for the emulator's endpoints (`--tls`): a certificate made at start for `127.0.0.1`
//! and `localhost`, written to a file for clients to trust (`REQUESTS_CA_BUNDLE`,
//! `SSL_CERT_FILE`, …). Azure SDKs send Entra ID tokens over `https` only, so an SDK program that
//! signs in that way needs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take over its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The emulator's certificate: its file and the server configuration that presents it.
pub(super) struct Tls {
    dir: tempfile::TempDir,
    config: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// Makes a self-signed certificate for `127.0.0.1` and `localhost`.
    pub(super) fn generate() -> std::io::Result<Tls> {
        let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let made = rcgen::generate_simple_self_signed(names).map_err(|e| other(&e))?;
        let dir = tempfile::Builder::new()
            .prefix("redwood-batch-tls-")
            .tempdir()?;
        std::fs::write(dir.path().join("cert.pem"), made.cert.pem())?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .map_err(|e| other(&e))?;
        Ok(Tls {
            dir,
            config: Arc::new(config),
        })
    }

    /// The certificate (PEM), for clients to trust.
    pub(super) fn certificate(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// A listener that hands out connections once their handshake is done (handshakes run
    /// apart, so a client that stalls holds up no other).
    pub(super) fn listener(&self, tcp: TcpListener) -> std::io::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(self.config.clone());
        let (ready, connections) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = tcp.accept() => accepted,
                    () = ready.closed() => return, // the endpoint stopped
                };
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (acceptor, ready) = (acceptor.clone(), ready.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { addr, connections })
    }
}

/// Connections of an HTTPS endpoint, for `axum::serve`.
pub(super) struct TlsListener {
    addr: SocketAddr,
    connections: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop is gone: no connection will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
