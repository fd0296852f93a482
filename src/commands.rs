//! What each subcommand does, as library functions the thin `main.rs` calls.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    BenchCommand, Cli, Command, EditorArgs, HostArgs, JoinArgs, RoomCommand, ServeArgs,
};
use crate::client::{Client, ClientOptions, http};
use crate::relay::{self, RelayConfig};
use crate::sync::{Batcher, SharedDoc};
use crate::trace::Trace;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Host(args) => host(args).await,
        Command::Join(args) => join(args).await,
        Command::Room(RoomCommand::Create {
            relay,
            json,
            create_token,
            tls,
        }) => {
            let room =
                http::create_room(&relay, create_token.as_deref(), tls.config()?.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&room)?);
            } else {
                println!("write code (may type): {}", room.write_code);
                println!("view code (watch only): {}", room.view_code);
            }
            Ok(())
        }
        Command::Cat { code, timeout, tls } => {
            cat(&code, Duration::from_secs(timeout), tls.config()?).await
        }
        Command::Bench(BenchCommand::Updates {
            trace,
            rate,
            flush_ms,
        }) => bench_updates(&trace, rate, flush_ms),
        Command::Bench(BenchCommand::Highlight { file, theme }) => bench_highlight(&file, &theme),
        Command::Bench(BenchCommand::Keys {
            file,
            at_end,
            keys,
            theme,
        }) => bench_keys(&file, at_end, keys, &theme),
        Command::Bench(BenchCommand::Probe) => crate::bench::hostprobe::run_until_stdin_closes(),
        Command::Bench(BenchCommand::Ingest {
            mb,
            appends,
            server,
        }) => {
            let config = crate::bench::ingest::IngestConfig {
                servers: bench_servers(server, "ingest"),
                mb,
                appends,
            };
            crate::bench::ingest::run(&config).await.map(|_| ())
        }
        Command::Bench(BenchCommand::Fanout {
            viewers,
            rooms,
            seconds,
            flush_ms,
            server,
            runs,
            out,
        }) => {
            let config = crate::bench::fanout::FanoutConfig {
                servers: bench_servers(server, "fanout"),
                viewers,
                rooms,
                seconds,
                flush: Duration::from_millis(flush_ms.max(1)),
                runs: runs as usize,
                out_dir: out,
            };
            crate::bench::fanout::run(&config).await.map(|_| ())
        }
        Command::Bench(BenchCommand::Replay {
            trace,
            window,
            runs,
            engine,
        }) => match engine {
            Some(engine) => {
                let t = Trace::load(&trace)?;
                let result = crate::bench::replay_one(&t, &engine, window)?;
                println!("{}", serde_json::to_string(&result)?);
                Ok(())
            }
            None => crate::bench::replay_all(&trace, window, runs),
        },
        Command::Bench(BenchCommand::Idle {
            code,
            url,
            viewers,
            hold,
            pid,
        }) => bench_idle(code, url, viewers, hold, pid).await,
    }
}

/// The servers a bench loads: the Node one only when its packages are installed.
fn bench_servers(
    server: crate::cli::FanoutServers,
    bench: &str,
) -> Vec<crate::bench::fanout::ServerKind> {
    use crate::bench::fanout::ServerKind;
    use crate::cli::FanoutServers;
    match server {
        FanoutServers::Pairedit => vec![ServerKind::Pairedit],
        FanoutServers::Node => vec![ServerKind::Node],
        FanoutServers::Both if crate::bench::fanout::node_server().is_some() => {
            vec![ServerKind::Pairedit, ServerKind::Node]
        }
        FanoutServers::Both => {
            eprintln!("{bench}: Node server skipped (run `npm ci --prefix bench/node` to compare)");
            vec![ServerKind::Pairedit]
        }
    }
}

impl From<&ServeArgs> for RelayConfig {
    fn from(a: &ServeArgs) -> Self {
        RelayConfig {
            max_frame: a.max_frame,
            max_doc_bytes: a.max_doc,
            max_members: a.max_members,
            max_rooms: a.max_rooms,
            send_queue: a.send_queue,
            max_conns_per_ip: a.max_conns_per_ip,
            max_pending_per_ip: a.max_pending_per_ip,
            ping_after: (a.ping_secs > 0).then(|| Duration::from_secs(a.ping_secs)),
            create_token: a.create_token.clone(),
            evict_idle_after: Duration::from_secs(a.evict_idle_secs),
            data_dir: a.data_dir.clone(),
            public_url: a.public_url.clone(),
            ..RelayConfig::default()
        }
    }
}

