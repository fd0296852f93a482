//! `pairedit bench replay`: an editing trace through a writer and a replica, four ways.
//!
//! - `pairedit`: the sync core as the editor uses it: each patch goes to the rope at once and is
//!   composed for yrs; every `window` patches the writer's updates are merged into one (the flush
//!   tick) and a second `SharedDoc` (yrs + rope mirror) applies it.
//! - `yrs`: raw yrs with the same batching and no mirror: one transaction per patch on the writer,
//!   its updates merged per window by the same `Batcher`, the replica applying them with no
//!   observer.
//! - `yjs`: the Node `yjs` package doing what `yrs` does (bench/node/replay.mjs).
//! - `yjs + delta`: the same, with the replica doing what an editor binding on Yjs does: it reads
//!   each update's `event.delta` and applies it to its own copy of the text. The targets are
//!   against plain `yjs`; this row shows what a Yjs-based editor pays for the change pairedit's
//!   mirror also needs.
//!
//! Each engine runs in its own process so its peak RSS is its own.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use yrs::{GetString, OffsetKind, Options, Text, Transact};

use crate::sync::{Batcher, SharedDoc};
use crate::trace::Trace;

/// What one engine reports (also the JSON line `--engine` prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayResult {
    pub engine: String,
    pub patches: usize,
    pub updates: usize,
    /// Sum of the merged updates' sizes (what would go on the wire, before framing).
    pub update_bytes: usize,
    pub millis: f64,
    pub peak_rss_kib: u64,
}

/// Runs one engine in this process.
pub fn replay_one(trace: &Trace, engine: &str, window: usize) -> anyhow::Result<ReplayResult> {
    let window = window.max(1);
    let patches: Vec<&crate::sync::Edit> = trace.txns.iter().flatten().collect();
    // The timer stops before the texts are read back for the check, as the yjs script's does.
    let started = Instant::now();
    let (updates, update_bytes, millis, writer_text, replica_text) = match engine {
        "pairedit" => {
            let mut writer = SharedDoc::new();
            let mut replica = SharedDoc::new();
            let mut batcher = Batcher::new();
            let (mut updates, mut bytes) = (0, 0);
            let mut in_replica = std::time::Duration::ZERO;
            for (i, p) in patches.iter().enumerate() {
                writer.apply_local(p)?;
                if (i + 1) % window == 0 || i + 1 == patches.len() {
                    for u in writer.take_outgoing() {
                        batcher.push(u);
                    }
                    if let Some(update) = batcher.flush()? {
                        let t = Instant::now();
                        replica.apply_remote(&update)?;
                        in_replica += t.elapsed();
                        updates += 1;
                        bytes += update.len();
                    }
                }
            }
            let millis = started.elapsed().as_secs_f64() * 1000.0;
            if std::env::var_os("REPLAY_DEBUG").is_some() {
                eprintln!(
                    "replica {:.0} ms, known {} placed {}, writer continued {} deleted by ID {}; state {} / {} bytes",
                    in_replica.as_secs_f64() * 1000.0,
                    replica.remote_known(),
                    replica.remote_placed(),
                    writer.continued_inserts(),
                    writer.deleted_by_id(),
                    writer.encode_state().len(),
                    replica.encode_state().len()
                );
            }
            (updates, bytes, millis, writer.text(), replica.text())
        }
        "yrs" => {
            let opts = || Options {
                offset_kind: OffsetKind::Utf16,
                ..Options::default()
            };
            let writer = yrs::Doc::with_options(opts());
            let replica = yrs::Doc::with_options(opts());
            let text = writer.get_or_insert_text(crate::protocol::TEXT_NAME);
            let rtext = replica.get_or_insert_text(crate::protocol::TEXT_NAME);
            let mut batcher = Batcher::new();
            let outgoing = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
            let sink = outgoing.clone();
            writer
                .observe_update_v1("bench", move |_, e: &yrs::UpdateEvent| {
                    if let Ok(mut v) = sink.lock() {
                        v.push(e.update.clone());
                    }
                })
                .map_err(|e| anyhow::anyhow!("observe: {e}"))?;
            // Trace offsets are chars; yrs's are UTF-16 units. They differ only past U+FFFF:
            // keep a rope for the conversion only when the trace has such characters.
            let astral = patches
                .iter()
                .any(|p| p.insert.chars().any(|c| c > '\u{FFFF}'));
            let mut rope = astral.then(ropey::Rope::new);
            let (mut updates, mut bytes) = (0, 0);
            for (i, p) in patches.iter().enumerate() {
                let (at, del) = match &rope {
                    Some(r) => {
                        let a = r.char_to_utf16_cu(p.at);
                        (a as u32, (r.char_to_utf16_cu(p.at + p.delete) - a) as u32)
                    }
                    None => (p.at as u32, p.delete as u32),
                };
                {
                    let mut txn = writer.transact_mut();
                    if del > 0 {
                        text.remove_range(&mut txn, at, del);
                    }
                    if !p.insert.is_empty() {
                        text.insert(&mut txn, at, &p.insert);
                    }
                }
                if let Some(r) = &mut rope {
                    p.apply_to(r);
                }
                if (i + 1) % window == 0 || i + 1 == patches.len() {
                    let batch = std::mem::take(
                        &mut *outgoing.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
                    );
                    for u in batch {
                        batcher.push(u);
                    }
                    let Some(update) = batcher.flush()? else {
                        continue;
                    };
                    let decoded = crate::protocol::decode_update(&update)?;
                    replica.transact_mut().apply_update(decoded)?;
                    updates += 1;
                    bytes += update.len();
                }
            }
            let millis = started.elapsed().as_secs_f64() * 1000.0;
            if std::env::var_os("REPLAY_DEBUG").is_some() {
                use yrs::ReadTxn as _;
                let state = |d: &yrs::Doc| {
                    d.transact()
                        .encode_state_as_update_v1(&yrs::StateVector::default())
                        .len()
                };
                eprintln!("state {} / {} bytes", state(&writer), state(&replica));
            }
            let w = text.get_string(&writer.transact());
            let r = rtext.get_string(&replica.transact());
            (updates, bytes, millis, w, r)
        }
        other => anyhow::bail!("unknown engine {other:?} (pairedit, yrs)"),
    };
    anyhow::ensure!(
        writer_text == trace.end,
        "{engine}: writer did not reach endContent"
    );
    anyhow::ensure!(
        replica_text == trace.end,
        "{engine}: replica did not reach endContent"
    );
    Ok(ReplayResult {
        engine: engine.to_string(),
        patches: patches.len(),
        updates,
        update_bytes,
        millis,
        peak_rss_kib: super::peak_rss_kib(),
    })
}

