//! The relay: rooms over HTTP + WebSocket, speaking the y-websocket protocol.
//!
//! [`run`] is the whole server as a function: give it a bound listener, a [`RelayConfig`] and a
//! cancellation token; it returns after the token fires, connections are closed and rooms flushed.

mod conn;
mod http;
mod limits;
mod metrics;
pub mod outbox;
mod room;
pub mod store;
mod upgrade;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::Metrics;
pub use room::{HostEdits, Lent, Room};

use crate::protocol::{self, JoinCode, ROLE_HEADER, Role};
use store::FileStore;

/// How often changed rooms are written to `--data-dir` while the relay runs.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

/// Everything the relay can be told; `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub max_frame: usize,
    /// Largest encoded document a room may grow to, in bytes.
    pub max_doc_bytes: usize,
    /// Most connections in one room.
    pub max_members: usize,
    /// Most rooms the relay holds.
    pub max_rooms: usize,
    /// Most open WebSocket connections from one client address (an IPv6 host by its /64).
    pub max_conns_per_ip: usize,
    /// Most connections from one client address (an IPv6 host by its /64) that are still
    /// plain HTTP: a request under way, or a WebSocket not yet upgraded.
    pub max_pending_per_ip: usize,
    /// How long a request's headers may take to arrive (from the connection's start, or the
    /// previous response on a kept-alive connection).
    pub header_timeout: Duration,
    /// A member heard from for this long is pinged; one silent for twice this long is dropped
    /// (its presence goes with it). `None` never pings.
    pub ping_after: Option<Duration>,
    /// When set, `POST /api/rooms` needs `Authorization: Bearer <this>`.
    pub create_token: Option<String>,
    /// With a data dir: rooms without members for this long are saved and dropped from memory,
    /// and loaded again on the next join.
    pub evict_idle_after: Duration,
    /// How often changed rooms are compacted to disk (and idle ones evicted).
    pub snapshot_every: Duration,
    /// Frames queued per connection before it counts as too slow and is disconnected.
    pub send_queue: usize,
    /// Where rooms are kept across restarts; `None` keeps them in memory only.
    pub data_dir: Option<PathBuf>,
    /// Base URL put into join codes (e.g. `wss://pair.example.com`); default: the request's Host.
    pub public_url: Option<String>,
    /// Serve TLS (`wss://`, `https://`) with this certificate; `None` serves plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Documents lent in-process for rooms: a host lends its built-in relay its own document, so
    /// the room keeps no second copy of a big file and the file never crosses the loopback
    /// socket as one huge sync message. Taken when the room's first connection arrives.
    pub seeds: Option<Arc<Seeds>>,
}

/// Documents waiting for their room's first connection; see [`RelayConfig::seeds`].
#[derive(Default)]
pub struct Seeds(Mutex<HashMap<String, room::Lent>>);

impl std::fmt::Debug for Seeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seeds")
    }
}

impl Seeds {
    pub fn put(&self, room: &str, doc: room::Lent) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(room.to_string(), doc);
    }

    fn take(&self, room: &str) -> Option<room::Lent> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room)
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_frame: protocol::DEFAULT_MAX_FRAME,
            max_doc_bytes: 64 << 20,
            max_members: 1024,
            max_rooms: 10_000,
            send_queue: 256,
            max_conns_per_ip: 512,
            max_pending_per_ip: 256,
            header_timeout: Duration::from_secs(10),
            ping_after: Some(Duration::from_secs(30)),
            create_token: None,
            evict_idle_after: Duration::from_secs(600),
            snapshot_every: SNAPSHOT_EVERY,
            data_dir: None,
            public_url: None,
            tls: None,
            seeds: None,
        }
    }
}

/// Shared state of a running relay.
pub struct Relay {
    config: RelayConfig,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    next_conn: AtomicU64,
    store: Option<FileStore>,
    tasks: TaskTracker,
    limits: limits::Limits,
}