/// The editor draws on a terminal: said before anything starts, not as an error from deep in
/// the terminal set-up after a relay and a room were made.
fn needs_terminal(command: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    anyhow::ensure!(
        std::io::stdout().is_terminal(),
        "`pairedit {command}` is a full-screen editor and needs a terminal to draw in (its output is not one); for scripts: `pairedit serve`, `pairedit room create` and `pairedit cat CODE`"
    );
    Ok(())
}

/// A line on stdout, if stdout is still there (after the editor, the terminal may have closed:
/// `println!` would panic).
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before "listening" is printed: a script waiting for that line must not be told the
    // relay started when it cannot keep its rooms.
    if let Some(dir) = &args.data_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot use --data-dir {}", dir.display()))?;
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let open_files = raise_open_files_limit();
    let mut config = RelayConfig::from(&args);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(crate::net::server_config(cert, key)?);
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{addr}")?;
        writeln!(
            out,
            "create a room: pairedit room create --relay {scheme}://{addr}"
        )?;
        out.flush()?;
    }
    if let Some(n) = open_files
        && n < 4096
    {
        eprintln!(
            "note: this process may open only {n} files, so the relay holds fewer than {n} \
             connections (raise `ulimit -n`)"
        );
    }
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        stop_signal().await;
        eprintln!("shutting down: closing connections (Ctrl-C again to force)");
        trigger.cancel();
        stop_signal().await;
        eprintln!("forced exit");
        std::process::exit(130);
    });
    relay::run(listener, config, shutdown).await?;
    eprintln!("relay stopped");
    Ok(())
}

