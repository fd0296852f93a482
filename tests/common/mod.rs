//! Test helpers: a relay on 127.0.0.1:0 that stops when dropped, and client shortcuts.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use pairedit::client::{Client, ClientOptions};
use pairedit::relay::{self, CreatedRoom, RelayConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestRelay {
    pub addr: SocketAddr,
    /// Serves TLS (`https://`, `wss://`).
    pub tls: bool,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestRelay {
    pub async fn start() -> TestRelay {
        Self::with_config(RelayConfig::default()).await
    }

    pub async fn with_config(config: RelayConfig) -> TestRelay {
        Self::at("127.0.0.1:0".parse().expect("addr"), config).await
    }

    /// A relay on a given address (to restart one where its clients expect it).
    pub async fn at(addr: SocketAddr, config: RelayConfig) -> TestRelay {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let tls = config.tls.is_some();
        let handle = tokio::spawn(relay::run(listener, config, shutdown.clone()));
        TestRelay {
            addr,
            tls,
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn http(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub async fn create_room(&self) -> CreatedRoom {
        pairedit::client::http::create_room(&self.http(), None, None)
            .await
            .expect("create room")
    }

    pub async fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").await.1
    }

    /// Stops the relay and waits for it to finish (flushing rooms).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(WAIT, h)
                .await
                .expect("relay stops in time")
                .expect("relay task")
                .expect("relay run");
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A plain HTTP GET over a TCP socket: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A GET over TLS to a relay serving it, trusting `cert`'s CA: the body.
pub async fn https_get(relay: &TestRelay, cert: &TestCert, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = format!("https://{}", relay.addr);
    let mut s = pairedit::net::connect(&url, Some(&cert.client()))
        .await
        .expect("tls connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        relay.addr
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    // A TLS peer may close without close_notify; what was read is still the whole response.
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("response in time");
    let text = String::from_utf8_lossy(&buf).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

pub fn fast_opts(name: &str) -> ClientOptions {
    ClientOptions {
        name: name.to_string(),
        flush_interval: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

/// Connects and waits for the initial sync.
pub async fn join(code: &str, name: &str) -> Client {
    let c = Client::connect(code, fast_opts(name))
        .await
        .expect("connect");
    c.wait_synced(WAIT).await.expect("synced");
    c
}

/// Waits until the client's text equals `want`.
pub async fn wait_text(c: &Client, want: &str) {
    let res = c.wait_for("text", WAIT, |st| st.doc.text() == want).await;
    if res.is_err() {
        panic!(
            "text never became {:?}; it is {:?}",
            short(want),
            short(&c.text())
        );
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 200 {
        format!(
            "{}… ({} chars)",
            s.chars().take(200).collect::<String>(),
            s.chars().count()
        )
    } else {
        s.to_string()
    }
}

/// A metric's value from Prometheus text (the first sample whose line starts with `name`).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
}

pub type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare WebSocket to `/r/ROOM?token=TOKEN`, speaking whatever the test sends.
pub async fn raw_connect(relay: &TestRelay, room: &str, token: &str) -> RawWs {
    let url = format!("ws://{}/r/{room}?token={token}", relay.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("raw connect");
    ws
}

/// What a raw socket saw next: a decoded y-protocols message, or the close frame.
#[derive(Debug)]
pub enum Seen {
    Msg(yrs::sync::Message),
    Closed(Option<(u16, String)>),
}

/// Reads until `pred` accepts something; panics after [`WAIT`].
pub async fn raw_expect(ws: &mut RawWs, mut pred: impl FnMut(&Seen) -> bool) -> Seen {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("expected message never came");
        let seen: Vec<Seen> = match next {
            Some(Ok(Message::Binary(b))) => pairedit::protocol::decode_messages(&b)
                .expect("relay sends valid messages")
                .into_iter()
                .map(Seen::Msg)
                .collect(),
            Some(Ok(Message::Close(f))) => {
                vec![Seen::Closed(
                    f.map(|f| (u16::from(f.code), f.reason.to_string())),
                )]
            }
            Some(Ok(_)) => vec![],
            Some(Err(e)) => {
                eprintln!("raw socket error: {e}");
                vec![Seen::Closed(None)]
            }
            None => vec![Seen::Closed(None)],
        };
        for s in seen {
            let closed = matches!(s, Seen::Closed(_));
            if pred(&s) {
                return s;
            }
            if closed {
                panic!("connection closed before the expected message");
            }
        }
    }
}

pub async fn raw_send(ws: &mut RawWs, bytes: Vec<u8>) {
    use futures_util::SinkExt as _;
    ws.send(tokio_tungstenite::tungstenite::Message::binary(bytes))
        .await
        .expect("send");
}

/// Text pieces that stress offsets: multi-byte, astral, combining, CRLF, tabs.
pub const PIECES: &[&str] = &[
    "a", "bc", "é", "😀", "日本", "e\u{301}", "\n", "\t", "\r\n", "xyz ",
];

/// A deterministic random edit (insert 3 times in 4, else delete 1-4 chars) of a text of `len`
/// chars, from a xorshift seed that it advances.
pub fn random_edit(seed: &mut u64, len: usize) -> pairedit::sync::Edit {
    use pairedit::sync::Edit;
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let r = *seed;
    let at = (r as usize >> 8) % (len + 1);
    if r.is_multiple_of(4) && len > 0 {
        let at = at.min(len - 1);
        Edit::delete(at, ((r >> 40) as usize % 4 + 1).min(len - at))
    } else {
        Edit::insert(at, PIECES[(r >> 20) as usize % PIECES.len()])
    }
}

/// A private CA and a certificate it signed for `localhost` and 127.0.0.1, as PEM files in a
/// temporary directory: what a team running its own relay with TLS would have.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TestCert {
    pub fn new() -> TestCert {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pairedit test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        let cert = dir.path().join("relay.pem");
        let key = dir.path().join("relay.key");
        std::fs::write(&ca, ca_cert.pem()).expect("write ca");
        std::fs::write(&cert, leaf.pem()).expect("write cert");
        std::fs::write(&key, leaf_key.serialize_pem()).expect("write key");
        TestCert { dir, ca, cert, key }
    }

    /// One self-signed certificate marked as a CA, for `localhost` and 127.0.0.1: what
    /// `openssl req -x509 -subj /CN=localhost` makes. `ca` and `cert` are the same file.
    pub fn self_signed_ca() -> TestCert {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key_pair = KeyPair::generate().expect("key");
        let cert_pem = params.self_signed(&key_pair).expect("cert").pem();
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("relay.pem");
        let key = dir.path().join("relay.key");
        std::fs::write(&cert, cert_pem).expect("write cert");
        std::fs::write(&key, key_pair.serialize_pem()).expect("write key");
        TestCert {
            ca: cert.clone(),
            dir,
            cert,
            key,
        }
    }

    /// The relay side.
    pub fn server(&self) -> std::sync::Arc<rustls::ServerConfig> {
        pairedit::net::server_config(&self.cert, &self.key).expect("server tls config")
    }

    /// A client that trusts the CA.
    pub fn client(&self) -> std::sync::Arc<rustls::ClientConfig> {
        pairedit::net::client_config(Some(&self.ca)).expect("client tls config")
    }
}

/// Asserts a finished `pairedit` command succeeded and printed exactly `stdout`.
pub fn assert_printed(out: &std::process::Output, stdout: &[u8]) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(stdout),
        "printed byte for byte"
    );
    assert_eq!(out.stdout, stdout);
}

/// Starts `pairedit serve` with `args` (stderr piped, for tests that read it) and returns it with
/// the base URL its first stdout line names (`http://…` or `https://…`). Its stdout keeps being
/// drained so it never blocks on a full pipe.
pub async fn spawn_serve<I, S>(args: I) -> (tokio::process::Child, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pairedit"))
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn pairedit serve");
    let stdout = child.stdout.take().expect("serve stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("serve's first line in time")
        .expect("read serve's stdout")
        .expect("serve printed a line");
    let base = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line names the address: {first:?}"))
        .to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base)
}

/// Reads and discards a child's stderr in the background, so it never blocks on a full pipe.
pub fn drain_stderr(child: &mut tokio::process::Child) {
    if let Some(mut err) = child.stderr.take() {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut err, &mut tokio::io::sink()).await;
        });
    }
}
