//! The networked session: connect with a join code, sync, mirror remote changes, and flush local
//! edits (and presence) once per tick. The TUI and `pairedit cat` sit on top of [`Client`].
//!
//! The document lives in [`ClientState`] behind a mutex shared with one network task; callers
//! edit and read it without waiting on the network, and learn about changes through a `watch`.

pub mod http;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::{IndexedSequence as _, Transact as _};

use crate::protocol::{self, JoinCode, ROLE_HEADER, Role};
use std::collections::{HashMap, VecDeque};

use crate::sync::presence::{ChatState, CursorState, LocalState, Member, User, color_for};
use crate::sync::{Batcher, DocError, Edit, SharedDoc};

/// How often the local awareness state is re-sent even when unchanged (Yjs peers time a member
/// out after 30 s of silence).
const AWARENESS_RENEW: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Shown to other members.
    pub name: String,
    /// Local edits are sent at most once per interval, merged into one update.
    pub flush_interval: Duration,
    pub connect_timeout: Duration,
    /// Largest message accepted from the relay.
    pub max_message: usize,
    /// TLS trust for `wss://` codes; `None`: the system's and Mozilla's roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: default_name(),
            flush_interval: Duration::from_millis(protocol::DEFAULT_FLUSH_MS),
            connect_timeout: Duration::from_secs(10),
            max_message: 64 << 20,
            tls: None,
        }
    }
}

/// The user's login name, or "anonymous".
pub fn default_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "anonymous".to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not reach the relay at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the relay does not know this room (it may have restarted without --data-dir)")]
    UnknownRoom,
    #[error("the relay refused the token in this code")]
    BadToken,
    #[error(transparent)]
    BadCode(#[from] crate::protocol::BadCode),
    #[error("the relay refused the connection: HTTP {0}")]
    Refused(u16),
    #[error("incompatible versions: {0}")]
    Version(String),
    #[error("timed out connecting to {0}")]
    Timeout(String),
    #[error("cannot connect securely: {0}")]
    Tls(String),
    #[error("this session is read-only (joined with a view code)")]
    ReadOnly,
    #[error(transparent)]
    Doc(#[from] DocError),
    #[error("timed out waiting for {0}")]
    WaitTimeout(&'static str),
    #[error("disconnected: {0}")]
    Disconnected(String),
}

impl ClientError {
    /// Errors that trying again cannot fix.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::UnknownRoom
            | ClientError::BadCode(_)
            | ClientError::BadToken
            | ClientError::Version(_)
            | ClientError::Tls(_) => true,
            ClientError::Refused(status) => *status != 503 && *status != 429 && *status < 500,
            _ => false,
        }
    }
}

/// Why the connection was lost when the relay said it was shutting down (close code 1001).
const RELAY_GONE: &str = "the relay shut down (a host's relay ends when the host quits)";

/// Connection state, as a status line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// Opening the connection (the editor is already usable).
    Connecting,
    Connected,
    /// Lost; trying again with backoff. Local edits keep queueing and merge on reconnect.
    Reconnecting {
        attempt: u32,
        reason: String,
    },
    /// Closed, with the reason (the relay's close reason when it gave one).
    Closed(String),
}

/// One line of the room's chat, as shown in the chat pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub from: String,
    pub color: String,
    pub text: String,
}

/// How many chat lines a client keeps.
const CHAT_KEEP: usize = 200;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything the network task and the caller share.
pub struct ClientState {
    pub doc: SharedDoc,
    batcher: Batcher,
    awareness: Awareness,
    local: LocalState,
    awareness_dirty: bool,
    /// True once the relay's sync step 2 has been applied: the text is the room's.
    pub synced: bool,
    pub connection: Connection,
    /// The largest message the relay takes (its `x-pairedit-max-frame`), once connected to
    /// one that says: an edit larger than that could never be sent ([`ClientState::too_big`]).
    pub relay_max_frame: Option<usize>,
    /// The last `auth` permission-denied reason from the relay, if any.
    pub denied: Option<String>,
    /// Bumped on every change a viewer of the state may care about.
    version: u64,
    /// When `Some`, remote text changes are also recorded here (an editor drains them to keep
    /// its cursor and scroll position in place).
    remote_edits: Option<Vec<Edit>>,
    /// The selection the editor last set (anchor, head in chars), not yet turned into relative
    /// positions: that needs yrs up to date, which would end the composition of local edits on
    /// every key. It is settled when the flush tick sends, or before a remote update moves text.
    cursor_chars: Option<(usize, usize)>,
    chat_log: VecDeque<ChatLine>,
    chat_seen: HashMap<u64, u64>,
    /// [`ClientState::members`], kept until others' awareness changes: every frame asks for
    /// it, and reading it parses each member's state.
    members: std::cell::RefCell<Option<Vec<Member>>>,
}