/// Runs every engine, each in a child process, `runs` times; prints a table of medians.
pub fn replay_all(trace_path: &Path, window: usize, runs: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut rows: Vec<ReplayResult> = Vec::new();
    let mut run_child =
        |mut cmd: std::process::Command, engine: &str, runs: usize| -> anyhow::Result<()> {
            let mut results = Vec::new();
            for _ in 0..runs.max(1) {
                let out = cmd
                    .output()
                    .with_context(|| format!("running the {engine} engine"))?;
                anyhow::ensure!(
                    out.status.success(),
                    "{engine} engine failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                let line = String::from_utf8_lossy(&out.stdout);
                let r: ReplayResult = serde_json::from_str(line.trim())
                    .with_context(|| format!("{engine} engine printed {line:?}"))?;
                results.push(r);
            }
            results.sort_by(|a, b| a.millis.total_cmp(&b.millis));
            rows.push(results.swap_remove(results.len() / 2));
            Ok(())
        };
    for engine in ["pairedit", "yrs"] {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "replay", "--engine", engine, "--window"])
            .arg(window.to_string())
            .arg("--trace")
            .arg(trace_path);
        run_child(cmd, engine, runs)?;
    }
    match super::node_script("replay.mjs") {
        Some(script) => {
            let mut cmd = std::process::Command::new("node");
            cmd.arg(&script).arg(trace_path).arg(window.to_string());
            run_child(cmd, "yjs", runs)?;
            // What an editor on Yjs pays: its binding reads every update's delta, as
            // pairedit's mirror needs the change too. Once: it is for scale, not a target, and
            // takes minutes on the big traces at 2 patches per update.
            let mut cmd = std::process::Command::new("node");
            cmd.arg(&script)
                .arg(trace_path)
                .arg(window.to_string())
                .arg("observe");
            run_child(cmd, "yjs + delta", 1)?;
        }
        None => {
            eprintln!("yjs: skipped (run `npm ci --prefix bench/node` to compare with Node yjs)")
        }
    }
    println!(
        "trace {} ({} patches), one merged update per {window} patches, median of {runs} (yjs + delta: one run)",
        trace_path.display(),
        rows.first().map_or(0, |r| r.patches)
    );
    println!("| engine | time ms | × raw yrs | × yjs | updates | update bytes | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    let find = |name: &str| rows.iter().find(|r| r.engine == name).map(|r| r.millis);
    let (yrs_ms, yjs_ms) = (find("yrs"), find("yjs"));
    let ratio =
        |ms: f64, base: Option<f64>| base.map_or("–".to_string(), |b| format!("{:.2}", ms / b));
    for r in &rows {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {:.1} |",
            r.engine,
            r.millis,
            ratio(r.millis, yrs_ms),
            ratio(r.millis, yjs_ms),
            r.updates,
            r.update_bytes,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
    Ok(())
}