/// Each connection is a file descriptor, and the usual soft limit (1,024) is far below what a
/// relay holds: raise it to the hard limit, as a server should. Returns the limit now in force.
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    // No hard limit ("unlimited", as on macOS): the soft one cannot be unlimited; ask for plenty.
    let want = limit.maximum.unwrap_or(1 << 20);
    if limit.current.is_some_and(|n| n < want) {
        limit.current = Some(want);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!("cannot raise the open files limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Client options from the editor's flags; `--ca-cert` is read here, once per session.
fn editor_options(args: &EditorArgs) -> anyhow::Result<ClientOptions> {
    Ok(ClientOptions {
        name: args
            .name
            .clone()
            .unwrap_or_else(crate::client::default_name),
        flush_interval: Duration::from_millis(args.flush_ms.max(1)),
        tls: args.tls.config()?,
        ..ClientOptions::default()
    })
}

/// Undo groups: edits closer together than this undo as one.
const UNDO_CAPTURE_MS: u64 = 500;

async fn host(args: HostArgs) -> anyhow::Result<()> {
    // Everything that can be refused is checked before the terminal is taken over.
    // One editor per file (held until this returns): see `fsutil::EditLock`.
    let _editing = crate::fsutil::lock_for_editing(&args.file)?;
    // A file that is not there yet (in a directory that is) starts empty, as in vim: the
    // first save creates it.
    // Straight into a rope: for a big file, most of the time to the first frame (see `load_rope`).
    let (mut text, new_file) = match crate::fsutil::load_rope(&args.file) {
        Ok(text) => (text, false),
        Err(e) if crate::fsutil::is_new_file(&args.file, &e) => (ropey::Rope::new(), true),
        Err(e) => return Err(e.into()),
    };
    let theme =
        crate::tui::highlight::load_theme(&args.editor.theme).map_err(anyhow::Error::msg)?;
    // Before the recovery question: without a terminal it would move a crashed session's
    // changes aside, for an editor that cannot start.
    needs_terminal("host")?;
    let recovered = offer_recovery(&args.file, &mut text, args.recover);
    // A byte order mark stays with the file, not in the shared text (see `App::bom`).
    let bom = text.get_char(0) == Some('\u{feff}');
    if bom {
        text.remove(..1);
    }
    let file_name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.file.display().to_string());
    let language = crate::tui::highlight::language_for(&file_name);

    let shutdown = CancellationToken::new();
    let mut embedded = None;
    let seeds = std::sync::Arc::new(relay::Seeds::default());
    let relay_url = match &args.relay {
        Some(url) => url.clone(),
        None => {
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            let addr = listener.local_addr()?;
            // The whole file travels as one update: size the limits for it.
            let config = RelayConfig {
                max_frame: protocol_max(text.len_bytes()),
                max_doc_bytes: (text.len_bytes() * 4).max(RelayConfig::default().max_doc_bytes),
                public_url: args.public_url.clone(),
                seeds: Some(seeds.clone()),
                ..RelayConfig::default()
            };
            embedded = Some(tokio::spawn(relay::run(listener, config, shutdown.clone())));
            format!("http://{addr}")
        }
    };
    let mut opts = editor_options(&args.editor)?;
    let room =
        http::create_room(&relay_url, args.create_token.as_deref(), opts.tls.as_ref()).await?;

    // The first frame needs only the rope: yrs gets the text right after it (in the gate below).
    let mut doc = SharedDoc::with_rope_deferred(text);
    doc.set_meta("name", &file_name);
    doc.set_meta("language", &language);
    doc.enable_undo(UNDO_CAPTURE_MS);
    let code = crate::protocol::JoinCode::parse(&room.write_code)?;
    opts.max_message = opts.max_message.max(protocol_max(doc.rope().len_bytes()));
    let mut state =
        crate::client::ClientState::detached(doc, crate::protocol::Role::Writer, &opts.name);
    state.synced = true;
    let handle = crate::client::SessionHandle::detached(state);
    // Connect in the background once the first frame is up: it never waits for the network.
    let (first_frame, drawn) = tokio::sync::oneshot::channel();
    let seed = embedded
        .is_some()
        .then(|| (seeds.clone(), room.room.clone()));
    let loader = handle.lock().doc.loader();
    let session = handle.clone();
    let gate = async move {
        let _ = drawn.await;
        // Loading a big text into yrs takes a while: off the runtime's worker threads, after
        // the first frame, and outside the session's lock.
        let _ = tokio::task::spawn_blocking(move || {
            loader.load();
            if let Some((seeds, room)) = seed {
                // The built-in relay's room uses this very document (one copy of a big file,
                // not two, and no seed to encode and decode); a member's update goes through
                // the session's lock, as one from the socket would.
                seeds.put(&room, lend(&session));
            }
        })
        .await;
    };
    let client = Client::launch(
        code,
        opts,
        handle.clone(),
        crate::protocol::Role::Writer,
        gate,
    );

    let codes = crate::tui::app::Codes {
        write: room.write_code.clone(),
        view: room.view_code.clone(),
    };
    let path = args.file.clone();
    let hosting = embedded.is_some();
    let make_app = move || {
        let highlighter = crate::tui::highlight::Highlighter::new(&language, theme);
        let mut app = crate::tui::app::App::new(handle, Some(path), highlighter);
        app.codes = Some(codes);
        app.hosting = hosting;
        app.bom = bom;
        app.mode = crate::tui::app::Mode::Codes;
        if recovered {
            app.mark_changed();
            app.say("opened the unsaved changes of a crashed session: Ctrl-S saves them");
        } else if new_file {
            app.say("a new file: Ctrl-S creates it");
        }
        app
    };
    let closed = crate::tui::run(make_app, client.changes(), Some(first_frame)).await;
    // Not if the editor never ran: the recovery copy may hold a crashed session's changes.
    if closed.ran && (!closed.dirty || closed.discarded) {
        let _ = std::fs::remove_file(crate::fsutil::recovery_path(&args.file));
    }
    client.close().await;
    // The terminal may be gone (its window closed): nothing here may fail for that.
    say(format_args!("pairedit: room codes were"));
    say(format_args!(
        "  may type:   pairedit join {}",
        room.write_code
    ));
    say(format_args!(
        "  may watch:  pairedit join {}",
        room.view_code
    ));
    let recovery = crate::fsutil::recovery_path(&args.file);
    if closed.dirty && !closed.discarded && recovery.exists() {
        say(format_args!(
            "pairedit: {} has unsaved changes: they are kept in {} and `pairedit host {}` offers them",
            args.file.display(),
            recovery.display(),
            args.file.display()
        ));
    } else if closed.dirty && !closed.discarded {
        say(format_args!(
            "pairedit: {} has unsaved changes that could not be kept in {} (the log says why)",
            args.file.display(),
            recovery.display()
        ));
    }
    if let Some(relay) = embedded {
        say(format_args!(
            "pairedit: the built-in relay stopped; members who stayed were disconnected"
        ));
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
    }
    closed.result
}

/// A session's document, lent to a built-in relay's room (see [`relay::Lent`]): a member's
/// update is integrated under the session's lock, as one from the socket would be.
pub fn lend(session: &crate::client::SessionHandle) -> relay::Lent {
    let mut st = session.lock();
    let apply = session.clone();
    let lent = relay::Lent::new(st.doc.doc_handle(), move |update| {
        apply.lock().integrate(update)
    });
    let host_edits = lent.host_edits();
    st.doc.tap_outgoing(move |update| host_edits.push(update));
    lent
}

/// If a crashed session left unsaved changes for `file`, offers them (or takes them with
/// `--recover`); returns whether `text` now holds them.
fn offer_recovery(file: &std::path::Path, text: &mut ropey::Rope, recover: bool) -> bool {
    use std::io::{BufRead as _, IsTerminal as _};
    let path = crate::fsutil::recovery_path(file);
    let Ok(saved) = crate::fsutil::load_text(&path) else {
        return false;
    };
    if saved == *text {
        let _ = std::fs::remove_file(&path);
        return false;
    }
    let take = recover
        || {
            let interactive = std::io::stdin().is_terminal();
            if interactive {
                eprint!(
                    "pairedit: {} holds unsaved changes from an earlier session that ended abruptly.\nOpen them instead of the file on disk? [Y/n] ",
                    path.display()
                );
                let mut answer = String::new();
                let _ = std::io::stdin().lock().read_line(&mut answer);
                !answer.trim().eq_ignore_ascii_case("n")
            } else {
                false
            }
        };
    if take {
        *text = ropey::Rope::from_str(&saved);
    } else {
        // Out of the way of this session's own recovery copy, which would overwrite it (or,
        // on a clean exit, remove it).
        match keep_declined(&path) {
            Ok(kept) => eprintln!(
                "pairedit: moved the unsaved changes of an earlier session to {}",
                kept.display()
            ),
            Err(e) => eprintln!(
                "pairedit: kept {} (unsaved changes of an earlier session; cannot move it: {e}); this session may overwrite it",
                path.display()
            ),
        }
    }
    take
}

/// Moves a recovery copy the user chose not to open to a visible name beside the file
/// (`NAME.unsaved-SECONDS`), and returns that name.
fn keep_declined(recovery: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let name = recovery
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".pairedit-recovery"))
        .unwrap_or(&name);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut kept = recovery.with_file_name(format!("{file}.unsaved-{secs}"));
    let mut n = 1;
    while kept.exists() {
        kept = recovery.with_file_name(format!("{file}.unsaved-{secs}-{n}"));
        n += 1;
    }
    std::fs::rename(recovery, &kept)?;
    Ok(kept)
}