impl ClientState {
    /// A state not (yet) attached to any relay: for the editor before it connects, and tests.
    pub fn detached(doc: SharedDoc, role: Role, name: &str) -> ClientState {
        let mut awareness = Awareness::new(doc.doc_handle());
        let local = LocalState {
            user: User {
                name: name.to_string(),
                color: color_for(awareness.client_id().get()).to_string(),
            },
            role,
            cursor: None,
            active: now_ms(),
            chat: None,
        };
        let _ = awareness.set_local_state(&local);
        ClientState {
            doc,
            batcher: Batcher::new(),
            awareness,
            local,
            awareness_dirty: true,
            synced: false,
            connection: Connection::Closed("not connected yet".into()),
            relay_max_frame: None,
            denied: None,
            version: 0,
            remote_edits: None,
            cursor_chars: None,
            chat_log: VecDeque::new(),
            chat_seen: HashMap::new(),
            members: std::cell::RefCell::new(None),
        }
    }

    /// Everyone else in the room, as their awareness says.
    pub fn members(&self) -> Vec<Member> {
        if let Some(members) = self.members.borrow().as_ref() {
            return members.clone();
        }
        let members = self.read_members();
        *self.members.borrow_mut() = Some(members.clone());
        members
    }

    fn read_members(&self) -> Vec<Member> {
        let me = self.awareness.client_id();
        let mut members: Vec<Member> = self
            .awareness
            .iter()
            .filter(|(id, _)| *id != me)
            .filter_map(|(id, state)| {
                let mut m = Member::from_json(id.get(), state.data.as_deref()?)?;
                // Peers that do not publish activity: their last awareness message will do.
                m.active.get_or_insert(state.last_updated);
                Some(m)
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.client_id.cmp(&b.client_id)));
        members
    }

    pub fn client_id(&self) -> u64 {
        self.awareness.client_id().get()
    }

    pub fn role(&self) -> Role {
        self.local.role
    }

    pub fn name(&self) -> &str {
        &self.local.user.name
    }

    pub fn color(&self) -> &str {
        &self.local.user.color
    }

    /// Why inserting `bytes` of text would be refused by the relay, if it would: one flush
    /// sends it as one message, which the relay closes the connection for if it is over its
    /// limit, and it would be sent again on every reconnect. Room is left for the update's own
    /// encoding and for other edits of the same flush.
    ///
    /// Edits not yet sent count too: offline they pile up, and the reconnect sends them all in
    /// one message (the sync handshake's step 2), which would then be refused for good.
    pub fn too_big(&self, bytes: usize) -> Option<String> {
        let max = self.relay_max_frame?;
        let room = max - max / 8;
        let waiting = self.doc.outgoing_bytes();
        let all = bytes.saturating_add(waiting);
        (all > room).then(|| {
            let mib = |n: usize| n as f64 / (1024.0 * 1024.0);
            let flag = (all + all / 4).next_power_of_two();
            if waiting > room / 8 {
                format!(
                    "not pasted: {:.1} MiB with the {:.1} MiB of edits not yet on the relay is more than it takes in one message ({:.1} MiB), which is how they go out when it is back; paste it once they are sent, or run the relay with --max-frame {flag}",
                    mib(bytes),
                    mib(waiting),
                    mib(max),
                )
            } else {
                format!(
                    "not pasted: {:.1} MiB is more than the relay takes in one message ({:.1} MiB); paste it in parts, or run the relay with --max-frame {flag}",
                    mib(bytes),
                    mib(max),
                )
            }
        })
    }

    /// Local edits not yet sent (each key counts, however they were composed).
    pub fn queued_updates(&self) -> usize {
        self.batcher.len() + self.doc.outgoing_len()
    }

