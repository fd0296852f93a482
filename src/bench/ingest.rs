//! `pairedit bench ingest`: what one small update costs a server as the document grows.
//!
//! A writer fills a room with `mb` updates of about 1 MB each (one author's text, appended),
//! then sends `appends` small appends (2 KB each) back to back; a viewer waits for the last one.
//! Reported: the time from the first append sent to the last one received, and the server's CPU
//! time over the appends, per append. Against pairedit's relay and the Node reference server
//! (`@y/websocket-server`) in the same run.
//!
//! Why: a server that costs more per update as its document grows stalls every room it holds
//! (pairedit's relay did: yrs' update observer cost 55 ms per append at 32 MB, under the room's
//! lock; see `relay::room::new_doc`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::{ReadTxn as _, Text as _, Transact as _};

use super::fanout::{Server, ServerKind, Ws, connect, markers};

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub servers: Vec<ServerKind>,
    /// Document sizes to fill the room to, in MB.
    pub mb: Vec<usize>,
    /// Small appends timed at each size.
    pub appends: usize,
}

#[derive(Debug, Clone)]
pub struct IngestRow {
    pub server: &'static str,
    pub mb: usize,
    pub appends: usize,
    /// From the first append sent to the last one received, per append.
    pub wall_ms_per_append: f64,
    /// The server's CPU time over the same span, per append.
    pub cpu_ms_per_append: f64,
}

/// One ~1 MB prefill update's text.
const PREFILL: usize = 1_000_000 - 100;
/// One append's text, before its marker.
const APPEND: usize = 2000 - 8;

pub async fn run(config: &IngestConfig) -> anyhow::Result<Vec<IngestRow>> {
    let mut rows = Vec::new();
    for &mb in &config.mb {
        for &kind in &config.servers {
            let row = run_one(kind, mb, config.appends)
                .await
                .with_context(|| format!("{} at {mb} MB", kind.name()))?;
            eprintln!(
                "ingest: {:<26} {:>3} MB: {:>8.3} ms/append wall, {:>8.3} ms/append CPU",
                row.server, row.mb, row.wall_ms_per_append, row.cpu_ms_per_append
            );
            rows.push(row);
        }
    }
    print_table(&rows);
    Ok(rows)
}

async fn run_one(kind: ServerKind, mb: usize, appends: usize) -> anyhow::Result<IngestRow> {
    let server = Server::start(kind).await?;
    let (w_url, v_url) = server.room(0).await?;
    let mut writer = connect(&w_url).await?;
    let mut viewer = connect(&v_url).await?;
    // Plain y-websocket: the viewer asks for the state, then reads.
    viewer
        .send(WsMessage::binary(crate::protocol::sync_step1(
            &yrs::StateVector::default(),
        )))
        .await?;

    let mut author = Author::new();
    // Fill the room; the viewer has it all once it has seen the last prefill's marker.
    for _ in 0..mb {
        let (m, update) = author.append("p", PREFILL);
        writer.send(WsMessage::binary(update)).await?;
        if author.next == mb {
            wait_for_marker(&mut viewer, m, Duration::from_secs(120)).await?;
        }
    }
    let updates: Vec<Vec<u8>> = (0..appends).map(|_| author.append("a", APPEND).1).collect();
    let last = author.next - 1;
    let (_, cpu0) = server.usage();
    let t0 = Instant::now();
    let send = async {
        for update in updates {
            writer.send(WsMessage::binary(update)).await?;
        }
        anyhow::Ok(())
    };
    let (sent, got) = tokio::join!(
        send,
        wait_for_marker(&mut viewer, last, Duration::from_secs(300))
    );
    sent?;
    got?;
    let wall = t0.elapsed();
    let (_, cpu1) = server.usage();
    server.stop().await;
    let n = appends.max(1) as f64;
    Ok(IngestRow {
        server: kind.name(),
        mb,
        appends,
        wall_ms_per_append: wall.as_secs_f64() * 1000.0 / n,
        // Clock ticks of 10 ms: the CPU figure is coarse for fast servers.
        cpu_ms_per_append: cpu1.saturating_sub(cpu0) as f64 * 10.0 / n,
    })
}

/// One author appending to its text, each append ending in a marker `<NNNNNN>`.
struct Author {
    doc: yrs::Doc,
    text: yrs::TextRef,
    next: usize,
}

impl Author {
    fn new() -> Author {
        let doc = yrs::Doc::with_options(yrs::Options {
            offset_kind: yrs::OffsetKind::Utf16,
            ..yrs::Options::default()
        });
        let text = doc.get_or_insert_text("content");
        Author { doc, text, next: 0 }
    }

    /// Appends `len` copies of `fill` and the next marker: (the marker, the sync update).
    fn append(&mut self, fill: &str, len: usize) -> (usize, Vec<u8>) {
        let marker = self.next;
        self.next += 1;
        let sv = self.doc.transact().state_vector();
        {
            let mut txn = self.doc.transact_mut();
            let at = self.text.len(&txn);
            let piece = format!("{}<{marker:06}>", fill.repeat(len));
            self.text.insert(&mut txn, at, &piece);
        }
        let update = self.doc.transact().encode_state_as_update_v1(&sv);
        (marker, crate::protocol::sync_update(update))
    }
}

/// Reads until marker `want` arrives.
async fn wait_for_marker(ws: &mut Ws, want: usize, at_most: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + at_most;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("marker {want} never arrived"))?;
        match next {
            Some(Ok(WsMessage::Binary(bytes))) => {
                if markers(&bytes).any(|m| m == want) {
                    return Ok(());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("viewer's connection failed"),
            None => anyhow::bail!("viewer's connection closed"),
        }
    }
}

pub fn print_table(rows: &[IngestRow]) {
    println!("| server | document | appends | wall ms/append | server CPU ms/append |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} MB | {} | {:.3} | {:.2} |",
            r.server, r.mb, r.appends, r.wall_ms_per_append, r.cpu_ms_per_append
        );
    }
    let pairs: Vec<String> = rows
        .iter()
        .filter(|r| r.server == ServerKind::Pairedit.name())
        .filter_map(|p| {
            let n = rows
                .iter()
                .find(|n| n.server == ServerKind::Node.name() && n.mb == p.mb)?;
            Some(format!(
                "{} MB: {:.4}×",
                p.mb,
                p.wall_ms_per_append / n.wall_ms_per_append.max(1e-9)
            ))
        })
        .collect();
    if !pairs.is_empty() {
        println!("\npairedit / Node, wall per append: {}", pairs.join(", "));
    }
}