/// A message limit that fits a whole document of `len` bytes plus headroom.
fn protocol_max(len: usize) -> usize {
    (len * 2 + (1 << 20)).max(crate::protocol::DEFAULT_MAX_FRAME)
}

async fn join(args: JoinArgs) -> anyhow::Result<()> {
    let theme =
        crate::tui::highlight::load_theme(&args.editor.theme).map_err(anyhow::Error::msg)?;
    let code = crate::protocol::JoinCode::parse(&args.code)?;
    // A copy to keep: checked now, not at the first save.
    let _editing = match &args.file {
        Some(file) => {
            let dir = crate::fsutil::dir_of(file);
            anyhow::ensure!(
                dir.is_dir(),
                "cannot keep a copy in {}: the directory {} does not exist",
                file.display(),
                dir.display()
            );
            anyhow::ensure!(
                !file.is_dir(),
                "cannot keep a copy in {}: it is a directory",
                file.display()
            );
            crate::fsutil::lock_for_editing(file)?
        }
        None => None,
    };
    needs_terminal("join")?;
    let mut doc = SharedDoc::new();
    doc.enable_undo(UNDO_CAPTURE_MS);
    let client = Client::connect_with_doc(code, editor_options(&args.editor)?, doc).await?;
    // The room's text and language arrive with the first sync; the editor shows them as they do.
    let _ = client.wait_synced(Duration::from_secs(10)).await;
    let language = client
        .state()
        .doc
        .meta("language")
        .unwrap_or_else(|| "Plain Text".to_string());
    let (handle, path) = (client.handle(), args.file.clone());
    // A file already there that is not the room's text is someone's work: the first save
    // asks before replacing it (as for a file changed on disk).
    // Its byte order mark is not text (see `App::bom`): kept by the saves, not compared.
    let on_disk = path
        .as_deref()
        .filter(|p| p.exists())
        .map(|p| crate::fsutil::load_text(p).ok());
    let bom = matches!(&on_disk, Some(Some(t)) if t.starts_with('\u{feff}'));
    let unrelated = on_disk.is_some_and(|t| {
        t.as_deref()
            .map(|t| t.strip_prefix('\u{feff}').unwrap_or(t))
            != Some(&client.text())
    });
    let make_app = move || {
        let highlighter = crate::tui::highlight::Highlighter::new(&language, theme);
        let mut app = crate::tui::app::App::new(handle, path, highlighter);
        app.bom = bom;
        if unrelated {
            app.disk = None;
            app.say("the --file on disk is not the room's text: Ctrl-S asks before replacing it");
        }
        app
    };
    let closed = crate::tui::run(make_app, client.changes(), None).await;
    client.close().await;
    if let Some(kept) = &closed.kept {
        say(format_args!(
            "pairedit: edits the relay had not got are kept with the whole text in {}",
            kept.display()
        ));
    }
    closed.result
}

