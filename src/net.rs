//! Byte streams to and from a relay: plain TCP, or TLS (rustls with the `ring` provider).
//!
//! The client side opens one stream for a `ws://`/`http://` or `wss://`/`https://` URL, and the
//! WebSocket handshake and the small HTTP API both run over it. Certificates are checked against
//! the system's trust store plus the Mozilla roots, plus any CA the user passes (`--ca-cert`) for a
//! relay with a self-signed or private certificate. The server side is an axum [`Listener`] that
//! does TLS handshakes off the accept path, so one slow or hostile handshake never blocks others.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// A connection to a relay: plain TCP or TLS over TCP.
pub type NetStream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// How long a TLS handshake may take, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// The relay's TLS setup from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1), with a message that names the file when either is wrong.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = read_certs(cert)?;
    let key_bytes =
        std::fs::read(key).with_context(|| format!("cannot read private key {}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} holds no usable private key (expected PEM: -----BEGIN PRIVATE KEY-----): {e}",
            key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "the key {} does not fit the certificate {}",
                key.display(),
                cert.display()
            )
        })?;
    // WebSockets upgrade from HTTP/1.1; that is all the relay serves.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client's TLS setup: system roots and Mozilla's roots, plus the PEM CA file `extra_ca`
/// (for a relay with a self-signed or private certificate). Without `extra_ca` it is built once
/// per process.
pub fn client_config(extra_ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let Some(extra_ca) = extra_ca else {
        if let Some(config) = DEFAULT.get() {
            return Ok(config.clone());
        }
        let config = build_client_config(&[])?;
        return Ok(DEFAULT.get_or_init(|| config).clone());
    };
    build_client_config(&read_certs(extra_ca)?)
}

fn build_client_config(extra: &[CertificateDer<'static>]) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    // Unreadable system certificates are skipped (the Mozilla roots still apply).
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    for cert in extra {
        roots
            .add(cert.clone())
            .context("the --ca-cert file holds a certificate that cannot be a trust anchor")?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("cannot set up certificate checks")?;
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = if extra.is_empty() {
        builder.with_webpki_verifier(webpki).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki {
                webpki,
                pinned: extra.to_vec(),
            }))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Certificate checks with `--ca-cert`: the usual chain-to-a-root check (the file's certificates
/// are roots too), and, failing that, the relay's certificate accepted if it *is* one of the
/// file's certificates, byte for byte. The second case is the self-signed certificate that
/// `openssl req -x509` makes (marked as a CA, which the chain check refuses to accept as a
/// server's own); pinned this way it proves as much as an SSH host key. The handshake signature
/// is still checked against that certificate's key, so only its private key's holder passes.
#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Why a stream could not be opened: the TLS case is kept apart because retrying cannot fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("bad relay URL {0:?}")]
    Url(String),
}

/// Opens a stream to the host of `url` (`ws`, `wss`, `http` or `https`), with TLS for `wss` and
/// `https`. `tls` defaults to [`client_config(None)`](client_config).
pub async fn connect(
    url: &str,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<NetStream, ConnectError> {
    let parsed = url::Url::parse(url).map_err(|_| ConnectError::Url(url.to_string()))?;
    let secure = match parsed.scheme() {
        "wss" | "https" => true,
        "ws" | "http" => false,
        _ => return Err(ConnectError::Url(url.to_string())),
    };
    let host = parsed
        .host()
        .ok_or_else(|| ConnectError::Url(url.to_string()))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| ConnectError::Url(url.to_string()))?;
    let (addr, name) = match host {
        url::Host::Domain(d) => (format!("{d}:{port}"), ServerName::try_from(d.to_string())),
        url::Host::Ipv4(ip) => (
            SocketAddr::from((ip, port)).to_string(),
            Ok(ServerName::IpAddress(std::net::IpAddr::V4(ip).into())),
        ),
        url::Host::Ipv6(ip) => (
            SocketAddr::from((ip, port)).to_string(),
            Ok(ServerName::IpAddress(std::net::IpAddr::V6(ip).into())),
        ),
    };
    let tcp = TcpStream::connect(&addr).await?;
    // Keystrokes are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    if !secure {
        return Ok(Either::Left(tcp));
    }
    let name = name.map_err(|_| ConnectError::Url(url.to_string()))?;
    let config = match tls {
        Some(c) => c.clone(),
        None => client_config(None).map_err(|e| ConnectError::Tls(format!("{e:#}")))?,
    };
    let handshake = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => Err(ConnectError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        ))),
        Ok(Ok(stream)) => Ok(Either::Right(stream)),
        Ok(Err(e)) => Err(tls_error(e)),
    }
}

/// A failed TLS handshake, explained. Certificate problems get a hint; other I/O stays I/O (the
/// relay may just be restarting).
fn tls_error(e: io::Error) -> ConnectError {
    let is_tls = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if !is_tls {
        return ConnectError::Io(e);
    }
    let reason = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(explain)
        .unwrap_or_else(|| e.to_string());
    if reason.contains("certificate") {
        ConnectError::Tls(format!(
            "{reason} (for a relay with a self-signed or private certificate, pass that \
             certificate or its CA with --ca-cert FILE or PAIREDIT_CA_CERT)"
        ))
    } else {
        ConnectError::Tls(reason)
    }
}

/// rustls's certificate errors in words.
fn explain(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "the relay's certificate is not signed by anyone this machine trusts".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the relay's certificate is for another host name".into()
            }
            C::Expired | C::ExpiredContext { .. } => "the relay's certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the relay's certificate is not valid yet (check the clocks)".into()
            }
            C::Revoked => "the relay's certificate was revoked".into(),
            C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                "the relay's certificate is a self-signed CA certificate".into()
            }
            other => format!("the relay's certificate was refused: {other:?}"),
        },
        other => other.to_string(),
    }
}

/// Incoming TLS connections, for `axum::serve`. A background task accepts TCP connections and
/// runs each handshake in its own task (bounded in time and in number), handing finished
/// streams to [`Listener::accept`](axum::serve::Listener::accept).
pub struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// Handshakes in flight at once; more wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 512;

impl TlsListener {
    /// Starts accepting on `tcp`; stops when `shutdown` is cancelled. `on_failure` is called for
    /// every failed or timed-out handshake (for metrics).
    pub fn new(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        shutdown: CancellationToken,
        on_failure: impl Fn() + Send + Sync + 'static,
    ) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let on_failure = Arc::new(on_failure);
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = tcp.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off briefly, as axum does.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx, on_failure) = (acceptor.clone(), tx.clone(), on_failure.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                            on_failure();
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer} timed out");
                            on_failure();
                        }
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // Shut down: nothing more will come; axum's graceful shutdown ends the serve loop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