    /// Starts (or stops) recording remote text changes for [`ClientState::take_remote_edits`].
    pub fn record_remote_edits(&mut self, on: bool) {
        self.remote_edits = on.then(Vec::new);
    }

    pub fn take_remote_edits(&mut self) -> Vec<Edit> {
        self.remote_edits
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Sets this member's selection (char offsets); it is published as Yjs relative positions
    /// with the next flush.
    pub fn set_cursor(&mut self, anchor: usize, head: usize) {
        self.cursor_chars = Some((anchor, head));
    }

    /// Turns the selection last set into relative positions and publishes it if it changed.
    fn settle_cursor(&mut self) {
        let Some((anchor, head)) = self.cursor_chars.take() else {
            return;
        };
        let cursor = match (self.sticky_json(anchor), self.sticky_json(head)) {
            (Some(anchor), Some(head)) => Some(CursorState { anchor, head }),
            _ => None,
        };
        if self.local.cursor != cursor {
            self.local.cursor = cursor;
            self.local.active = now_ms();
            self.publish();
        }
    }

    fn sticky_json(&self, at: usize) -> Option<serde_json::Value> {
        let len = self.doc.len_chars();
        let at16 = self.doc.rope().char_to_utf16_cu(at.min(len)) as u32;
        // yrs has no "end of text" position with forward association; at the end, stick to
        // the last character instead (it resolves to the end just the same).
        let assoc = if at >= len {
            yrs::Assoc::Before
        } else {
            yrs::Assoc::After
        };
        let txn = self.doc.doc().transact();
        let idx = self.doc.text_ref().sticky_index(&txn, at16, assoc)?;
        serde_json::to_value(idx).ok()
    }

    /// Resolves a relative position (as published in awareness) to a char offset in our text.
    pub fn resolve_position(&self, json: &serde_json::Value) -> Option<usize> {
        let idx: yrs::StickyIndex = serde_json::from_value(json.clone()).ok()?;
        self.doc.resolve(&idx)
    }

    /// Sends a chat line to everyone in the room (through awareness, so viewers can talk too).
    pub fn send_chat(&mut self, text: &str) {
        let seq = self.local.chat.as_ref().map_or(1, |c| c.seq + 1);
        self.local.chat = Some(ChatState {
            seq,
            text: text.to_string(),
        });
        self.push_chat(ChatLine {
            from: self.local.user.name.clone(),
            color: self.local.user.color.clone(),
            text: text.to_string(),
        });
        self.publish();
    }

    /// The chat pane's lines, oldest first.
    pub fn chat(&self) -> &VecDeque<ChatLine> {
        &self.chat_log
    }

    fn push_chat(&mut self, line: ChatLine) {
        if self.chat_log.len() == CHAT_KEEP {
            self.chat_log.pop_front();
        }
        self.chat_log.push_back(line);
        self.version += 1;
    }

    /// Marks this member active now (an edit or a move); sent with the next awareness update.
    pub fn touch(&mut self) {
        self.local.active = now_ms();
    }

    fn publish(&mut self) {
        let local = self.local.clone();
        let _ = self.awareness.set_local_state(&local);
        self.awareness_dirty = true;
    }

    /// What a flush sends: one merged update of local edits (writers only) and the local
    /// awareness state when it changed (or `renew` asks for it).
    pub fn outgoing(&mut self, renew: bool) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        self.settle_cursor();
        for update in self.doc.take_outgoing() {
            self.batcher.push(update);
        }
        if self.local.role == Role::Writer {
            match self.batcher.flush() {
                Ok(Some(update)) => frames.push(protocol::sync_update(update)),
                Ok(None) => {}
                Err(e) => tracing::error!("could not merge local updates: {e}"),
            }
        } else {
            // A viewer has no edits of its own to send.
            let _ = self.batcher.flush();
        }
        if self.awareness_dirty || renew {
            let me = self.awareness.client_id();
            if let Ok(update) = self.awareness.update_with_clients([me]) {
                frames.push(protocol::awareness(update));
            }
            self.awareness_dirty = false;
        }
        frames
    }

