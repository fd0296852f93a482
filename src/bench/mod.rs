//! Benchmarks behind `pairedit bench …` (see BENCHMARKS.md): each compares pairedit with a real
//! peer measured in the same run.

pub mod fanout;
pub mod replay;
pub mod svg;

pub use replay::{ReplayResult, peak_rss_kib, replay_all, replay_one};

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

/// Resident set and CPU time (user + system, in clock ticks of 10 ms) of process `pid`.
pub fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((rss, utime + stime))
}
