//! Benchmarks behind `pairedit bench …` (see BENCHMARKS.md): each compares pairedit with a real
//! peer measured in the same run.

pub mod fanout;
pub mod hostprobe;
pub mod ingest;
mod rawws;
mod readers;
pub mod replay;
pub mod svg;

pub use replay::{ReplayResult, replay_all, replay_one};

/// A Node script of the bench, if its packages are installed (`npm ci --prefix bench/node`).
pub fn node_script(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/node");
    let ready = dir.join("node_modules/yjs").exists()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    ready.then(|| dir.join(name))
}

/// A `kB` field of `/proc/PROC/status` (PROC: a pid or `self`), e.g. `VmRSS`, `VmHWM`.
pub fn status_kib(proc: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{proc}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    status_kib("self", "VmHWM").unwrap_or(0)
}

/// Resident set and CPU time (user + system, in clock ticks of 10 ms) of process `pid`.
pub fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let rss = status_kib(&pid.to_string(), "VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((rss, utime + stime))
}
