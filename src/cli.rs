//! Command-line types (clap derive) only; the work is in [`crate::commands`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// pairedit: edit one file together, from your terminals.
///
/// Run a relay with `pairedit serve`, make a room with `pairedit room create`, and read a room
/// with `pairedit cat CODE`. A join code looks like ws://HOST:PORT/r/ROOM/TOKEN; the write code
/// lets its holder type, the view code only lets them watch (the relay enforces it).
#[derive(Debug, Parser)]
#[command(name = "pairedit", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open FILE in the editor and share it: starts a relay in this process (or uses --relay)
    /// and shows a write code and a view code to give to teammates.
    ///
    /// Example: pairedit host src/main.rs, then a teammate runs: pairedit join CODE
    Host(HostArgs),
    /// Join a room in the editor: a write code lets you type, a view code lets you watch.
    Join(JoinArgs),
    /// Run the relay alone (for a team, or the internet: with --tls-cert/--tls-key, or behind a
    /// TLS proxy).
    ///
    /// Prints `listening on http://ADDR` (https:// with TLS) as its first line. Stop it with Ctrl-C or SIGTERM: every
    /// connection is closed cleanly and, with --data-dir, every room is saved first.
    Serve(ServeArgs),
    /// Manage rooms on a running relay.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Print a room's current text to stdout and exit (for scripts and tests).
    ///
    /// Example: pairedit cat ws://127.0.0.1:7070/r/ROOM/TOKEN > snapshot.rs
    Cat {
        /// A write or view code.
        code: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
    /// Measurements (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct EditorArgs {
    /// Your name as others see it (default: your login).
    #[arg(long, env = "PAIREDIT_NAME")]
    pub name: Option<String>,
    /// Colour theme: pairedit-dark or pairedit-light.
    #[arg(long, default_value = crate::tui::highlight::DEFAULT_THEME, env = "PAIREDIT_THEME")]
    pub theme: String,
    /// How often local edits are sent, in milliseconds.
    #[arg(long, default_value_t = crate::protocol::DEFAULT_FLUSH_MS)]
    pub flush_ms: u64,
    /// Where logs go (never onto the screen).
    #[arg(long, env = "PAIREDIT_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// Trust for `wss://` and `https://` relays.
#[derive(Debug, Clone, Args)]
pub struct ClientTlsArgs {
    /// Also trust this CA (PEM) for wss:// relays, e.g. a relay's self-signed certificate. The
    /// system's trust store and Mozilla's roots are always trusted.
    #[arg(long, env = "PAIREDIT_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS client setup `--ca-cert` asks for (read once; reconnects reuse it). `None`
    /// without it: the default trust is loaded lazily, and only for a `wss://` or `https://`
    /// relay, so a plain `ws://` session never reads the system's certificate store.
    pub fn config(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        self.ca_cert
            .as_deref()
            .map(|ca| crate::net::client_config(Some(ca)))
            .transpose()
    }
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// The file to share (UTF-8 text; saved with Ctrl-S, atomically, keeping its line endings;
    /// a symbolic link is saved through, and stays a link). A file that does not exist yet, in a
    /// directory that does, starts empty and is created by the first save (which asks first if
    /// someone else made one meanwhile).
    pub file: PathBuf,
    /// Use this relay instead of starting one, e.g. https://relay.example.com (a relay run with
    /// `pairedit serve`; the built-in one serves plain TCP on --listen)
    #[arg(long, env = "PAIREDIT_RELAY")]
    pub relay: Option<String>,
    /// Where the built-in relay listens; use 0.0.0.0:7070 to let others on your network join.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Base URL written into the codes for the built-in relay (e.g. ws://my-laptop.local:7070).
    #[arg(long)]
    pub public_url: Option<String>,
    /// The --relay's create token, if it asks for one.
    #[arg(long, env = "PAIREDIT_CREATE_TOKEN", hide_env_values = true)]
    pub create_token: Option<String>,
    /// Open the unsaved changes a crashed session left in .FILE.pairedit-recovery (without
    /// this flag pairedit asks, when it can; changes not opened are moved to
    /// FILE.unsaved-SECONDS beside the file, never lost).
    #[arg(long)]
    pub recover: bool,
    #[command(flatten)]
    pub editor: EditorArgs,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// A write or view code from the host, e.g. ws://HOST:PORT/r/ROOM/TOKEN
    pub code: String,
    /// Keep a local copy: Ctrl-S writes the shared text to this file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub editor: EditorArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:7070", env = "PAIREDIT_LISTEN", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Keep rooms in this directory across restarts (saved periodically and on shutdown).
    #[arg(long, env = "PAIREDIT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Base URL written into join codes, e.g. wss://pair.example.com (default: the Host the
    /// room was created through).
    #[arg(long, env = "PAIREDIT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, default_value_t = crate::protocol::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Largest document a room may hold, in bytes (encoded).
    #[arg(long, default_value_t = 64 << 20)]
    pub max_doc: usize,
    /// Most connections per room.
    #[arg(long, default_value_t = 1024)]
    pub max_members: usize,
    /// Most rooms held.
    #[arg(long, default_value_t = 10_000)]
    pub max_rooms: usize,
    /// Messages queued per connection before it is disconnected as too slow.
    #[arg(long, default_value_t = 256)]
    pub send_queue: usize,
    /// With --data-dir: rooms nobody has been in for this many seconds are saved and dropped
    /// from memory, and loaded again when someone joins.
    #[arg(long, default_value_t = 600)]
    pub evict_idle_secs: u64,
    /// Most open connections from one client address, an IPv6 host by its /64 (raise it for
    /// load tests from one host).
    #[arg(long, default_value_t = 512)]
    pub max_conns_per_ip: usize,
    /// Most connections from one client address still speaking plain HTTP: requests under way
    /// and WebSockets not yet upgraded (each must send its headers within 10 s and upgrade
    /// within 30 s). Raise it for load tests that connect many at once.
    #[arg(long, default_value_t = 256)]
    pub max_pending_per_ip: usize,
    /// Ping a member not heard from for this many seconds; drop one silent for twice as long
    /// (a peer that vanished without closing: its cursor would stay on everyone's screen).
    /// 0 turns pings off.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub ping_secs: u64,
    /// Require this secret to create rooms (`room create --create-token`, or the
    /// PAIREDIT_CREATE_TOKEN variable on the creating side). Joining needs only a room's code.
    #[arg(long, env = "PAIREDIT_CREATE_TOKEN", hide_env_values = true)]
    pub create_token: Option<String>,
    /// Serve TLS (codes become wss://) with this certificate chain (PEM); needs --tls-key.
    /// Clients trust it through the system's store, or with `--ca-cert` when self-signed.
    #[arg(
        long,
        env = "PAIREDIT_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(
        long,
        env = "PAIREDIT_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room and print its write code and view code.
    Create {
        /// The relay, e.g. http://127.0.0.1:7070 (ws:// and bare HOST:PORT work too).
        #[arg(long, env = "PAIREDIT_RELAY", default_value = "http://127.0.0.1:7070")]
        relay: String,
        /// Print the relay's JSON answer instead of two lines.
        #[arg(long)]
        json: bool,
        /// The relay's create token, if it asks for one.
        #[arg(long, env = "PAIREDIT_CREATE_TOKEN", hide_env_values = true)]
        create_token: Option<String>,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
}

/// Which servers `bench fanout` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FanoutServers {
    Pairedit,
    Node,
    Both,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Fan-out: one writer per room typing (one update per flush tick), N viewers;
    /// writer-to-viewer latency, completeness, server RSS per viewer and CPU, for pairedit's relay
    /// and the Node reference server (`npm ci --prefix bench/node`) in the same run. A probe on each
    /// core says which updates were sent while the host slowed the machine down, and gives the
    /// p99 over the others beside the p99 over all. Raise `ulimit -n` above the viewer count
    /// first.
    ///
    /// Example: pairedit bench fanout --viewers 100,1000,10000 --out bench/results
    Fanout {
        /// Viewer counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [100, 1000])]
        viewers: Vec<usize>,
        /// Rooms the viewers are spread over, each with its own writer.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Seconds of typing per run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Writer flush interval, in milliseconds.
        #[arg(long, default_value_t = crate::protocol::DEFAULT_FLUSH_MS)]
        flush_ms: u64,
        /// Servers to load: pairedit, node, or both (node needs `npm ci --prefix bench/node`).
        #[arg(long, value_enum, default_value_t = FanoutServers::Both)]
        server: FanoutServers,
        /// Runs per point, servers alternating; the run with the median p99 is reported and
        /// every run's p99 is listed (tail latency on a shared 2-core machine varies ±30 %).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
        runs: u32,
        /// Write fanout.json and SVG plots here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Ingest: what one small update costs a server as its document grows. A writer fills a
    /// room with one author's text (1 MB updates), then sends small appends (2 KB) back to back;
    /// a viewer waits for the last. Per append: wall time and the server's CPU, for pairedit's
    /// relay and the Node reference server in the same run.
    ///
    /// Example: pairedit bench ingest --mb 0,8,32
    Ingest {
        /// Document sizes to fill the room to, in MB (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [0, 8, 32])]
        mb: Vec<usize>,
        /// Appends timed at each size.
        #[arg(long, default_value_t = 200)]
        appends: usize,
        /// Servers to load: pairedit, node, or both (node needs `npm ci --prefix bench/node`).
        #[arg(long, value_enum, default_value_t = FanoutServers::Both)]
        server: FanoutServers,
    },
    /// Replay an editing trace through a writer and a replica: pairedit's sync core (rope +
    /// composed yrs edits) vs raw yrs vs Node yjs (if `npm ci --prefix bench/node` was run),
    /// each in its own process; prints time, update bytes and peak RSS with ratios.
    ///
    /// Example: pairedit bench replay --trace ../shared/traces/automerge-paper.json.gz
    Replay {
        /// An editing trace (.json or .json.gz).
        #[arg(long)]
        trace: PathBuf,
        /// Patches per merged update (the flush window).
        #[arg(long, default_value_t = 50)]
        window: usize,
        /// Runs per engine; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Run only this engine here and print its JSON result (pairedit or yrs).
        #[arg(long)]
        engine: Option<String>,
    },
    /// Update bytes for a trace: one update per flush tick vs one per edit.
    Updates {
        /// An editing trace (.json or .json.gz), e.g. ../shared/traces/rustcode.json.gz
        #[arg(long)]
        trace: PathBuf,
        /// Typing rate used to turn the trace into time: transactions per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Flush interval in milliseconds.
        #[arg(long, default_value_t = crate::protocol::DEFAULT_FLUSH_MS)]
        flush_ms: u64,
    },
    /// Highlighting throughput over a whole file, and the cost of re-highlighting the first
    /// screen after an edit on line 1.
    Highlight {
        /// A source file (its extension picks the syntax).
        file: PathBuf,
        #[arg(long, default_value = crate::tui::highlight::DEFAULT_THEME)]
        theme: String,
    },
    /// The editor's own cost of a key: each key's update and its frame drawn and encoded for a
    /// 120x50 terminal (into memory: no terminal, no network), in one process, repeatable. At the
    /// start of the file's first lines (typing into code), or with --at-end on a new last line
    /// (60 keys a line, then Enter). A big file's end is where the per-line work shows.
    ///
    /// Example: pairedit bench keys /tmp/pairedit-big.rs --at-end
    Keys {
        /// A source file (its extension picks the syntax).
        file: PathBuf,
        /// Type on new lines after the file's last one (Ctrl-End, Enter), not at its top.
        #[arg(long)]
        at_end: bool,
        /// Keys timed.
        #[arg(long, default_value_t = 500)]
        keys: usize,
        #[arg(long, default_value = crate::tui::highlight::DEFAULT_THEME)]
        theme: String,
    },
    /// Hold N idle viewer connections open on a room and report the relay's memory.
    Idle {
        /// A view (or write) code; its relay and room are used. Or give --url.
        #[arg(long, conflicts_with = "url")]
        code: Option<String>,
        /// A raw WebSocket URL (e.g. a Node y-websocket server's ws://127.0.0.1:1234/room).
        #[arg(long)]
        url: Option<String>,
        /// Number of connections.
        #[arg(long, default_value_t = 1000)]
        viewers: usize,
        /// Seconds to hold them before measuring.
        #[arg(long, default_value_t = 3)]
        hold: u64,
        /// The relay's process id, to read its RSS from /proc.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Run the host probe (a thread on each core timing a fixed piece of arithmetic by its own
    /// CPU time, as `bench fanout` does) until standard input closes, then print one line per
    /// look: `MICROS CPU SLOWDOWN`, MICROS on the monotonic clock (Python's
    /// `time.perf_counter()` on Linux), SLOWDOWN against that thread's fastest look. For
    /// benches written in other languages (`bench/editor.py`).
    Probe,
}

/// `--listen`: an address and port (`127.0.0.1:7070`, `[::1]:7070`), or a host name and port
/// (`localhost:7070`), which is looked up (its first address).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs as _;
    let hint = "expected HOST:PORT, e.g. 127.0.0.1:7070, 0.0.0.0:7070 or localhost:7070";
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{s} has no address; {hint}")),
        Err(e) => Err(format!("{e}; {hint}")),
    }
}

#[cfg(test)]
mod listen_tests {
    #[test]
    fn listen_takes_addresses_and_host_names() {
        assert_eq!(
            super::parse_listen("127.0.0.1:7070").unwrap().to_string(),
            "127.0.0.1:7070"
        );
        assert!(
            super::parse_listen("localhost:7070")
                .unwrap()
                .ip()
                .is_loopback()
        );
        assert!(
            super::parse_listen("localhost")
                .unwrap_err()
                .contains("HOST:PORT")
        );
    }
}