async fn cat(
    code: &str,
    timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> anyhow::Result<()> {
    let opts = ClientOptions {
        name: format!("{} (cat)", crate::client::default_name()),
        connect_timeout: timeout,
        tls,
        ..ClientOptions::default()
    };
    let client = Client::connect(code, opts).await?;
    client.wait_synced(timeout).await?;
    let text = client.text();
    client.close().await;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Replays a trace at `rate` transactions per second and compares the bytes sent with one merged
/// update per `flush_ms` window against one update per transaction; checks a replica converges.
fn bench_updates(path: &std::path::Path, rate: f64, flush_ms: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        rate > 0.0 && flush_ms > 0,
        "--rate and --flush-ms must be positive"
    );
    let trace = Trace::load(path)?;
    let per_window = ((rate * flush_ms as f64) / 1000.0).max(1.0);
    let started = Instant::now();
    let mut writer = SharedDoc::new();
    let mut replica = SharedDoc::new();
    let mut batcher = Batcher::new();
    let (mut per_edit_bytes, mut per_edit_msgs) = (0usize, 0usize);
    let (mut batched_bytes, mut batched_msgs) = (0usize, 0usize);
    let mut window_end = per_window;
    // For comparison: what a state diff since the previous flush would weigh (yrs squashes
    // adjacent items in the store, but a diff carries the document's whole delete set).
    let (mut diff_bytes, mut last_sv) = (0usize, yrs::StateVector::default());
    for (i, txn) in trace.txns.iter().enumerate() {
        for edit in txn {
            writer.apply_local(edit)?;
        }
        for update in writer.take_outgoing() {
            per_edit_bytes += crate::protocol::sync_update(update.clone()).len();
            per_edit_msgs += 1;
            batcher.push(update);
        }
        if (i + 1) as f64 >= window_end || i + 1 == trace.txns.len() {
            window_end += per_window;
            if let Some(update) = batcher.flush()? {
                replica.apply_remote(&update)?;
                batched_bytes += crate::protocol::sync_update(update).len();
                batched_msgs += 1;
                let sv = writer.state_vector();
                diff_bytes += crate::protocol::sync_update(writer.diff(&last_sv)).len();
                last_sv = sv;
            }
        }
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        writer.text() == trace.end,
        "writer did not reach endContent"
    );
    anyhow::ensure!(
        replica.text() == trace.end,
        "replica did not reach endContent"
    );
    anyhow::ensure!(
        replica.ytext() == trace.end,
        "replica's Y.Text differs from endContent"
    );
    let simulated = trace.txns.len() as f64 / rate;
    println!(
        "trace: {} ({} txns, {} patches, final {} chars)",
        path.display(),
        trace.txns.len(),
        trace.patch_count(),
        trace.end.chars().count()
    );
    println!(
        "time model: {rate} txns/s (simulated {simulated:.0} s of typing), flush every {flush_ms} ms = {per_window:.1} txns per update"
    );
    println!("| sending | messages | bytes (y-websocket frames) | bytes/message |");
    println!("|---|---|---|---|");
    println!(
        "| one update per edit | {per_edit_msgs} | {per_edit_bytes} | {:.1} |",
        per_edit_bytes as f64 / per_edit_msgs.max(1) as f64
    );
    println!(
        "| one update per {flush_ms} ms | {batched_msgs} | {batched_bytes} | {:.1} |",
        batched_bytes as f64 / batched_msgs.max(1) as f64
    );
    println!(
        "| (state diff since last flush, for comparison) | {batched_msgs} | {diff_bytes} | {:.1} |",
        diff_bytes as f64 / batched_msgs.max(1) as f64
    );
    println!(
        "batched / per-edit: messages {:.3}, bytes {:.3}",
        batched_msgs as f64 / per_edit_msgs.max(1) as f64,
        batched_bytes as f64 / per_edit_bytes.max(1) as f64
    );
    println!(
        "replica converged to endContent; replay took {:.2} s",
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn bench_highlight(path: &std::path::Path, theme: &str) -> anyhow::Result<()> {
    use crate::tui::highlight::{Highlighter, language_for, load_theme};
    let (text, language) = load_source(path)?;
    let rope = ropey::Rope::from_str(&text);
    let mut h = Highlighter::new(&language, load_theme(theme).map_err(anyhow::Error::msg)?);
    let lines = rope.len_lines();
    let screen = 50;
    let started = Instant::now();
    let mut first = 0;
    while first < lines {
        // Page through the file the way the editor would, one screen at a time.
        h.lines(&rope, first, screen);
        first += screen;
    }
    let full = started.elapsed();
    // An edit on line 1: invalidate, then draw the first screen again.
    let mut edited = rope.clone();
    edited.insert(0, "/* edit */ ");
    let mut samples = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        h.invalidate_from(0);
        h.lines(&edited, 0, screen);
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "file: {} ({lines} lines, {} bytes, syntax {language})",
        path.display(),
        text.len()
    );
    println!(
        "full pass: {:.3} s = {:.0} lines/s",
        full.as_secs_f64(),
        lines as f64 / full.as_secs_f64()
    );
    println!(
        "re-highlight of the first {screen}-line screen after an edit on line 1: median {:.2} ms, max {:.2} ms",
        samples[samples.len() / 2].as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0
    );
    let (frames, idle) = bench_frames(&text, &language, theme, false, false, 500)?;
    print_key_costs(
        "a key typed (50 at the start of each of the first 10 lines)",
        &frames,
        &idle,
    );
    for cold in [false, true] {
        let (frames, _) = bench_frames("", &language_for("empty.txt"), theme, cold, false, 500)?;
        println!(
            "the same into an empty text file (60 keys a line, then Enter: the tmux keystroke bench's case){}: {}",
            if cold {
                ", each key with the CPU caches cold (32 MiB written before it)"
            } else {
                ""
            },
            spread_ms(&frames)
        );
    }
    Ok(())
}

/// A source file's text and the syntax its name picks (the benches' input).
fn load_source(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    let text = crate::fsutil::load_text(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    Ok((text, crate::tui::highlight::language_for(&name)))
}

fn bench_keys(
    path: &std::path::Path,
    at_end: bool,
    keys: usize,
    theme: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(keys > 0, "--keys must be at least 1");
    let (text, language) = load_source(path)?;
    let started = Instant::now();
    let (frames, idle) = bench_frames(&text, &language, theme, false, at_end, keys)?;
    println!(
        "file: {} ({} bytes, syntax {language}); {keys} keys typed {}, {:.1} s in all",
        path.display(),
        text.len(),
        if at_end {
            "on new lines after its last (60 a line)"
        } else {
            "at the start of its first lines (50 a line)"
        },
        started.elapsed().as_secs_f64()
    );
    print_key_costs("a key", &frames, &idle);
    Ok(())
}

/// A key's frame and the idle parse after it, as `bench_frames` timed them.
fn print_key_costs(what: &str, frames: &[f64], idle: &[f64]) {
    println!(
        "{what} and the whole {}x{} screen drawn and encoded for the terminal: {}",
        FRAME_SIZE.0,
        FRAME_SIZE.1,
        spread_ms(frames)
    );
    println!(
        "then, no key waiting, the typed line parsed and the screen drawn again ({} of the keys): {}",
        idle.len(),
        spread_ms(idle)
    );
}

/// "median, p99, max" of sorted seconds, in ms.
fn spread_ms(sorted: &[f64]) -> String {
    let at = |i: usize| sorted.get(i).copied().unwrap_or(f64::NAN) * 1000.0;
    format!(
        "median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        at(sorted.len() / 2),
        at(sorted.len() * 99 / 100),
        at(sorted.len().saturating_sub(1))
    )
}

/// The size of the screen [`bench_frames`] draws.
const FRAME_SIZE: (u16, u16) = (120, 50);

/// Seconds each of 500 keys took from the editor's update to its frame drawn and encoded for
/// the terminal (into memory), sorted: the editor's own share of keystroke-to-screen (no
/// terminal, no network). Beside them, sorted, the seconds of the idle step after each key
/// that left one ([`Msg::Idle`]: the typed line parsed and the frame drawn again), which the
/// key's frame does not wait for. The keys go in at the start of lines 1 to 10, 50 on each: typing
/// into code that is already there. Into an empty `text`, they are typed as the tmux bench
/// types them: 60 on a line, then Enter (not timed).
fn bench_frames(
    text: &str,
    language: &str,
    theme: &str,
    cold: bool,
    at_end: bool,
    keys: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    use crate::client::{ClientState, SessionHandle};
    use crate::tui::update::{Msg, update};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let mut doc = crate::sync::SharedDoc::new();
    doc.apply_local(&crate::sync::Edit::insert(0, text))?;
    let _ = doc.take_outgoing();
    let mut st = ClientState::detached(doc, crate::protocol::Role::Writer, "bench");
    // As in the editor on a relay: connected and synced (offline, the status line would
    // count the queued edits, a change on every key).
    st.connection = crate::client::Connection::Connected;
    st.synced = true;
    let highlighter = crate::tui::highlight::Highlighter::new(
        language,
        crate::tui::highlight::load_theme(theme).map_err(anyhow::Error::msg)?,
    );
    let mut app = crate::tui::app::App::new(SessionHandle::detached(st), None, highlighter);
    app.mode = crate::tui::app::Mode::Normal;
    let mut screen = crate::tui::term::Screen::with_size(FRAME_SIZE.0, FRAME_SIZE.1);
    let mut out = Vec::new();
    screen.draw_to(|buf| crate::tui::view::render(buf, &mut app), &mut out)?;
    let (mut frames, mut idle) = (Vec::with_capacity(keys), Vec::with_capacity(keys));
    // Between two keys a person types, the terminal and everything else run: the editor
    // starts each key with its data out of the CPU's caches. `cold` does that on purpose.
    let mut sweep = if cold {
        vec![0u8; 32 << 20]
    } else {
        Vec::new()
    };
    let press = |app: &mut crate::tui::app::App, code| {
        let _ = update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    };
    // Into an empty text, or after the last line: 60 keys a line, then Enter.
    let new_lines = text.is_empty() || at_end;
    if at_end {
        let _ = update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::End, KeyModifiers::CONTROL)),
        );
        press(&mut app, KeyCode::Enter);
        screen.draw_to(|buf| crate::tui::view::render(buf, &mut app), &mut out)?;
    }
    for i in 0..keys {
        if new_lines && i > 0 && i % 60 == 0 {
            press(&mut app, KeyCode::Enter);
            screen.draw_to(|buf| crate::tui::view::render(buf, &mut app), &mut out)?;
        } else if !new_lines && i > 0 && i % 50 == 0 {
            // 50 keys per line, then on to the start of the next (not timed).
            press(&mut app, KeyCode::Down);
            press(&mut app, KeyCode::Home);
            screen.draw_to(|buf| crate::tui::view::render(buf, &mut app), &mut out)?;
        }
        out.clear();
        for (j, b) in sweep.iter_mut().enumerate().step_by(64) {
            *b = b.wrapping_add(j as u8);
        }
        std::hint::black_box(&sweep);
        let c = char::from(b'a' + (i % 26) as u8);
        let t = Instant::now();
        let _ = update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
        );
        screen.draw_to(|buf| crate::tui::view::render(buf, &mut app), &mut out)?;
        frames.push(t.elapsed().as_secs_f64());
        // What the loop does next with no key waiting: the typed line parsed, and the frame
        // drawn again (written only if its colours changed).
        if app.idle_work() {
            let t = Instant::now();
            let _ = update(&mut app, Msg::Idle);
            screen.draw_to(|buf| crate::tui::view::render(buf, &mut app), &mut out)?;
            idle.push(t.elapsed().as_secs_f64());
        }
    }
    frames.sort_by(f64::total_cmp);
    idle.sort_by(f64::total_cmp);
    Ok((frames, idle))
}