    /// Applies one message from the relay (or any peer) and returns the frames to answer with.
    pub fn receive(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, protocol::ProtocolError> {
        let mut replies = Vec::new();
        for msg in protocol::decode_messages(data)? {
            match msg {
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    if self.local.role == Role::Writer {
                        replies.push(protocol::sync_step2(self.doc.diff(&sv)));
                    }
                }
                Message::Sync(SyncMessage::SyncStep2(update)) => {
                    self.apply_remote(&update)?;
                    self.synced = true;
                }
                Message::Sync(SyncMessage::Update(update)) => self.apply_remote(&update)?,
                Message::Awareness(update) => {
                    *self.members.get_mut() = None;
                    if let Ok(Some(summary)) = self.awareness.apply_update_summary(update) {
                        self.collect_chat(&summary.all_changes());
                    }
                }
                Message::AwarenessQuery => {
                    let me = self.awareness.client_id();
                    if let Ok(update) = self.awareness.update_with_clients([me]) {
                        replies.push(protocol::awareness(update));
                    }
                }
                Message::Auth(reason) => self.denied = reason,
                Message::Custom(_, _) => {}
            }
        }
        Ok(replies)
    }

    /// Integrates a remote update handed over in-process (a built-in relay applying a member's
    /// update to the document this session lent it), as if it had come in on the socket.
    /// Returns what the update changed in yrs, for the room's other members (see
    /// [`SharedDoc::apply_remote_encoded`]), and whether it went in whole.
    pub fn integrate(&mut self, update: &[u8]) -> (Vec<u8>, Result<(), String>) {
        let (changed, applied) = self.apply_remote_with(update, true);
        // Counted even when refused: a refused update may have changed the text part-way.
        self.version += 1;
        (changed, applied.map_err(|e| e.to_string()))
    }

    fn apply_remote(&mut self, update: &[u8]) -> Result<(), protocol::ProtocolError> {
        self.apply_remote_with(update, false).1
    }

    fn apply_remote_with(
        &mut self,
        update: &[u8],
        encoded: bool,
    ) -> (Vec<u8>, Result<(), protocol::ProtocolError>) {
        // The selection's char offsets are about the text before this update.
        self.settle_cursor();
        let (changed, applied) = if encoded {
            self.doc.apply_remote_encoded(update)
        } else {
            (Vec::new(), self.doc.apply_remote(update))
        };
        let (edits, refused) = match applied {
            Ok(edits) => (edits, None),
            Err(mut e) => {
                // What went in before yrs stopped is in the text: the view hears of it all the
                // same.
                let edits = match &mut e {
                    DocError::PartlyApplied { edits, .. } => std::mem::take(edits),
                    _ => Vec::new(),
                };
                (edits, Some(e.to_string()))
            }
        };
        if let Some(log) = &mut self.remote_edits {
            log.extend(edits);
        }
        let result = match refused {
            Some(reason) => Err(protocol::ProtocolError::Malformed(reason)),
            None => Ok(()),
        };
        (changed, result)
    }

    /// A (re)connection starts with the sync handshake, whose step 2 carries every local edit
    /// the relay lacks: what was queued for sending is covered by it and dropped (it would only
    /// arrive twice), and our presence is announced again.
    fn on_connected(&mut self) {
        let _ = self.doc.take_outgoing();
        self.batcher = Batcher::new();
        // Our clock must pass the one the relay used to announce our departure (ours + 1),
        // or peers would ignore our presence until the next change.
        self.publish();
        self.publish();
    }

    /// Others' presence is stale once we are cut off; the relay sends it afresh on reconnect.
    /// A fresh `Awareness` (keeping only our own entry and clock) forgets them without the
    /// clock bump `remove_state` would make, which would make us ignore their next update.
    fn on_disconnected(&mut self) {
        let me = self.awareness.client_id();
        let mut fresh = Awareness::new(self.doc.doc_handle());
        if let Ok(mine) = self.awareness.update_with_clients([me]) {
            let _ = fresh.apply_update(mine);
        }
        self.awareness = fresh;
        *self.members.get_mut() = None;
    }

