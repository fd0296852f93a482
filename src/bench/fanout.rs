//! `pairedit bench fanout`: one writer per room typing at a steady rate, N viewers, against
//! pairedit's relay and the Node reference server (`@y/websocket-server`) in the same run.
//!
//! The load generator is this process (tokio); each server is a child process, so its memory
//! and CPU are read from /proc alone. Every viewer speaks plain y-websocket: it sends sync step 1,
//! then reads. The writer inserts a marker `<NNNNNN>` per flush tick (one sync update each) and
//! records when it sent it; a viewer finds markers in the update bytes it receives (the text of
//! an insert is stored verbatim in a v1 update), so latency is send-to-receive of that update,
//! whatever the server does to it (re-encoding, merging).
//!
//! Where the kernel can say (plain TCP on Linux), each viewer also records when its socket took
//! in the update (`SO_TIMESTAMPNS`), beside when the generator read it: the "at the socket"
//! figures. The generator shares the machine's cores with the server, and a server that keeps
//! both cores busy while it sends holds the generator's reads back until it is done; the socket
//! time is when the server's bytes reached the viewer, whoever then got to run.
//!
//! While the writers type, a probe on each core times a fixed piece of arithmetic by its own
//! CPU time ([`super::hostprobe`]): where the host slowed the machine down, the run says which
//! updates were sent then, and the p99 over the other updates beside the p99 over all of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::{Text, Transact};

/// Which server to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Pairedit,
    Node,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Pairedit => "pairedit",
            ServerKind::Node => "node @y/websocket-server",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub servers: Vec<ServerKind>,
    /// Viewer counts to run, e.g. 100, 1,000, 10,000.
    pub viewers: Vec<usize>,
    /// Rooms the viewers are spread over (each with its own writer).
    pub rooms: usize,
    /// How long the writers type.
    pub seconds: f64,
    /// Writer flush interval (one update per tick).
    pub flush: Duration,
    /// Runs per point; the one with the median p99 is reported.
    pub runs: usize,
    /// Where to write results.json and the SVG plots.
    pub out_dir: Option<PathBuf>,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutRow {
    pub server: String,
    pub rooms: usize,
    pub viewers: usize,
    pub connected: usize,
    /// Viewers that received every update their room's writer sent.
    pub complete: usize,
    /// Updates a viewer never received by the end of the run (counted in the percentiles as
    /// arriving then).
    #[serde(default)]
    pub missing: usize,
    pub updates_sent: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Server RSS with every viewer connected and idle, minus before any connected, per viewer.
    pub rss_per_conn_kib: f64,
    pub rss_mib: f64,
    /// Server CPU from the first update until the last was delivered, or the 10 s grace ran
    /// out (100 = one core).
    pub cpu_pct: f64,
    pub connect_secs: f64,
    /// p99 of every run of this point, in run order (the row is the median one's).
    #[serde(default)]
    pub p99_runs_ms: Vec<f64>,
    /// Writer-to-viewer latency to when the viewer's socket took the update in (kernel
    /// timestamps; `None` where there are none), beside `p50_ms`/`p99_ms`, which are to when
    /// the generator read it.
    #[serde(default)]
    pub socket_p50_ms: Option<f64>,
    #[serde(default)]
    pub socket_p99_ms: Option<f64>,
    /// The share of the host probe's looks that ran at [`super::hostprobe::SLOWED`] times their
    /// fastest or slower; `None` where it could not look.
    #[serde(default)]
    pub host_slowed_share: Option<f64>,
    /// Updates with such a look near their sending ([`host_slowed`]).
    #[serde(default)]
    pub host_slowed_updates: Option<usize>,
    /// p99 over the other updates (and every update never delivered): how the server does
    /// while the machine runs at its usual speed. A diagnosis beside `p99_ms`, which counts
    /// every update and is the one the target is judged on.
    #[serde(default)]
    pub p99_unslowed_ms: Option<f64>,
    /// `p99_unslowed_ms` of every run of this point, in run order.
    #[serde(default)]
    pub p99_unslowed_runs_ms: Vec<Option<f64>>,
}

/// The Node reference server's script, when bench/node's packages are installed.
pub fn node_server() -> Option<PathBuf> {
    super::node_script("node_modules/@y/websocket-server/src/server.js").filter(|p| p.exists())
}

pub(crate) struct Server {
    kind: ServerKind,
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
}

