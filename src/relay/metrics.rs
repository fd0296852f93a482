//! Counters behind `GET /metrics` (Prometheus text format).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub rooms: AtomicU64,
    pub rooms_evicted: AtomicU64,
    pub rooms_loaded: AtomicU64,
    pub writers: AtomicU64,
    pub viewers: AtomicU64,
    pub connections_total: AtomicU64,
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub viewer_writes_dropped: AtomicU64,
    pub awareness_dropped: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub silent_disconnects: AtomicU64,
    pub malformed_closes: AtomicU64,
    pub oversized_closes: AtomicU64,
    pub ignored_messages: AtomicU64,
    pub rejected_unknown_room: AtomicU64,
    pub rejected_bad_token: AtomicU64,
    pub rejected_room_full: AtomicU64,
    pub rejected_max_rooms: AtomicU64,
    pub rejected_create_token: AtomicU64,
    pub rejected_rate_limited: AtomicU64,
    pub rejected_too_many_connections: AtomicU64,
    pub rejected_too_many_pending: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP pairedit_{name} {help}");
            let _ = writeln!(out, "# TYPE pairedit_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "pairedit_{name}{labels} {value}");
            }
        };
        metric(
            "rooms",
            "gauge",
            "Rooms held in memory.",
            &[("", g(&self.rooms))],
        );
        metric(
            "rooms_evicted_total",
            "counter",
            "Idle rooms written to disk and dropped from memory.",
            &[("", g(&self.rooms_evicted))],
        );
        metric(
            "rooms_loaded_total",
            "counter",
            "Evicted rooms loaded again on a join.",
            &[("", g(&self.rooms_loaded))],
        );
        metric(
            "connections",
            "gauge",
            "Open WebSocket connections by role.",
            &[
                ("{role=\"writer\"}", g(&self.writers)),
                ("{role=\"viewer\"}", g(&self.viewers)),
            ],
        );
        metric(
            "connections_total",
            "counter",
            "WebSocket connections accepted.",
            &[("", g(&self.connections_total))],
        );
        metric(
            "tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out (with --tls-cert).",
            &[("", g(&self.tls_handshake_failures))],
        );
        metric(
            "messages_received_total",
            "counter",
            "WebSocket messages received.",
            &[("", g(&self.messages_in))],
        );
        metric(
            "bytes_received_total",
            "counter",
            "Bytes received in WebSocket messages.",
            &[("", g(&self.bytes_in))],
        );
        metric(
            "messages_sent_total",
            "counter",
            "WebSocket messages queued for sending.",
            &[("", g(&self.messages_out))],
        );
        metric(
            "bytes_sent_total",
            "counter",
            "Bytes queued for sending.",
            &[("", g(&self.bytes_out))],
        );
        metric(
            "viewer_writes_dropped_total",
            "counter",
            "Updates from view-token connections that were dropped.",
            &[("", g(&self.viewer_writes_dropped))],
        );
        metric(
            "awareness_dropped_total",
            "counter",
            "Awareness entries dropped: not JSON, too large, stale, or for a client id the sender may not speak for.",
            &[("", g(&self.awareness_dropped))],
        );
        metric(
            "disconnects_total",
            "counter",
            "Connections closed by the relay, by reason.",
            &[
                ("{reason=\"slow\"}", g(&self.slow_disconnects)),
                ("{reason=\"malformed\"}", g(&self.malformed_closes)),
                ("{reason=\"too_big\"}", g(&self.oversized_closes)),
                ("{reason=\"silent\"}", g(&self.silent_disconnects)),
            ],
        );
        metric(
            "ignored_messages_total",
            "counter",
            "Auth or unknown messages ignored.",
            &[("", g(&self.ignored_messages))],
        );
        metric(
            "rejected_total",
            "counter",
            "Requests refused before the upgrade, by reason.",
            &[
                ("{reason=\"unknown_room\"}", g(&self.rejected_unknown_room)),
                ("{reason=\"bad_token\"}", g(&self.rejected_bad_token)),
                ("{reason=\"room_full\"}", g(&self.rejected_room_full)),
                ("{reason=\"max_rooms\"}", g(&self.rejected_max_rooms)),
                ("{reason=\"create_token\"}", g(&self.rejected_create_token)),
                ("{reason=\"rate_limited\"}", g(&self.rejected_rate_limited)),
                (
                    "{reason=\"too_many_connections\"}",
                    g(&self.rejected_too_many_connections),
                ),
                (
                    "{reason=\"too_many_pending\"}",
                    g(&self.rejected_too_many_pending),
                ),
            ],
        );
        out
    }
}