    /// Picks up new chat lines from members' awareness states.
    /// Only the members this update changed are read: with many members, parsing every state
    /// on every awareness message would be quadratic in the room's size.
    fn collect_chat(&mut self, changed: &[yrs::block::ClientID]) {
        let me = self.awareness.client_id();
        for &id in changed.iter().filter(|id| **id != me) {
            let Some(state) = self.awareness.state::<serde_json::Value>(id) else {
                continue;
            };
            let Some(m) = Member::from_value(id.get(), state) else {
                continue;
            };
            let Some(chat) = m.chat else { continue };
            let seen = self.chat_seen.entry(m.client_id).or_insert(0);
            if chat.seq > *seen {
                *seen = chat.seq;
                self.push_chat(ChatLine {
                    from: m.name,
                    color: m.color,
                    text: chat.text,
                });
            }
        }
    }
}

/// The editor's view of a session: the shared state, and a way to send without waiting for the
/// tick. A detached handle (no relay) works the same, minus the sending.
#[derive(Clone)]
pub struct SessionHandle {
    pub state: Arc<Mutex<ClientState>>,
    flush_now: Option<Arc<tokio::sync::Notify>>,
}

impl SessionHandle {
    pub fn detached(state: ClientState) -> SessionHandle {
        SessionHandle {
            state: Arc::new(Mutex::new(state)),
            flush_now: None,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, ClientState> {
        lock(&self.state)
    }

    /// Asks the network task to send what is pending now (chat, a finished paste).
    pub fn flush(&self) {
        if let Some(n) = &self.flush_now {
            n.notify_one();
        }
    }
}

/// A connected session in one room.
pub struct Client {
    state: Arc<Mutex<ClientState>>,
    changes: watch::Receiver<u64>,
    notify: watch::Sender<u64>,
    flush_now: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    role: Role,
    code: JoinCode,
}

fn lock(m: &Mutex<ClientState>) -> MutexGuard<'_, ClientState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Ws = tokio_tungstenite::WebSocketStream<crate::net::NetStream>;

/// An open connection: the socket, the role the relay granted, and the largest message it
/// accepts (when it says).
struct Opened {
    ws: Ws,
    role: Role,
    max_frame: Option<usize>,
}

async fn open(code: &JoinCode, opts: &ClientOptions) -> Result<Opened, ClientError> {
    let url = code.ws_url();
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(opts.max_message))
        .max_frame_size(Some(opts.max_message));
    let connect = async {
        let stream = crate::net::connect(&url, opts.tls.as_ref())
            .await
            .map_err(|e| match e {
                crate::net::ConnectError::Tls(reason) => ClientError::Tls(reason),
                e => ClientError::Unreachable {
                    url: code.http_base(),
                    reason: e.to_string(),
                },
            })?;
        Ok::<_, ClientError>(
            tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config)).await,
        )
    };
    let handshake = match tokio::time::timeout(opts.connect_timeout, connect).await {
        Err(_) => return Err(ClientError::Timeout(code.http_base())),
        Ok(result) => result?,
    };
    let (ws, response) = match handshake {
        Err(tungstenite::Error::Http(resp)) => {
            return Err(match resp.status().as_u16() {
                404 => ClientError::UnknownRoom,
                401 | 403 => ClientError::BadToken,
                426 => ClientError::Version(
                    resp.body()
                        .as_deref()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                        .and_then(|v| v["error"].as_str().map(str::to_string))
                        .unwrap_or_else(|| {
                            "the relay speaks another pairedit protocol version".into()
                        }),
                ),
                s => ClientError::Refused(s),
            });
        }
        Err(e) => {
            return Err(ClientError::Unreachable {
                url: code.http_base(),
                reason: e.to_string(),
            });
        }
        Ok(pair) => pair,
    };
    let relay_version = response
        .headers()
        .get(protocol::VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    if let Some(v) = relay_version
        && v != protocol::PROTOCOL_VERSION
    {
        return Err(ClientError::Version(format!(
            "the relay speaks pairedit protocol v{v}, this client v{}; upgrade the older one",
            protocol::PROTOCOL_VERSION
        )));
    }
    let role = response
        .headers()
        .get(ROLE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Role::parse)
        // A relay that does not say is treated as granting the least.
        .unwrap_or(Role::Viewer);
    let max_frame = response
        .headers()
        .get(protocol::MAX_FRAME_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    Ok(Opened {
        ws,
        role,
        max_frame,
    })
}

impl Client {
    /// Connects to the room in `code`, starts syncing, and returns at once (see [`Client::wait_synced`]).
    pub async fn connect(code: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let code = JoinCode::parse(code)?;
        Self::connect_with_doc(code, opts, SharedDoc::new()).await
    }

    /// Like [`Client::connect`], starting from an existing replica (its content is merged in).
    pub async fn connect_with_doc(
        code: JoinCode,
        opts: ClientOptions,
        doc: SharedDoc,
    ) -> Result<Client, ClientError> {
        let Opened {
            ws,
            role,
            max_frame,
        } = open(&code, &opts).await?;
        let mut state = ClientState::detached(doc, role, &opts.name);
        state.connection = Connection::Connected;
        Ok(Self::start(
            code,
            opts,
            SessionHandle::detached(state),
            role,
            Connect::Open(Box::new(ws), max_frame),
        ))
    }

    /// Starts a session in the background on `handle`'s state and returns at once: the editor
    /// stays usable while it connects, and shows connection failures in its status line.
    /// The relay must grant `role` (a host's write code does). It connects once `gate`
    /// resolves (the editor's first frame, say).
    pub fn launch(
        code: JoinCode,
        opts: ClientOptions,
        handle: SessionHandle,
        role: Role,
        gate: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Client {
        handle.lock().connection = Connection::Connecting;
        Self::start(code, opts, handle, role, Connect::After(Box::pin(gate)))
    }

    fn start(
        code: JoinCode,
        opts: ClientOptions,
        handle: SessionHandle,
        role: Role,
        connect: Connect,
    ) -> Client {
        let state = handle.state.clone();
        let (notify, changes) = watch::channel(0u64);
        let cancel = CancellationToken::new();
        let flush_now = Arc::new(tokio::sync::Notify::new());
        let task = {
            let (state, notify, flush_now, cancel, code) = (
                state.clone(),
                notify.clone(),
                flush_now.clone(),
                cancel.clone(),
                code.clone(),
            );
            tokio::spawn(async move {
                let set = |connection: Connection| {
                    let mut st = lock(&state);
                    st.connection = connection;
                    st.version += 1;
                    let _ = notify.send(st.version);
                };
                let mut socket = match connect {
                    Connect::Open(ws, max_frame) => Some((*ws, max_frame)),
                    Connect::After(gate) => {
                        gate.await;
                        None
                    }
                };
                let mut attempt = 0u32;
                // Why the relay went away, when it said so: kept over the connect errors of
                // the retries that follow.
                let mut gone: Option<String> = None;
                loop {
                    let (ws, max_frame) = match socket.take() {
                        Some(open) => open,
                        None => {
                            let opened = tokio::select! {
                                _ = cancel.cancelled() => return set(Connection::Closed("closed".into())),
                                opened = open(&code, &opts) => opened,
                            };
                            match opened {
                                Ok(opened) => (opened.ws, opened.max_frame),
                                Err(e) if e.is_permanent() => {
                                    return set(Connection::Closed(e.to_string()));
                                }
                                Err(e) => {
                                    attempt += 1;
                                    set(Connection::Reconnecting {
                                        attempt,
                                        reason: gone.clone().unwrap_or_else(|| e.to_string()),
                                    });
                                    if !backoff(attempt, &cancel).await {
                                        return set(Connection::Closed("closed".into()));
                                    }
                                    continue;
                                }
                            }
                        }
                    };
                    {
                        let mut st = lock(&state);
                        st.relay_max_frame = max_frame;
                        st.on_connected();
                    }
                    set(Connection::Connected);
                    attempt = 0;
                    let ended = session(
                        ws,
                        max_frame,
                        state.clone(),
                        notify.clone(),
                        opts.flush_interval,
                        flush_now.clone(),
                        cancel.clone(),
                    )
                    .await;
                    match ended {
                        Ended::Cancelled => return set(Connection::Closed("closed".into())),
                        Ended::Refused(reason) => return set(Connection::Closed(reason)),
                        Ended::Lost(reason) => {
                            lock(&state).on_disconnected();
                            gone = (reason == RELAY_GONE).then(|| reason.clone());
                            attempt += 1;
                            set(Connection::Reconnecting { attempt, reason });
                            if !backoff(attempt, &cancel).await {
                                return set(Connection::Closed("closed".into()));
                            }
                        }
                    }
                }
            })
        };
        Client {
            state,
            changes,
            notify,
            flush_now,
            cancel,
            task: Some(task),
            role,
            code,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn code(&self) -> &JoinCode {
        &self.code
    }

    /// Locks the shared state to read it (keep the guard short: the network task waits on it).
    pub fn state(&self) -> MutexGuard<'_, ClientState> {
        lock(&self.state)
    }

    pub fn text(&self) -> String {
        self.state().doc.text()
    }

    pub fn members(&self) -> Vec<Member> {
        self.state().members()
    }

    /// A receiver that changes whenever the text, members or connection change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Applies a local edit now (the rope reflects it at once); it is sent on the next tick.
    pub fn edit(&self, edit: &Edit) -> Result<(), ClientError> {
        if self.role == Role::Viewer {
            return Err(ClientError::ReadOnly);
        }
        self.state().doc.apply_local(edit)?;
        Ok(())
    }

    /// Sets a `meta` entry (file name, language); sent on the next tick.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), ClientError> {
        if self.role == Role::Viewer {
            return Err(ClientError::ReadOnly);
        }
        self.state().doc.set_meta(key, value);
        Ok(())
    }

    /// Publishes this member's selection (char offsets); sent on the next tick.
    pub fn set_cursor(&self, anchor: usize, head: usize) {
        self.state().set_cursor(anchor, head);
    }

    /// Sends a chat line to the room now.
    pub fn send_chat(&self, text: &str) {
        self.state().send_chat(text);
        self.flush();
    }

    /// What an editor needs to drive this session: the shared state and a way to flush now.
    pub fn handle(&self) -> SessionHandle {
        SessionHandle {
            state: self.state.clone(),
            flush_now: Some(self.flush_now.clone()),
        }
    }

    /// Sends pending edits and presence now instead of at the next tick.
    pub fn flush(&self) {
        self.flush_now.notify_one();
    }

    /// Waits until `pred` holds for the shared state, or `timeout` passes.
    pub async fn wait_for(
        &self,
        what: &'static str,
        timeout: Duration,
        mut pred: impl FnMut(&ClientState) -> bool,
    ) -> Result<(), ClientError> {
        let mut changes = self.changes.clone();
        let deadline = Instant::now() + timeout;
        loop {
            {
                let st = self.state();
                if pred(&st) {
                    return Ok(());
                }
                if let Connection::Closed(reason) = &st.connection {
                    return Err(ClientError::Disconnected(reason.clone()));
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ClientError::Disconnected("session ended".into())),
                Err(_) => return Err(ClientError::WaitTimeout(what)),
            }
        }
    }

    /// Waits for the relay's copy of the document to arrive.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), ClientError> {
        self.wait_for("the initial sync", timeout, |st| st.synced)
            .await
    }

    /// Flushes, tells the room we are leaving, and closes the connection.
    pub async fn close(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        let _ = self.notify.send(u64::MAX);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// How a session gets its socket: already open, or opened once a gate resolves.
enum Connect {
    Open(Box<Ws>, Option<usize>),
    After(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
}

/// How one connection ended.
enum Ended {
    Cancelled,
    /// The relay refused to go on in a way a retry cannot fix.
    Refused(String),
    /// The network or the relay went away: try again.
    Lost(String),
}

/// The network task: one loop over relay messages, flush ticks and cancellation.
async fn session(
    ws: Ws,
    max_frame: Option<usize>,
    state: Arc<Mutex<ClientState>>,
    notify: watch::Sender<u64>,
    flush_interval: Duration,
    flush_now: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) -> Ended {
    let (mut sink, mut stream) = ws.split();
    let bump = |st: &mut ClientState| {
        st.version += 1;
        let _ = notify.send(st.version);
    };
    let hello = {
        let st = lock(&state);
        protocol::sync_step1(&st.doc.state_vector())
    };
    let mut ended = Ended::Lost("connection closed".into());
    if sink.send(WsMessage::binary(hello)).await.is_err() {
        ended = Ended::Lost("could not send the sync handshake".into());
    } else {
        let mut ticker = tokio::time::interval(flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_awareness = Instant::now();
        loop {
            let outgoing = tokio::select! {
                _ = cancel.cancelled() => {
                    let mut frames = lock(&state).outgoing(true);
                    // Say goodbye so members drop us now rather than after a timeout.
                    if let Some(bye) = goodbye(&state) {
                        frames.push(bye);
                    }
                    for frame in frames {
                        let _ = sink.send(WsMessage::binary(frame)).await;
                    }
                    let _ = sink.close().await;
                    ended = Ended::Cancelled;
                    break;
                }
                _ = ticker.tick() => {
                    let renew = last_awareness.elapsed() >= AWARENESS_RENEW;
                    lock(&state).outgoing(renew)
                }
                _ = flush_now.notified() => lock(&state).outgoing(false),
                msg = stream.next() => match msg {
                    Some(Ok(WsMessage::Binary(data))) => {
                        let mut st = lock(&state);
                        let replies = st.receive(&data);
                        bump(&mut st);
                        match replies {
                            Ok(replies) => replies,
                            Err(e) => {
                                ended = Ended::Refused(format!("bad message from relay: {e}"));
                                break;
                            }
                        }
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        if let Some(frame) = frame {
                            let code = u16::from(frame.code);
                            let reason = if code == protocol::close::GOING_AWAY {
                                // Said until the relay is back, not replaced by "could not
                                // reach": the why is more use than the how.
                                RELAY_GONE.to_string()
                            } else {
                                format!("closed by relay ({code}): {}", frame.reason)
                            };
                            // Protocol errors and size refusals would only repeat; the rest retry.
                            ended = match code {
                                protocol::close::PROTOCOL_ERROR | protocol::close::TOO_BIG => Ended::Refused(reason),
                                _ => Ended::Lost(reason),
                            };
                        }
                        break;
                    }
                    Some(Ok(_)) => Vec::new(),
                    Some(Err(e)) => {
                        ended = Ended::Lost(e.to_string());
                        break;
                    }
                    None => break,
                },
            };
            if outgoing
                .iter()
                .any(|f| f.first() == Some(&protocol_tag_awareness()))
            {
                last_awareness = Instant::now();
            }
            // The relay would cut us off mid-send and the reconnect would send it again: say
            // why instead, and stop (local edits stay in the editor).
            if let Some(max) = max_frame
                && let Some(big) = outgoing.iter().map(Vec::len).filter(|&n| n > max).max()
            {
                ended = Ended::Refused(too_big_for_relay(big, max));
                break;
            }
            let mut failed = None;
            for frame in outgoing {
                if let Err(e) = sink.send(WsMessage::binary(frame)).await {
                    failed = Some(e.to_string());
                    break;
                }
            }
            if let Some(e) = failed {
                ended = Ended::Lost(e);
                break;
            }
        }
    }
    ended
}

/// Why a message was not sent to a relay whose limit it exceeds, and what to do about it.
fn too_big_for_relay(len: usize, max: usize) -> String {
    let mib = |n: usize| n as f64 / (1024.0 * 1024.0);
    format!(
        "not sent: a {:.1} MiB message exceeds the relay's {:.1} MiB limit; restart it with \
         `pairedit serve --max-frame {}` or larger (your edits stay here)",
        mib(len),
        mib(max),
        len.next_power_of_two()
    )
}

/// Sleeps for the backoff of `attempt` (exponential from 200 ms, capped at 10 s, with jitter so
/// a room's members do not all come back at once); false if cancelled meanwhile.
async fn backoff(attempt: u32, cancel: &CancellationToken) -> bool {
    let base = Duration::from_millis(200)
        .saturating_mul(1 << attempt.min(6))
        .min(Duration::from_secs(10));
    let jitter = 0.5 + (getrandom::u32().unwrap_or(0) as f64 / u32::MAX as f64) * 0.5;
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(base.mul_f64(jitter)) => true,
    }
}

/// An awareness update that removes our own state.
fn goodbye(state: &Mutex<ClientState>) -> Option<Vec<u8>> {
    let mut st = lock(state);
    st.awareness.clean_local_state();
    let me = st.awareness.client_id();
    st.awareness
        .update_with_clients([me])
        .ok()
        .map(protocol::awareness)
}

fn protocol_tag_awareness() -> u8 {
    yrs::sync::protocol::MSG_AWARENESS
}