impl Relay {
    fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The room, loading it from the data dir if it was evicted.
    /// The room `id` (loaded from disk if it was evicted), with a join marked under way so it is
    /// not evicted before the member is in (marked under the map's lock, which eviction holds).
    fn room(&self, id: &str) -> Option<room::Arrival> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = rooms.get(id) {
            return Some(room.arrive());
        }
        // Under the map lock, so a room is never loaded twice (rare: only after an eviction).
        let store = self.store.as_ref()?;
        if !protocol::is_valid_id(id) || rooms.len() >= self.config.max_rooms {
            return None;
        }
        match store.load(id)? {
            Ok(loaded) => {
                let record = loaded.record;
                let room = Arc::new(Room::restore(
                    record.room,
                    record.write_hash,
                    record.view_hash,
                    self.config.max_doc_bytes,
                    self.metrics.clone(),
                    &loaded.updates,
                    loaded.log,
                ));
                rooms.insert(id.to_string(), room.clone());
                self.metrics
                    .rooms
                    .store(rooms.len() as u64, Ordering::Relaxed);
                self.metrics.rooms_loaded.fetch_add(1, Ordering::Relaxed);
                Some(room.arrive())
            }
            Err(e) => {
                tracing::warn!("cannot load room {id}: {e:#}");
                None
            }
        }
    }

    /// Saves and drops rooms idle for `evict_idle_after` (only with a data dir: never lose one).
    fn evict_idle(&self) {
        if self.store.is_none() {
            return;
        }
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let idle: Vec<String> = rooms
            .iter()
            .filter(|(_, r)| {
                r.idle_for()
                    .is_some_and(|d| d >= self.config.evict_idle_after)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            // Compacted under the map lock: a join cannot load it again before the disk is final.
            match rooms.get(&id).map(|r| r.compact()) {
                Some(Ok(())) => {
                    rooms.remove(&id);
                    self.metrics.rooms_evicted.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(e)) => tracing::error!("not evicting room {id}: cannot save it: {e}"),
                None => {}
            }
        }
        self.metrics
            .rooms
            .store(rooms.len() as u64, Ordering::Relaxed);
    }

    /// Adds a room; `None` when the relay already holds `max_rooms`.
    fn insert_room(&self, room: Room) -> Option<Arc<Room>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if rooms.len() >= self.config.max_rooms {
            return None;
        }
        let room = Arc::new(room);
        rooms.insert(room.id.clone(), room.clone());
        self.metrics
            .rooms
            .store(rooms.len() as u64, Ordering::Relaxed);
        Some(room)
    }

    /// The rooms held now (the map's lock is not kept while the caller works on them).
    fn all_rooms(&self) -> Vec<Arc<Room>> {
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Asks every member of every room to close with `1001` (shutdown). A connection that
    /// joins after this sees the cancelled token itself.
    fn close_all(&self) {
        for room in self.all_rooms() {
            room.kick_all(protocol::close::GOING_AWAY, "relay shutting down");
        }
    }

    /// Compacts every changed room to a snapshot (no-op without a data dir).
    fn flush_rooms(&self) {
        if self.store.is_none() {
            return;
        }
        let mut saved = 0;
        for room in self.all_rooms() {
            if !room.take_dirty() {
                continue;
            }
            match room.compact() {
                Ok(()) => saved += 1,
                Err(e) => {
                    room.mark_dirty();
                    tracing::error!("could not save room {}: {e:#}", room.id);
                }
            }
        }
        if saved > 0 {
            tracing::info!("saved {saved} room(s)");
        }
    }
}

