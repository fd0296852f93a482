//! Real editing traces replayed through a real relay, split across two writers, with a viewer
//! watching: everyone ends at the trace's `endContent`, byte for byte.

mod common;

use std::path::PathBuf;

use common::*;
use pairedit::client::Client;
use pairedit::trace::Trace;

fn trace_path(name: &str) -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        manifest.join("tests/data"),
        manifest.join("../shared/traces"),
    ]
    .into_iter()
    .map(|dir| dir.join(format!("{name}.json.gz")))
    .find(|p| p.exists())
}

async fn replay_split(name: &str, chunk: usize) {
    let Some(path) = trace_path(name) else {
        eprintln!("SKIPPED: trace {name}.json.gz is in neither tests/data nor ../shared/traces");
        return;
    };
    let trace = Trace::load(&path).expect("load trace");
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let writers = [
        join(&room.write_code, "a").await,
        join(&room.write_code, "b").await,
    ];
    let viewer = join(&room.view_code, "viewer").await;

    for (i, txns) in trace.txns.chunks(chunk).enumerate() {
        let (me, other): (&Client, &Client) = (&writers[i % 2], &writers[(i + 1) % 2]);
        for txn in txns {
            for edit in txn {
                me.edit(edit).expect("trace edit applies");
            }
        }
        me.flush();
        // The trace is sequential: the other writer continues from exactly this text.
        let want = me.text();
        wait_text(other, &want).await;
    }
    for c in writers.iter().chain([&viewer]) {
        wait_text(c, &trace.end).await;
        assert_eq!(c.state().doc.ytext(), trace.end, "Y.Text equals endContent");
    }
    let late = join(&room.view_code, "late").await;
    assert_eq!(late.text(), trace.end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustcode_trace_through_the_relay_split_across_two_writers() {
    replay_split("rustcode", 1500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sveltecomponent_trace_through_the_relay_split_across_two_writers() {
    replay_split("sveltecomponent", 700).await;
}