/// Opens `viewers` WebSocket connections that only sync and then sit idle.
async fn bench_idle(
    code: Option<String>,
    url: Option<String>,
    viewers: usize,
    hold: u64,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    use futures_util::{SinkExt as _, StreamExt as _};
    let url = match (code, url) {
        (Some(code), _) => crate::protocol::JoinCode::parse(&code)?.ws_url(),
        (None, Some(url)) => url,
        (None, None) => anyhow::bail!("give --code CODE or --url URL"),
    };
    let before = pid.and_then(|p| crate::bench::status_kib(&p.to_string(), "VmRSS"));
    let started = Instant::now();
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(viewers);
    for i in 0..viewers {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("connection {i} of {viewers} failed (raise `ulimit -n`?)"))?;
        let hello = crate::protocol::sync_step1(&yrs::StateVector::default());
        ws.send(tokio_tungstenite::tungstenite::Message::binary(hello))
            .await?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    msg = ws.next() => if !matches!(msg, Some(Ok(_))) { break },
                }
            }
            let _ = ws.close(None).await;
        }));
    }
    let connected = started.elapsed();
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let after = pid.and_then(|p| crate::bench::status_kib(&p.to_string(), "VmRSS"));
    let alive = tasks.iter().filter(|t| !t.is_finished()).count();
    println!(
        "{viewers} connections opened in {:.2} s; {alive} still open after {hold} s",
        connected.as_secs_f64()
    );
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "server RSS: {b} KiB before, {a} KiB with {viewers} idle viewers: {:.1} KiB per connection",
            (a as f64 - b as f64) / viewers as f64
        );
    }
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_declined_recovery_copy_is_moved_beside_the_file_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        let recovery = crate::fsutil::recovery_path(&file);
        std::fs::write(&recovery, "changes from before").unwrap();
        let kept = super::keep_declined(&recovery).unwrap();
        assert!(!recovery.exists());
        assert_eq!(kept.parent(), file.parent());
        let name = kept.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("notes.txt.unsaved-"), "{name}");
        assert_eq!(
            std::fs::read_to_string(&kept).unwrap(),
            "changes from before"
        );
        // A second one in the same second gets a name of its own.
        std::fs::write(&recovery, "more").unwrap();
        let again = super::keep_declined(&recovery).unwrap();
        assert_ne!(again, kept);
        assert_eq!(
            std::fs::read_to_string(&kept).unwrap(),
            "changes from before"
        );
    }
}