/// Runs the relay on `listener` until `shutdown` is cancelled, then closes every connection
/// (close code 1001), flushes rooms to `data_dir`, and returns.
pub async fn run(
    listener: TcpListener,
    config: RelayConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let store = match &config.data_dir {
        Some(dir) => Some(FileStore::open(dir)?),
        None => None,
    };
    let relay = Arc::new(Relay {
        config,
        rooms: Mutex::new(HashMap::new()),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        next_conn: AtomicU64::new(1),
        store,
        tasks: TaskTracker::new(),
        limits: limits::Limits::default(),
    });
    if let Some(store) = &relay.store {
        for loaded in store.load_all()? {
            let record = loaded.record;
            if !protocol::is_valid_id(&record.room) {
                tracing::warn!("skipping room with invalid id {:?}", record.room);
                continue;
            }
            let room = Room::restore(
                record.room,
                record.write_hash,
                record.view_hash,
                relay.config.max_doc_bytes,
                metrics.clone(),
                &loaded.updates,
                loaded.log,
            );
            if relay.insert_room(room).is_none() {
                tracing::warn!("more rooms on disk than --max-rooms; the rest stay on disk");
                break;
            }
        }
    }

    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .route("/api/rooms", post(create_room))
        .route("/r/{room}", get(join_room_query))
        .route("/r/{room}/{token}", get(join_room_path))
        .with_state(relay.clone());

    {
        // Connections do not each watch the token (a shared wait list, locked on every poll of
        // every connection): one task tells them all.
        let (relay, shutdown) = (relay.clone(), shutdown.clone());
        relay.tasks.clone().spawn(async move {
            shutdown.cancelled().await;
            relay.close_all();
        });
    }
    if let Some(after) = relay.config.ping_after {
        // One task looks at every member now and then (a timer per connection would cost
        // memory on every idle viewer): silent ones are pinged, then dropped.
        let (relay, shutdown) = (relay.clone(), shutdown.clone());
        relay.tasks.clone().spawn(async move {
            let mut every = tokio::time::interval((after / 3).max(Duration::from_millis(10)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            let reason = format!("nothing heard for {:?}, not even a pong", after * 2);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = every.tick() => {
                        let mut dropped = 0;
                        for room in relay.all_rooms() {
                            dropped += room.sweep_silent(3, 6, &reason);
                        }
                        relay
                            .metrics
                            .silent_disconnects
                            .fetch_add(dropped as u64, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    if relay.store.is_some() {
        let (relay, shutdown) = (relay.clone(), shutdown.clone());
        relay.tasks.clone().spawn(async move {
            let mut every = tokio::time::interval(relay.config.snapshot_every);
            every.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = every.tick() => {
                        let relay = relay.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            relay.flush_rooms();
                            relay.evict_idle();
                        })
                        .await;
                    }
                }
            }
        });
    }

    match relay.config.tls.clone() {
        None => {
            // Small frames go out at once: with Nagle's algorithm a second frame sent within a
            // round trip (an update, then awareness) would wait for the peer's delayed ACK.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            http::serve(listener, app, relay.clone(), shutdown.clone()).await;
        }
        Some(tls) => {
            let failures = metrics.clone();
            let listener =
                crate::net::TlsListener::new(listener, tls, shutdown.clone(), move || {
                    failures
                        .tls_handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                })?;
            http::serve(listener, app, relay.clone(), shutdown.clone()).await;
        }
    }
    // Upgraded connections live outside hyper: they watch the same token; wait for them.
    relay.tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), relay.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within 5 s");
    }
    relay.flush_rooms();
    Ok(())
}

async fn metrics_handler(State(relay): State<Arc<Relay>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        relay.metrics.render(),
    )
}

/// The answer to `POST /api/rooms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedRoom {
    pub room: String,
    pub write_token: String,
    pub view_token: String,
    pub write_code: String,
    pub view_code: String,
}

/// Counts a refusal in `counter` and answers with `status` and `message`.
fn refuse(counter: &AtomicU64, status: StatusCode, message: &str) -> Response {
    counter.fetch_add(1, Ordering::Relaxed);
    error(status, message)
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn create_room(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let rate_limited = |relay: &Relay| {
        refuse(
            &relay.metrics.rejected_rate_limited,
            StatusCode::TOO_MANY_REQUESTS,
            "too many rooms created from this address; try again in a minute",
        )
    };
    match &relay.config.create_token {
        // Holders of the create token are trusted creators (a team's bot, a load test): they
        // skip the per-address limit; wrong guesses count against it, so guessing is slow too.
        Some(expected) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or("");
            if !protocol::constant_time_eq(&store::hash_token(given), &store::hash_token(expected))
            {
                if !relay.limits.allow_create(peer.ip()) {
                    return rate_limited(&relay);
                }
                return refuse(
                    &relay.metrics.rejected_create_token,
                    StatusCode::UNAUTHORIZED,
                    if given.is_empty() {
                        "this relay needs a create token to make rooms: pass --create-token (or set PAIREDIT_CREATE_TOKEN; over HTTP: Authorization: Bearer ...)"
                    } else {
                        "the create token given is not this relay's: check --create-token (or PAIREDIT_CREATE_TOKEN)"
                    },
                );
            }
        }
        None => {
            if !relay.limits.allow_create(peer.ip()) {
                return rate_limited(&relay);
            }
        }
    }
    let base = match &relay.config.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(host) if relay.config.tls.is_some() => format!("wss://{host}"),
            Some(host) => format!("ws://{host}"),
            None => return error(StatusCode::BAD_REQUEST, "missing Host header"),
        },
    };
    let id = protocol::new_room_id();
    let write_token = protocol::new_token(Role::Writer);
    let view_token = protocol::new_token(Role::Viewer);
    let code =
        |token: &str| JoinCode::parse(&format!("{base}/r/{id}/{token}")).map(|c| c.to_string());
    let (Ok(write_code), Ok(view_code)) = (code(&write_token), code(&view_token)) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "public URL does not make valid codes",
        );
    };
    let record = store::RoomRecord {
        room: id.clone(),
        write_hash: store::hash_token(&write_token),
        view_hash: store::hash_token(&view_token),
    };
    let log = match &relay.store {
        Some(store) => match store.create(&record) {
            Ok(log) => Some(log),
            Err(e) => {
                tracing::error!("cannot store a new room: {e:#}");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the relay cannot store new rooms",
                );
            }
        },
        None => None,
    };
    let room = Room::new(
        id.clone(),
        record.write_hash,
        record.view_hash,
        relay.config.max_doc_bytes,
        relay.metrics.clone(),
        log,
    );
    if relay.insert_room(room).is_none() {
        return refuse(
            &relay.metrics.rejected_max_rooms,
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay holds its maximum number of rooms",
        );
    }
    tracing::info!(room = %id, "room created");
    let body = CreatedRoom {
        room: id,
        write_token,
        view_token,
        write_code,
        view_code,
    };
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
    /// The client's pairedit protocol version (pairedit clients send it; stock Yjs clients don't).
    v: Option<String>,
}