impl Server {
    pub(crate) async fn start(kind: ServerKind) -> anyhow::Result<Server> {
        match kind {
            ServerKind::Pairedit => {
                let exe = std::env::current_exe()?;
                let mut child = tokio::process::Command::new(exe)
                    .args([
                        "serve",
                        "--listen",
                        "127.0.0.1:0",
                        "--max-conns-per-ip",
                        "1000000",
                        "--max-pending-per-ip",
                        "1000000",
                        "--max-members",
                        "1000000",
                        "--max-rooms",
                        "1000000",
                        // Authenticated creators skip the per-address creation rate limit.
                        "--create-token",
                        BENCH_CREATE_TOKEN,
                    ])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting pairedit serve")?;
                let stdout = child.stdout.take().context("serve stdout")?;
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                    .await
                    .context("serve did not start")??
                    .context("serve printed nothing")?;
                let addr = first
                    .strip_prefix("listening on http://")
                    .context("unexpected first line from serve")?
                    .parse()?;
                let pid = child.id().context("serve pid")?;
                // Keep reading its stdout so it never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(Server {
                    kind,
                    child,
                    pid,
                    addr,
                })
            }
            ServerKind::Node => {
                let script = node_server()
                    .context("the Node server is not installed: npm ci --prefix bench/node")?;
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                let child = tokio::process::Command::new("node")
                    .arg(script)
                    .env("HOST", "127.0.0.1")
                    .env("PORT", port.to_string())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting node")?;
                let pid = child.id().context("node pid")?;
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                let deadline = Instant::now() + Duration::from_secs(15);
                while TcpStream::connect(addr).await.is_err() {
                    anyhow::ensure!(Instant::now() < deadline, "the Node server did not start");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Server {
                    kind,
                    child,
                    pid,
                    addr,
                })
            }
        }
    }

    /// (writer URL, viewer URL) of a new room.
    pub(crate) async fn room(&self, i: usize) -> anyhow::Result<(String, String)> {
        match self.kind {
            ServerKind::Pairedit => {
                let room = crate::client::http::create_room(
                    &format!("http://{}", self.addr),
                    Some(BENCH_CREATE_TOKEN),
                    None,
                )
                .await?;
                let w = crate::protocol::JoinCode::parse(&room.write_code)?.ws_url();
                let v = crate::protocol::JoinCode::parse(&room.view_code)?.ws_url();
                Ok((w, v))
            }
            ServerKind::Node => {
                let url = format!("ws://{}/bench-{i}", self.addr);
                Ok((url.clone(), url))
            }
        }
    }

    pub(crate) fn usage(&self) -> (u64, u64) {
        super::proc_usage(self.pid).unwrap_or((0, 0))
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<crate::net::NetStream>;

const BENCH_CREATE_TOKEN: &str = "pairedit-bench";

pub(crate) async fn connect(url: &str) -> anyhow::Result<Ws> {
    let stream = crate::net::connect(url, None).await?;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// Markers `<NNNNNN>` in `bytes`.
pub(crate) fn markers(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes.windows(8).filter_map(|w| {
        if w[0] != b'<' || w[7] != b'>' {
            return None;
        }
        let mut n = 0usize;
        for &d in &w[1..7] {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + usize::from(d - b'0');
        }
        Some(n)
    })
}

/// Per room: when each marker was sent (µs since the run began; 0 = not yet).
struct Sent {
    at: Vec<AtomicU64>,
    /// The same moments by the wall clock (ns since the Unix epoch), which the kernel's
    /// arrival stamps are read on.
    wall_ns: Vec<AtomicU64>,
    count: AtomicUsize,
}

/// A wall-clock time in ns since the Unix epoch.
fn wall_ns(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// µs from `from_ns` to `to_ns` (wall clock), as a latency sample.
fn micros_between(from_ns: u64, to_ns: u64) -> u32 {
    u32::try_from(to_ns.saturating_sub(from_ns) / 1000).unwrap_or(u32::MAX)
}

/// A counter on a cache line of its own.
#[derive(Default)]
#[repr(align(128))]
struct Tally(AtomicUsize);

/// [`Viewer::by_update`] of an update that was not received.
const NOT_RECEIVED: u32 = u32::MAX;

/// One viewer's record of the run, kept by a reader thread ([`super::readers`]).
struct Viewer {
    room: usize,
    sent: Arc<Sent>,
    start: Instant,
    /// The room's count of viewers that got their sync step 2.
    synced_count: Arc<AtomicUsize>,
    /// Updates delivered, counted per reader thread (one shared counter would be a cache line
    /// both threads write for every frame).
    delivered: Arc<Tally>,
    /// To when the socket took each update in (empty without kernel timestamps).
    socket_us: Vec<u32>,
    /// Whether the kernel stamps what it receives ([`super::rawws::RawWs::stamp_arrivals`]).
    stamping: bool,
    /// Which of its room's markers arrived.
    seen: Vec<bool>,
    /// Each update's latency in µs, by its marker (`NOT_RECEIVED`: not received, or its
    /// sending time was not yet known when it arrived).
    by_update: Vec<u32>,
    /// Got its sync step 2 (counted as connected).
    synced: bool,
}

impl super::readers::Handler for Viewer {
    fn message(&mut self, bytes: &[u8], arrived: Option<std::time::SystemTime>) {
        if bytes.first() != Some(&0) {
            return; // awareness and the like
        }
        if !self.synced {
            self.synced = true;
            self.synced_count.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.start.elapsed().as_micros() as u64;
        for seq in markers(bytes) {
            if seq < self.seen.len() && !self.seen[seq] {
                self.seen[seq] = true;
                let t = self.sent.at[seq].load(Ordering::Acquire);
                if t > 0 {
                    self.delivered.0.fetch_add(1, Ordering::Relaxed);
                    // Clamped below the mark of an update not received.
                    self.by_update[seq] = (now.saturating_sub(t) as u32).min(NOT_RECEIVED - 1);
                    if let Some(arrived) = arrived {
                        let sent_ns = self.sent.wall_ns[seq].load(Ordering::Acquire);
                        self.socket_us
                            .push(micros_between(sent_ns, wall_ns(arrived)));
                    }
                }
            }
        }
    }
}

impl Viewer {
    /// The latencies (µs) of the updates it received.
    fn latencies(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_update
            .iter()
            .copied()
            .filter(|&l| l != NOT_RECEIVED)
    }

    fn new(
        room: usize,
        sent: Arc<Sent>,
        start: Instant,
        synced_count: Arc<AtomicUsize>,
        delivered: Arc<Tally>,
    ) -> Viewer {
        Viewer {
            room,
            seen: vec![false; sent.at.len()],
            by_update: vec![NOT_RECEIVED; sent.at.len()],
            sent,
            start,
            synced_count,
            delivered,
            socket_us: Vec::new(),
            stamping: false,
            synced: false,
        }
    }
}

/// Connects `viewer` to `url`, asks for the document and hands it to reader thread `thread`.
async fn connect_viewer(
    url: String,
    thread: usize,
    mut viewer: Viewer,
    readers: super::readers::Adder<Viewer>,
) -> anyhow::Result<()> {
    let stream = crate::net::connect(&url, None).await?;
    let mut ws = super::rawws::RawWs::handshake(&url, stream).await?;
    viewer.stamping = ws.stamp_arrivals();
    ws.send_binary(&crate::protocol::sync_step1(&yrs::StateVector::default()))
        .await?;
    readers.add(thread, ws, viewer)
}

/// A room's writer, connected (and so holding its room open on either server) before the
/// measurement starts: connecting is not typing, and Node's room creation is not a viewer's cost.
struct Writer {
    sink: futures_util::stream::SplitSink<Ws, WsMessage>,
    reader: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn connect(url: &str) -> anyhow::Result<Writer> {
        let mut ws = connect(url).await?;
        ws.send(WsMessage::binary(crate::protocol::sync_step1(
            &yrs::StateVector::default(),
        )))
        .await?;
        // Drain whatever the server sends, so its queue to us never fills.
        let (sink, mut stream) = ws.split();
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        Ok(Writer { sink, reader })
    }

    async fn type_markers(
        mut self,
        sent: Arc<Sent>,
        start: Instant,
        flush: Duration,
        until: Instant,
        phase: Duration,
    ) -> anyhow::Result<()> {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text(crate::protocol::TEXT_NAME);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, flush);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0usize;
        while Instant::now() < until && seq < sent.at.len() {
            tick.tick().await;
            let update = {
                let mut txn = doc.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len, &format!("<{seq:06}>"));
                txn.encode_update_v1()
            };
            sent.wall_ns[seq].store(wall_ns(std::time::SystemTime::now()), Ordering::Release);
            sent.at[seq].store(start.elapsed().as_micros().max(1) as u64, Ordering::Release);
            sent.count.store(seq + 1, Ordering::Release);
            self.sink
                .send(WsMessage::binary(crate::protocol::sync_update(update)))
                .await?;
            seq += 1;
        }
        self.reader.abort();
        Ok(())
    }
}

/// One update's latencies over the viewers that got it, summed up.
#[derive(Debug, Clone, Copy, PartialEq)]
struct UpdateTail {
    room: usize,
    seq: usize,
    /// When it was sent, µs into the typing.
    at_us: u64,
    p50_ms: f64,
    p99_ms: f64,
}

/// How long before an update's send a slowed look still counts: a little over one look's
/// spacing, so that a slowdown already under way when it was sent shows on some CPU.
const SLOWED_BEFORE: Duration = Duration::from_millis(6);
/// How long after its send a slowed look counts against an update: the same for every server
/// (a window that ran until the update's last viewer read it would catch more of a slower
/// server's updates, and the later ones of each), and the target's 20 ms.
const SLOWED_WITHIN: Duration = Duration::from_millis(20);

/// Which updates had a look of the host probe slowed near their sending, [room][update]: from
/// [`SLOWED_BEFORE`] before it to [`SLOWED_WITHIN`] after it.
fn host_slowed(sent: &[Arc<Sent>], host: &[super::hostprobe::Sample]) -> Vec<Vec<bool>> {
    let before = SLOWED_BEFORE.as_micros() as u64;
    let within = SLOWED_WITHIN.as_micros() as u64;
    sent.iter()
        .map(|s| {
            s.at.iter()
                .take(s.count.load(Ordering::Acquire))
                .map(|at| {
                    let at = at.load(Ordering::Acquire);
                    super::hostprobe::slowed_between(host, at.saturating_sub(before), at + within)
                })
                .collect()
        })
        .collect()
}

/// The run's three slowest updates by their p99 over the viewers that got them, and the
/// median update's p99: whether a run's p99 is all its updates or one late update (a run's
/// p99 is 1 % of its samples, and one update of 50 is 2 %).
fn slowest_updates(viewers: &[Viewer], sent: &[Arc<Sent>], typing_us: u64) -> Option<String> {
    // Each update's latencies, gathered in one pass over the viewers: [room][update].
    let mut got: Vec<Vec<Vec<u32>>> = sent
        .iter()
        .map(|s| vec![Vec::new(); s.count.load(Ordering::Acquire)])
        .collect();
    for v in viewers {
        for (seq, bucket) in got[v.room].iter_mut().enumerate() {
            match v.by_update.get(seq) {
                Some(&l) if l != NOT_RECEIVED => bucket.push(l),
                _ => {}
            }
        }
    }
    let mut updates = Vec::new();
    for (room, per_update) in got.iter_mut().enumerate() {
        for (seq, latencies) in per_update.iter_mut().enumerate() {
            if latencies.is_empty() {
                continue;
            }
            latencies.sort_unstable();
            updates.push(UpdateTail {
                room,
                seq,
                at_us: sent[room].at[seq]
                    .load(Ordering::Acquire)
                    .saturating_sub(typing_us),
                p50_ms: percentile(latencies, 0.5),
                p99_ms: percentile(latencies, 0.99),
            });
        }
    }
    describe_updates(updates)
}

/// See [`slowest_updates`].
fn describe_updates(mut updates: Vec<UpdateTail>) -> Option<String> {
    if updates.is_empty() {
        return None;
    }
    updates.sort_by(|a, b| b.p99_ms.total_cmp(&a.p99_ms));
    let median = updates[updates.len() / 2].p99_ms;
    let worst: Vec<String> = updates
        .iter()
        .take(3)
        .map(|u| {
            let at = u.at_us as f64 / 1e6;
            format!(
                "room {} #{} at {at:.1} s {:.1} / {:.1} ms",
                u.room, u.seq, u.p50_ms, u.p99_ms
            )
        })
        .collect();
    Some(format!(
        "slowest updates (p50 / p99 over their viewers): {}; the median update's p99: {median:.1} ms",
        worst.join(", ")
    ))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

/// One server, one viewer count.
pub async fn run_one(
    kind: ServerKind,
    viewers: usize,
    rooms: usize,
    seconds: f64,
    flush: Duration,
) -> anyhow::Result<FanoutRow> {
    let rooms = rooms.clamp(1, viewers.max(1));
    let server = Server::start(kind).await?;
    let mut urls = Vec::with_capacity(rooms);
    let mut writers = Vec::with_capacity(rooms);
    for i in 0..rooms {
        let (w, v) = server.room(i).await?;
        // The writers join first: every room exists (Node makes one on first connect) before
        // the baseline memory is read, and connecting is not part of the typing.
        writers.push(Writer::connect(&w).await?);
        urls.push(v);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_before, _) = server.usage();
    let start = Instant::now();
    let max_updates = (seconds / flush.as_secs_f64()).ceil() as usize + 1;
    let sent: Vec<Arc<Sent>> = (0..rooms)
        .map(|_| {
            Arc::new(Sent {
                at: (0..max_updates).map(|_| AtomicU64::new(0)).collect(),
                wall_ns: (0..max_updates).map(|_| AtomicU64::new(0)).collect(),
                count: AtomicUsize::new(0),
            })
        })
        .collect();
    let synced: Vec<Arc<AtomicUsize>> = (0..rooms).map(|_| Arc::default()).collect();
    let total_synced = || {
        synced
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    // As many reader threads as the runtime has workers: the generator's parallelism is the
    // runtime's, as when each viewer was a task on it.
    let readers = super::readers::Readers::<Viewer>::start(
        tokio::runtime::Handle::current().metrics().num_workers(),
    )?;
    let delivered: Vec<Arc<Tally>> = (0..readers.threads()).map(|_| Arc::default()).collect();
    let total_delivered = || {
        delivered
            .iter()
            .map(|d| d.0.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    let adder = readers.adder();
    let connecting = Instant::now();
    // Connect in waves so the listen backlog never overflows.
    for wave in (0..viewers).step_by(200) {
        let wave = wave..(wave + 200).min(viewers);
        let before = total_synced();
        let mut tasks = Vec::with_capacity(wave.len());
        for i in wave.clone() {
            let room = i % rooms;
            let thread = i % delivered.len();
            let viewer = Viewer::new(
                room,
                sent[room].clone(),
                start,
                synced[room].clone(),
                delivered[thread].clone(),
            );
            tasks.push(tokio::spawn(connect_viewer(
                urls[room].clone(),
                thread,
                viewer,
                adder.clone(),
            )));
        }
        // A viewer that could not connect (or not within the wave's time) will never sync.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut failed = 0;
        for mut t in tasks {
            match tokio::time::timeout_at(deadline.into(), &mut t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(_) => failed += 1,
                // Not connected in time: it must not join later, in the middle of the typing.
                Err(_) => {
                    t.abort();
                    failed += 1;
                }
            }
        }
        while total_synced() + failed < before + wave.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let connected = total_synced();
    let connect_secs = connecting.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_idle, cpu_before) = server.usage();

    let typing = Instant::now();
    let until = typing + Duration::from_secs_f64(seconds);
    let probe = super::hostprobe::HostProbe::start(start, super::hostprobe::EVERY);
    let typists: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(r, w)| {
            // Writers in different rooms are spread evenly over the tick, as independent
            // typists are; in lockstep every tick would be a burst of `rooms` updates at once.
            tokio::spawn(w.type_markers(
                sent[r].clone(),
                start,
                flush,
                until,
                flush.mul_f64(r as f64 / rooms as f64),
            ))
        })
        .collect();
    for t in typists {
        t.await??;
    }
    // Stragglers: wait until every synced viewer has every update its room's writer sent (or
    // 10 s, for a server that fell behind or dropped viewers). The CPU figure covers this
    // too: a server that falls behind does its work late, not never.
    let expected: usize = (0..rooms)
        .map(|r| synced[r].load(Ordering::Relaxed) * sent[r].count.load(Ordering::Acquire))
        .sum();
    let grace = Instant::now() + Duration::from_secs(10);
    while total_delivered() < expected && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy_for = typing.elapsed().as_secs_f64();
    let (_, cpu_after) = server.usage();
    let ended_us = start.elapsed().as_micros() as u64;
    let ended_ns = wall_ns(std::time::SystemTime::now());
    let viewers_seen = tokio::task::spawn_blocking(move || readers.finish()).await?;
    let host = match probe {
        Some(probe) => Some(tokio::task::spawn_blocking(move || probe.finish()).await?),
        None => None,
    }
    .filter(|looks| !looks.is_empty());
    let slowed = host.as_deref().map(|host| host_slowed(&sent, host));
    let mut calm = Vec::new();
    let mut all = Vec::new();
    let mut at_socket = Vec::new();
    // Socket figures only if every viewer stamps and every update had its stamp (else a mix).
    let mut all_stamping = true;
    let mut unstamped = 0usize;
    let (mut complete, mut missing) = (0, 0);
    let typing_us = typing.duration_since(start).as_micros() as u64;
    if let Some(line) = slowest_updates(&viewers_seen, &sent, typing_us) {
        eprintln!("fanout: {line}");
    }
    for v in viewers_seen {
        let room = v.room;
        let count = sent[room].count.load(Ordering::Acquire);
        let received = v.latencies().count();
        if received == count && received > 0 {
            complete += 1;
        }
        all_stamping &= v.stamping;
        if v.stamping {
            unstamped += received.saturating_sub(v.socket_us.len());
        }
        let calm_update = |seq: usize| {
            slowed
                .as_ref()
                .is_some_and(|s| !s[room].get(seq).copied().unwrap_or(true))
        };
        for (seq, latency) in v.by_update.iter().enumerate() {
            if *latency != NOT_RECEIVED {
                all.push(*latency);
                if calm_update(seq) {
                    calm.push(*latency);
                }
            }
        }
        at_socket.extend(v.socket_us);
        // An update a synced viewer never got counts as late as the run's end: leaving it
        // out would flatter a server that drops what it cannot deliver in time.
        if v.synced {
            for (seq, seen) in v.seen.iter().enumerate().take(count) {
                if !seen {
                    missing += 1;
                    let t = sent[room].at[seq].load(Ordering::Acquire);
                    let late = ended_us.saturating_sub(t) as u32;
                    all.push(late);
                    // Never delivered is the server's doing, whatever the host did.
                    if slowed.is_some() {
                        calm.push(late);
                    }
                    let t = sent[room].wall_ns[seq].load(Ordering::Acquire);
                    at_socket.push(micros_between(t, ended_ns));
                }
            }
        }
    }
    calm.sort_unstable();
    let host_slowed_updates = slowed
        .as_ref()
        .map(|s| s.iter().flatten().filter(|&&slowed| slowed).count());
    let host_slowed_share = host.as_deref().and_then(super::hostprobe::slowed_share);
    let updates_sent = sent.iter().map(|s| s.count.load(Ordering::Acquire)).sum();
    if let (Some(share), Some(n)) = (host_slowed_share, host_slowed_updates) {
        let others = if calm.is_empty() {
            "none left".to_string()
        } else {
            format!("{:.1} ms", percentile(&calm, 0.99))
        };
        eprintln!(
            "fanout: {}: {:.1} % of the host probe's looks ran at {}x their fastest or slower; \
             {n} of {updates_sent} updates had one within {} ms of their sending; p99 over the \
             other updates: {others}",
            kind.name(),
            share * 100.0,
            super::hostprobe::SLOWED,
            SLOWED_WITHIN.as_millis(),
        );
    }
    server.stop().await;
    all.sort_unstable();
    at_socket.sort_unstable();
    let stamped = all_stamping && unstamped == 0 && !at_socket.is_empty();
    if unstamped > 0 {
        eprintln!(
            "fanout: {unstamped} update(s) came without an arrival stamp of their own (read \
             together with a later message): no figures at the socket for this run"
        );
    }
    let ticks_per_sec = 100.0;
    Ok(FanoutRow {
        server: kind.name().to_string(),
        rooms,
        viewers,
        connected,
        complete,
        missing,
        updates_sent,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        max_ms: all.last().map_or(f64::NAN, |m| f64::from(*m) / 1000.0),
        rss_per_conn_kib: rss_idle.saturating_sub(rss_before) as f64 / connected.max(1) as f64,
        rss_mib: rss_idle as f64 / 1024.0,
        cpu_pct: (cpu_after.saturating_sub(cpu_before)) as f64 / ticks_per_sec / busy_for * 100.0,
        connect_secs,
        p99_runs_ms: Vec::new(),
        socket_p50_ms: stamped.then(|| percentile(&at_socket, 0.50)),
        socket_p99_ms: stamped.then(|| percentile(&at_socket, 0.99)),
        host_slowed_share,
        host_slowed_updates,
        p99_unslowed_ms: (!calm.is_empty()).then(|| percentile(&calm, 0.99)),
        p99_unslowed_runs_ms: Vec::new(),
    })
}

/// Every server × every viewer count, `runs` times with the servers alternating; prints a table
/// with ratios (of the median runs), writes JSON and plots.
pub async fn run(config: &FanoutConfig) -> anyhow::Result<Vec<FanoutRow>> {
    let mut rows = Vec::new();
    for &n in &config.viewers {
        let mut runs: Vec<Vec<FanoutRow>> = vec![Vec::new(); config.servers.len()];
        for run in 1..=config.runs.max(1) {
            for (k, &kind) in config.servers.iter().enumerate() {
                eprintln!(
                    "fanout: {} with {n} viewers in {} room(s), run {run} of {}…",
                    kind.name(),
                    config.rooms,
                    config.runs.max(1)
                );
                match run_one(kind, n, config.rooms, config.seconds, config.flush).await {
                    Ok(row) => runs[k].push(row),
                    Err(e) => eprintln!("fanout: {} with {n} viewers failed: {e:#}", kind.name()),
                }
            }
        }
        rows.extend(runs.into_iter().filter_map(median_run));
    }
    print_table(&rows);
    if let Some(dir) = &config.out_dir {
        write_outputs(dir, &rows)?;
    }
    Ok(rows)
}

/// The run with the median p99 (the lower middle for an even count), listing every run's p99.
fn median_run(mut runs: Vec<FanoutRow>) -> Option<FanoutRow> {
    let p99s: Vec<f64> = runs.iter().map(|r| r.p99_ms).collect();
    let unslowed: Vec<Option<f64>> = runs.iter().map(|r| r.p99_unslowed_ms).collect();
    runs.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
    let mid = runs.len().checked_sub(1)? / 2;
    let mut row = runs.swap_remove(mid);
    row.p99_runs_ms = p99s;
    row.p99_unslowed_runs_ms = unslowed;
    Some(row)
}

pub fn print_table(rows: &[FanoutRow]) {
    println!(
        "| server | rooms | viewers | synced | got every update | never delivered | p50 ms | p99 ms | max ms | p99 × node | p99 of each run | at the socket: p50 / p99 ms | p99 × node | RSS/viewer KiB | × node | CPU % | host probe: looks ≥3× slow, updates with one (the median run) | p99 of updates without one, each run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let node = rows
            .iter()
            .find(|n| n.server.starts_with("node") && n.viewers == r.viewers && n.rooms == r.rooms);
        let ratio = |a: f64, b: Option<f64>| match b {
            Some(b) if b > 0.0 && r.server == "pairedit" => format!("{:.2}", a / b),
            _ => "–".to_string(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.1} | {} | {:.0} | {} | {} |",
            r.server,
            r.rooms,
            r.viewers,
            r.connected,
            r.complete,
            r.missing,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            ratio(r.p99_ms, node.map(|n| n.p99_ms)),
            r.p99_runs_ms
                .iter()
                .map(|p| format!("{p:.1}"))
                .collect::<Vec<_>>()
                .join(" / "),
            match (r.socket_p50_ms, r.socket_p99_ms) {
                (Some(p50), Some(p99)) => format!("{p50:.2} / {p99:.2}"),
                _ => "–".to_string(),
            },
            r.socket_p99_ms.map_or_else(
                || "–".to_string(),
                |ours| ratio(ours, node.and_then(|n| n.socket_p99_ms))
            ),
            r.rss_per_conn_kib,
            ratio(r.rss_per_conn_kib, node.map(|n| n.rss_per_conn_kib)),
            r.cpu_pct,
            match (r.host_slowed_share, r.host_slowed_updates) {
                (Some(share), Some(n)) => {
                    format!("{:.1} %, {n} of {}", share * 100.0, r.updates_sent)
                }
                _ => "–".to_string(),
            },
            r.p99_unslowed_runs_ms
                .iter()
                .map(|p| p.map_or_else(|| "–".to_string(), |p| format!("{p:.1}")))
                .collect::<Vec<_>>()
                .join(" / "),
        );
    }
}

fn write_outputs(dir: &Path, rows: &[FanoutRow]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("fanout.json"), serde_json::to_string_pretty(rows)?)?;
    let series = |f: &dyn Fn(&FanoutRow) -> f64| -> Vec<super::svg::Series> {
        let mut names: Vec<&str> = rows.iter().map(|r| r.server.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|name| super::svg::Series {
                name: name.to_string(),
                points: rows
                    .iter()
                    .filter(|r| r.server == name)
                    .map(|r| (r.viewers as f64, f(r)))
                    .collect(),
            })
            .collect()
    };
    type Plot<'a> = (&'a str, &'a str, &'a str, &'a str, fn(&FanoutRow) -> f64);
    let plots: [Plot; 2] = [
        (
            "fanout-latency.svg",
            "Writer-to-viewer latency, p99",
            "viewers (log)",
            "p99 ms",
            |r| r.p99_ms,
        ),
        (
            "fanout-memory.svg",
            "Server memory per idle viewer",
            "connections (log)",
            "KiB per connection",
            |r| r.rss_per_conn_kib,
        ),
    ];
    for (file, title, x, y, value) in plots {
        let chart = super::svg::line_chart(title, x, y, &series(&value));
        std::fs::write(dir.join(file), chart)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_updates_and_the_median_ones_p99() {
        assert_eq!(describe_updates(Vec::new()), None);
        // Five updates of one room; #3 came late to everyone, #1 to a few.
        let update = |seq: usize, p50_ms, p99_ms| UpdateTail {
            room: 0,
            seq,
            at_us: seq as u64 * 200_000,
            p50_ms,
            p99_ms,
        };
        let updates = vec![
            update(0, 4.0, 8.0),
            update(1, 5.0, 15.0),
            update(2, 4.5, 9.0),
            update(3, 29.0, 36.0),
            update(4, 4.0, 7.0),
        ];
        let line = describe_updates(updates).unwrap();
        assert_eq!(
            line,
            "slowest updates (p50 / p99 over their viewers): room 0 #3 at 0.6 s 29.0 / 36.0 ms, \
             room 0 #1 at 0.2 s 5.0 / 15.0 ms, room 0 #2 at 0.4 s 4.5 / 9.0 ms; the median \
             update's p99: 9.0 ms"
        );
    }

    /// Latencies are grouped by room and update over all viewers; an update nobody got is left
    /// out, and a viewer's missing update does not count as a latency.
    #[test]
    fn updates_are_summed_up_per_room() {
        let sent = |sent_at: &[u64]| {
            Arc::new(Sent {
                at: sent_at.iter().map(|&t| AtomicU64::new(t)).collect(),
                wall_ns: sent_at.iter().map(|_| AtomicU64::new(0)).collect(),
                count: AtomicUsize::new(sent_at.len()),
            })
        };
        let rooms = [sent(&[1_000, 201_000]), sent(&[101_000, 301_000, 501_000])];
        let start = Instant::now();
        let viewer = |room: usize, by_update: &[u32]| {
            let mut v = Viewer::new(
                room,
                rooms[room].clone(),
                start,
                Arc::default(),
                Arc::default(),
            );
            v.by_update[..by_update.len()].copy_from_slice(by_update);
            v
        };
        let viewers = [
            viewer(0, &[2_000, 4_000]),
            viewer(0, &[2_000, NOT_RECEIVED]),
            viewer(1, &[3_000, 30_000, NOT_RECEIVED]),
            viewer(1, &[3_000, 20_000, NOT_RECEIVED]),
        ];
        assert_eq!(
            slowest_updates(&viewers, &rooms, 1_000).unwrap(),
            "slowest updates (p50 / p99 over their viewers): room 1 #1 at 0.3 s 30.0 / 30.0 ms, \
             room 0 #1 at 0.2 s 4.0 / 4.0 ms, room 1 #0 at 0.1 s 3.0 / 3.0 ms; the median \
             update's p99: 3.0 ms"
        );
    }

    /// An update counts as slowed by a slowed look from a little before its sending to 20 ms
    /// after, however long its delivery took.
    #[test]
    fn updates_with_a_slowed_look_near_their_sending() {
        let sent = Arc::new(Sent {
            at: [1_000u64, 201_000, 401_000, 601_000]
                .iter()
                .map(|&t| AtomicU64::new(t))
                .collect(),
            wall_ns: (0..4).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(4),
        });
        let look = |at_us, slowdown| super::super::hostprobe::Sample {
            at_us,
            cpu: 0,
            slowdown,
        };
        let host = [
            look(3_000, 2.0),    // under the line, during #0
            look(100_000, 9.0),  // between updates
            look(220_000, 5.0),  // 19 ms after #1
            look(398_000, 4.0),  // 3 ms before #2
            look(622_000, 12.0), // 21 ms after #3: too late to count
        ];
        assert_eq!(
            host_slowed(&[sent], &host),
            vec![vec![false, true, true, false]]
        );
    }
}
