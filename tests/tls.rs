//! TLS: a relay with `--tls-cert/--tls-key` gives `wss://` codes; clients that trust its CA type
//! and watch over them exactly as over plain TCP; a client that does not trust it is refused
//! with a clear, permanent error; plain TCP to a TLS port never gets in and the relay goes on.

mod common;

use std::time::Duration;

use common::*;
use pairedit::client::{Client, ClientError, ClientOptions};
use pairedit::relay::RelayConfig;
use pairedit::sync::Edit;

async fn tls_relay(cert: &TestCert) -> TestRelay {
    TestRelay::with_config(RelayConfig {
        tls: Some(cert.server()),
        ..RelayConfig::default()
    })
    .await
}

fn trusting(cert: &TestCert, name: &str) -> ClientOptions {
    ClientOptions {
        tls: Some(cert.client()),
        ..fast_opts(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_and_a_viewer_work_over_wss() {
    let cert = TestCert::new();
    let relay = tls_relay(&cert).await;
    let room = pairedit::client::http::create_room(&relay.http(), None, Some(&cert.client()))
        .await
        .expect("create a room over https");
    assert!(room.write_code.starts_with("wss://"), "{}", room.write_code);
    assert!(room.view_code.starts_with("wss://"), "{}", room.view_code);

    let connect = |code: String, name: &'static str| {
        let opts = trusting(&cert, name);
        async move {
            let c = Client::connect(&code, opts)
                .await
                .expect("connect over wss");
            c.wait_synced(WAIT).await.expect("synced");
            c
        }
    };
    let a = connect(room.write_code.clone(), "a").await;
    let b = connect(room.write_code.clone(), "b").await;
    let viewer = connect(room.view_code.clone(), "v").await;

    let mut seed = 7u64;
    for i in 0..200 {
        let w = if i % 2 == 0 { &a } else { &b };
        let edit = random_edit(&mut seed, w.state().doc.len_chars());
        w.edit(&edit).expect("edit");
        if i % 25 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    a.flush();
    b.flush();
    // Both writers converge byte for byte, and the viewer renders the same text.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.text() != b.text() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writers never converged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want = a.text();
    assert!(want.chars().count() > 50);
    wait_text(&viewer, &want).await;

    // The viewer still cannot write: the relay drops it, over TLS as over TCP.
    assert!(matches!(
        viewer.edit(&Edit::insert(0, "nope")),
        Err(ClientError::ReadOnly)
    ));
    let metrics = common::https_get(&relay, &cert, "/metrics").await;
    assert!(
        metrics.contains("pairedit_connections{role=\"viewer\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_clear_permanent_error() {
    let cert = TestCert::new();
    let relay = tls_relay(&cert).await;
    let room = pairedit::client::http::create_room(&relay.http(), None, Some(&cert.client()))
        .await
        .expect("create");
    // Default trust (system + Mozilla roots) does not include our private CA.
    let err = match Client::connect(&room.write_code, fast_opts("x")).await {
        Ok(_) => panic!("connected to a relay whose certificate nobody vouches for"),
        Err(e) => e,
    };
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    assert!(err.is_permanent(), "retrying cannot fix a certificate");
    let msg = err.to_string();
    assert!(
        msg.contains("certificate") && msg.contains("--ca-cert"),
        "{msg}"
    );

    // The same for creating a room.
    let err = pairedit::client::http::create_room(&relay.http(), None, None)
        .await
        .expect_err("untrusted https");
    assert!(format!("{err:#}").contains("--ca-cert"), "{err:#}");

    // A different CA does not help either.
    let other = TestCert::new();
    let opts = ClientOptions {
        tls: Some(other.client()),
        ..fast_opts("y")
    };
    assert!(matches!(
        Client::connect(&room.write_code, opts).await,
        Err(ClientError::Tls(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_to_a_tls_relay_is_refused_and_the_relay_goes_on() {
    let cert = TestCert::new();
    let relay = tls_relay(&cert).await;
    let room = pairedit::client::http::create_room(&relay.http(), None, Some(&cert.client()))
        .await
        .expect("create");
    // The same code with ws:// (someone dropped the s): no session, an error.
    let plain = room.write_code.replacen("wss://", "ws://", 1);
    let opts = ClientOptions {
        connect_timeout: Duration::from_secs(5),
        ..fast_opts("plain")
    };
    assert!(Client::connect(&plain, opts).await.is_err());
    // Raw garbage and a half-open connection that never says hello.
    {
        use tokio::io::AsyncWriteExt as _;
        let mut s = tokio::net::TcpStream::connect(relay.addr)
            .await
            .expect("tcp");
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    }
    let _idle = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("tcp");
    // A trusting client still gets in while the idle one sits in its handshake.
    let ok = Client::connect(&room.write_code, trusting(&cert, "ok"))
        .await
        .expect("connect");
    ok.wait_synced(WAIT).await.expect("synced");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = common::https_get(&relay, &cert, "/metrics").await;
        let failures = metric(&metrics, "pairedit_tls_handshake_failures_total");
        if failures >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "failed handshakes not counted: {failures}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The binary: `serve --tls-cert --tls-key` says https on its first line; `room create` and `cat`
/// reach it with `--ca-cert`, and say what to do without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_joins_over_tls() {
    const BIN: &str = env!("CARGO_BIN_EXE_pairedit");
    let run = |args: Vec<String>| async move {
        tokio::time::timeout(WAIT, tokio::process::Command::new(BIN).args(args).output())
            .await
            .expect("finished in time")
            .expect("run pairedit")
    };
    let cert = TestCert::new();
    let path = |p: &std::path::Path| p.display().to_string();
    let (mut serve, base) = spawn_serve([
        std::ffi::OsStr::new("--listen"),
        "127.0.0.1:0".as_ref(),
        "--tls-cert".as_ref(),
        cert.cert.as_os_str(),
        "--tls-key".as_ref(),
        cert.key.as_os_str(),
    ])
    .await;
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    drain_stderr(&mut serve);

    let created = run(vec![
        "room".into(),
        "create".into(),
        "--relay".into(),
        base.clone(),
        "--json".into(),
        "--ca-cert".into(),
        path(&cert.ca),
    ])
    .await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let room: pairedit::relay::CreatedRoom = serde_json::from_slice(&created.stdout).expect("json");
    assert!(room.write_code.starts_with("wss://127.0.0.1:"));

    let writer = Client::connect(&room.write_code, trusting(&cert, "w"))
        .await
        .expect("connect");
    writer.wait_synced(WAIT).await.expect("synced");
    let text = "fn main() {\r\n\tprintln!(\"日本 😀\");\n}\n";
    writer.edit(&Edit::insert(0, text)).expect("edit");
    writer.flush();
    wait_text(&writer, text).await;
    let check = Client::connect(&room.view_code, trusting(&cert, "check"))
        .await
        .expect("connect");
    wait_text(&check, text).await;

    let cat = run(vec![
        "cat".into(),
        room.view_code.clone(),
        "--ca-cert".into(),
        path(&cert.ca),
    ])
    .await;
    assert_printed(&cat, text.as_bytes());

    // Without the CA: a non-zero exit that says what to do, in time (no retry loop).
    let untrusted = run(vec!["cat".into(), room.view_code.clone()]).await;
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("--ca-cert"), "{stderr}");

    // A key that does not belong to the certificate, and a missing file: clear refusals.
    let other = TestCert::new();
    for (c, k, want) in [
        (&cert.cert, &other.key, "does not fit"),
        (
            &cert.cert,
            &cert.dir.path().join("missing.key"),
            "cannot read private key",
        ),
        (&cert.key, &cert.key, "holds no certificate"),
    ] {
        let out = run(vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            path(c),
            "--tls-key".into(),
            path(k),
        ])
        .await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "want {want:?} in {stderr}");
    }
    // --tls-cert alone is a usage error.
    let out = run(vec!["serve".into(), "--tls-cert".into(), path(&cert.cert)]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

/// The certificate most people make first (`openssl req -x509`): self-signed and marked as a
/// CA, which the chain check alone refuses as a server's own. With `--ca-cert` naming that very
/// certificate it is pinned and works; another certificate with the same names does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_is_pinned_by_ca_cert() {
    let cert = TestCert::self_signed_ca();
    let relay = tls_relay(&cert).await;
    let room = pairedit::client::http::create_room(&relay.http(), None, Some(&cert.client()))
        .await
        .expect("create with the certificate pinned");
    let c = Client::connect(&room.write_code, trusting(&cert, "pinned"))
        .await
        .expect("connect pinned");
    c.wait_synced(WAIT).await.expect("synced");
    c.edit(&Edit::insert(0, "pinned ✓")).expect("edit");
    c.flush();
    let check = Client::connect(&room.view_code, trusting(&cert, "check"))
        .await
        .expect("connect");
    wait_text(&check, "pinned ✓").await;

    let impostor = TestCert::self_signed_ca();
    let opts = ClientOptions {
        tls: Some(impostor.client()),
        ..fast_opts("impostor-trusting")
    };
    match Client::connect(&room.write_code, opts).await {
        Ok(_) => panic!("a different self-signed certificate was accepted"),
        Err(e) => assert!(matches!(e, ClientError::Tls(_)), "{e:?}"),
    }
}