async fn join_room_query(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(room): Path<String>,
    Query(q): Query<TokenQuery>,
    ws: Result<upgrade::Upgrade, upgrade::NotUpgrade>,
) -> Response {
    if let Some(v) = &q.v
        && v.parse::<u32>().ok() != Some(protocol::PROTOCOL_VERSION)
    {
        let msg = format!(
            "this relay speaks pairedit protocol v{}, the client v{v}; upgrade the older one",
            protocol::PROTOCOL_VERSION
        );
        return error(StatusCode::UPGRADE_REQUIRED, &msg);
    }
    join_room(relay, peer, room, q.token, ws).await
}

async fn join_room_path(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path((room, token)): Path<(String, String)>,
    ws: Result<upgrade::Upgrade, upgrade::NotUpgrade>,
) -> Response {
    join_room(relay, peer, room, Some(token), ws).await
}

/// Checks room and token before upgrading: 404 unknown room, 401 no token, 403 wrong token.
async fn join_room(
    relay: Arc<Relay>,
    peer: std::net::SocketAddr,
    room_id: String,
    token: Option<String>,
    ws: Result<upgrade::Upgrade, upgrade::NotUpgrade>,
) -> Response {
    let Some(arrival) = relay.room(&room_id) else {
        return refuse(
            &relay.metrics.rejected_unknown_room,
            StatusCode::NOT_FOUND,
            "no such room",
        );
    };
    let room = arrival.room().clone();
    let Some(token) = token else {
        return refuse(
            &relay.metrics.rejected_bad_token,
            StatusCode::UNAUTHORIZED,
            "a token is required (?token=...)",
        );
    };
    let Some(role) = room.role_for(&token) else {
        return refuse(
            &relay.metrics.rejected_bad_token,
            StatusCode::FORBIDDEN,
            "wrong token for this room",
        );
    };
    // A lent document is the host's own, handed over in-process; taken by the first member
    // with a valid token (see RelayConfig::seeds).
    if let Some(lent) = relay.config.seeds.as_ref().and_then(|s| s.take(&room_id))
        && let Err(e) = room.lend(lent)
    {
        // The host's sync handshake brings the document over the socket instead.
        tracing::warn!(room = %room_id, "the host's document was not lent: {e}");
    }
    if room.member_count() >= relay.config.max_members {
        return refuse(
            &relay.metrics.rejected_room_full,
            StatusCode::SERVICE_UNAVAILABLE,
            "room is full",
        );
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if !relay
        .limits
        .try_open(peer.ip(), relay.config.max_conns_per_ip)
    {
        return refuse(
            &relay.metrics.rejected_too_many_connections,
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address",
        );
    }
    let slot = limits::IpSlot {
        relay: relay.clone(),
        ip: peer.ip(),
    };
    let max = relay.config.max_frame;
    // tungstenite's defaults (128 KiB read buffer, unbounded write buffer) would dominate the
    // memory of an idle connection; small buffers grow on demand, and large messages are sent
    // in fragments (conn.rs) so the write buffer stays small.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(conn::FRAGMENT.saturating_mul(4))
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let outbox = Arc::new(outbox::Outbox::new(relay.config.send_queue));
    let heard = outbox.clone();
    let mut response = ws.on_upgrade(&relay.tasks, config, heard, move |socket| {
        conn::serve(slot, arrival, role, outbox, Box::new(socket))
    });
    let headers = response.headers_mut();
    headers.insert(ROLE_HEADER, HeaderValue::from_static(role.as_str()));
    headers.insert(protocol::MAX_FRAME_HEADER, HeaderValue::from(max));
    headers.insert(
        protocol::VERSION_HEADER,
        HeaderValue::from(protocol::PROTOCOL_VERSION),
    );
    response
}
