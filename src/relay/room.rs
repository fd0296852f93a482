//! One room: its yrs document and awareness, its members, and broadcast between them.
//!
//! Everything here is synchronous and runs under the room's mutex for the few microseconds a
//! message takes; connections hand frames in and get frames out through bounded queues.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use yrs::sync::{Awareness, AwarenessUpdate, Message, SyncMessage};
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

use super::metrics::Metrics;
use super::store::{RoomLog, hash_token};
use crate::protocol::{self, Role, close};

/// A room's log is compacted into a snapshot once it grows past this many bytes.
const COMPACT_LOG_AT: u64 = 64 << 20;

/// A member's connection as the room sees it.
struct Member {
    role: Role,
    tx: Arc<super::outbox::Outbox>,
    /// Awareness client ids this connection speaks for, with the bytes of each one's state
    /// (removed when it leaves).
    clients: HashMap<u64, usize>,
    /// Awareness client ids this connection has ever claimed (at most [`AWARENESS_IDS`]; one
    /// that goes and comes back counts once).
    claimed: Vec<u64>,
}

/// Presence is small: a name, a colour, a cursor. What a connection may publish is bounded so one
/// connection (a viewer too) cannot make the relay hold, or every joiner receive, megabytes of it:
/// at most this many client ids over the connection's life,
const AWARENESS_IDS: usize = 8;
/// each state at most this many bytes of JSON (a pairedit member's is about 300, with its
/// cursor and selection),
const AWARENESS_STATE_MAX: usize = 4 << 10;
/// and all of a room's states together at most this many (a joiner gets them all in one
/// message), viewers' at most half: view codes are handed out widely, and however many viewer
/// connections fill theirs, writers keep room for their presence.
const AWARENESS_ROOM_MAX: usize = 8 << 20;
const AWARENESS_VIEWERS_MAX: usize = AWARENESS_ROOM_MAX / 2;
/// The highest clock an entry may carry: a state at `u32::MAX` could never be removed (a
/// removal is the clock + 1), by the relay or by anyone.
const AWARENESS_CLOCK_MAX: u32 = u32::MAX - 1;
/// Removed states a room's awareness may remember before it is rebuilt without them (yrs keeps a
/// removed client's clock forever; members come and go for as long as a relay runs).
const AWARENESS_DEAD_MAX: usize = 4096;
/// How many client ids that writers spoke for a room remembers, so a viewer cannot take one
/// over while its writer is away (and keep the writer's presence out when it comes back).
/// Past that it starts over: the ids of writers that wrote stay theirs through the document's
/// state vector.
const WRITER_IDS_MAX: usize = 4096;

struct RoomState {
    awareness: Awareness,
    /// A host's own document, when it lent it to this room (then the doc under `awareness`
    /// stays empty): see [`Lent`].
    lent: Option<Lent>,
    members: HashMap<u64, Member>,
    /// Bytes of updates applied since `doc_bytes` was last measured exactly.
    approx_bytes: usize,
    /// What the updates just applied changed, to broadcast (on a lent doc, filled by an observer).
    applied: Applied,
    dirty: bool,
    /// With `--data-dir`: every accepted update is appended here before it is broadcast.
    log: Option<RoomLog>,
    /// When a member last joined, left or sent something (for evicting idle rooms).
    last_active: std::time::Instant,
    /// Updates held back until the updates before them arrive ([`gap`]), as a Yjs peer holds
    /// them: not applied, stored or sent until then. At most [`HELD_MAX`] of them.
    held: Vec<(u64, Vec<u8>)>,
    /// Bytes of the awareness states members hold now (at most [`AWARENESS_ROOM_MAX`]), and
    /// of those viewers hold (at most [`AWARENESS_VIEWERS_MAX`]).
    awareness_bytes: usize,
    viewer_awareness_bytes: usize,
    /// Removed awareness states since the awareness was last rebuilt.
    awareness_dead: usize,
    /// Awareness client ids writers have spoken for (see [`WRITER_IDS_MAX`]).
    writer_ids: HashSet<u64>,
    /// Which connection speaks for each awareness client id (every member's `clients` keys).
    owners: HashMap<u64, u64>,
}

/// How many updates a room holds back waiting for the ones before them, and how many bytes in
/// all: past either, an update that skips clocks is refused (its sender is told why).
const HELD_MAX: usize = 64;
const HELD_MAX_BYTES: usize = 4 << 20;

/// Why a message made the relay close the connection that sent it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("document would exceed the room's limit of {0} bytes")]
    DocTooLarge(usize),
    #[error("the relay cannot store this update ({0}); it was not applied")]
    Storage(String),
}

impl Refusal {
    pub fn close_code(&self) -> u16 {
        match self {
            Refusal::Malformed(_) => close::PROTOCOL_ERROR,
            Refusal::DocTooLarge(_) => close::TOO_BIG,
            Refusal::Storage(_) => close::INTERNAL,
        }
    }
}

/// A room: created by `POST /api/rooms`, kept by the relay while it runs (and on disk with
/// `--data-dir`), joined with its write or view token.
pub struct Room {
    pub id: String,
    /// SHA-256 of the tokens: the tokens themselves are never kept.
    write_hash: String,
    view_hash: String,
    max_doc_bytes: usize,
    state: Mutex<RoomState>,
    metrics: Arc<Metrics>,
    /// Joins accepted (their `101` on its way) whose connection is not a member yet: the room
    /// is not idle while any is under way, or it could be evicted under an arriving member.
    arriving: std::sync::atomic::AtomicUsize,
}

/// A join under way: counts in [`Room::arriving`] until dropped (after the member joined, or
/// when the upgrade failed).
pub struct Arrival(Arc<Room>);

impl Arrival {
    pub fn room(&self) -> &Arc<Room> {
        &self.0
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.arriving.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a room's doc changed, transaction by transaction, with who changed it.
type Applied = Arc<AppliedQueue>;
type AppliedQueue = Mutex<Vec<(Source, Vec<u8>)>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An update from this member's connection, applied by the room (maybe held back, then
    /// let through by another's): sent to every member but that one.
    Sender(u64),
    /// The lending host's own edit (see [`Lent`]): sent to every member but the host's own
    /// connection.
    Host,
}

/// A host's own yrs document, lent to the room of its built-in relay, so the process keeps one
/// copy of a (possibly 100 MB) file instead of two, and no seed is ever encoded or decoded.
///
/// The room reads `doc` directly but never writes it: a member's update goes to `apply`, which
/// integrates it the way the host's session integrates a remote update (its composed local
/// edits first, its rope mirror after), under the host's own lock, and returns what it changed.
/// The host's own edits reach the room through [`HostEdits`] (the session taps its outgoing
/// updates) and go to every member when the room next handles a message (the host's own update
/// message, sent on its next flush, is one), but not to the host's own connection: the one whose
/// presence speaks for the document's client id (`RoomState::lender`). Before it has spoken, it
/// gets them back too, and they change nothing there. No update observer: see [`new_doc`].
pub struct Lent {
    doc: Doc,
    apply: Box<ApplyFn>,
    applied: Applied,
}

/// Integrates a member's update into a lent document: what it changed in yrs (yrs' encoding,
/// even when refused part-way), and whether it went in whole.
type ApplyFn = dyn Fn(&[u8]) -> (Vec<u8>, Result<(), String>) + Send + Sync;

/// Where the lending host puts each of its own edits' updates, for the room to send its members.
#[derive(Clone)]
pub struct HostEdits(std::sync::Weak<AppliedQueue>);

impl HostEdits {
    pub fn push(&self, update: &[u8]) {
        // The room is gone: nobody to tell.
        if let Some(applied) = self.0.upgrade() {
            lock(&applied).push((Source::Host, update.to_vec()));
        }
    }
}

impl Lent {
    /// Lends `doc`; `apply` integrates a member's update (see [`ApplyFn`]). The host must give
    /// [`Lent::host_edits`] every update of its own edits from now on.
    pub fn new(
        doc: Doc,
        apply: impl Fn(&[u8]) -> (Vec<u8>, Result<(), String>) + Send + Sync + 'static,
    ) -> Lent {
        Lent {
            doc,
            apply: Box::new(apply),
            applied: Applied::default(),
        }
    }

    pub fn host_edits(&self) -> HostEdits {
        HostEdits(Arc::downgrade(&self.applied))
    }
}

impl RoomState {
    /// The lending host's own connection (see [`Lent`]): the writer whose presence speaks for
    /// the lent document's client id. The host's own edits are not sent back to it. (A writer
    /// that claimed that id first would only keep the host's edits from itself.)
    fn lender(&self) -> Option<u64> {
        let id = self.lent.as_ref()?.doc.client_id().get();
        let conn = *self.owners.get(&id)?;
        (self.members.get(&conn)?.role == Role::Writer).then_some(conn)
    }

    /// The room's document: its own, or the one a host lent it.
    fn doc(&self) -> &Doc {
        match &self.lent {
            Some(lent) => &lent.doc,
            None => self.awareness.doc(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where `update` has items of a client that would leave a hole after what the room has of
/// that client (`sv`): `(client, first clock after the hole, what the room has)`. A stock Yjs
/// peer holds such items back until the hole is filled; yrs puts them in the text at once. So
/// the room (and every pairedit member, which uses yrs) would show text no Yjs client shows.
/// A relay keeps each member's updates in order, so an honest member never sends one.
fn gap(update: &Update, sv: &StateVector) -> Option<(u64, u32, u32)> {
    for (&client, ranges) in update.insertions(true).iter() {
        let mut ranges: Vec<_> = ranges.iter().cloned().collect();
        ranges.sort_by_key(|r| r.start);
        let mut have = sv.get(&client);
        for r in ranges {
            if r.start > have {
                return Some((client.get(), r.start, sv.get(&client)));
            }
            have = have.max(r.end);
        }
    }
    None
}

/// Whether applying `update` would change the room's document: items it does not have (continuing
/// its state or after a gap) or deletions it has not made.
fn would_change(st: &RoomState, update: &Update) -> bool {
    if update.is_empty() {
        return false;
    }
    let txn = st.doc().transact();
    let snapshot = txn.snapshot();
    let sv = &snapshot.state_map;
    update.extends(sv)
        || update
            .state_vector_lower()
            .iter()
            .any(|(client, clock)| *clock > sv.get(client))
        || {
            let deletes = update.delete_set();
            deletes.client_ids().any(|client| {
                match (deletes.get(&client), snapshot.delete_set.get(&client)) {
                    (Some(asked), Some(known)) => !asked.subset_of(known),
                    (Some(asked), None) => !asked.is_empty(),
                    (None, _) => false,
                }
            })
        }
}

/// The relay's own doc never edits the text, so offsets never matter; UTF-16 matches Yjs.
///
/// It has no update observer: [`Room::apply_now`] encodes what each update changed inside its
/// transaction. An observer is called after the commit has merged the new items into the blocks
/// before them, and slicing the new part out of a merged block counts UTF-16 units from the
/// block's start: appending to one author's long text cost 55 ms per update at 32 MB (found by
/// QA; 99.7 % in yrs' `split_str`), under the room's lock. Encoded before the commit, 0.02 ms.
/// What goes out is still what the room's doc changed, never a member's bytes: yrs' own
/// encoding of what it integrated (see `tests/fuzz.rs`).
fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// Loads `updates` into a fresh doc that replaces the room's empty one, in one transaction:
/// loading a room (from disk) is not news for anyone. Only for a room with no content and no
/// members. Returns how many updates applied.
fn load_quietly(
    st: &mut RoomState,
    updates: &mut dyn Iterator<Item = (usize, &[u8])>,
    room: &str,
) -> usize {
    let doc = new_doc();
    let mut ok = 0;
    {
        let mut txn = doc.transact_mut();
        for (i, bytes) in updates {
            match protocol::decode_update(bytes).map(|u| txn.apply_update(u)) {
                Ok(Ok(())) => ok += 1,
                Ok(Err(e)) => tracing::warn!(room = %room, "update {i} does not apply: {e}"),
                Err(e) => tracing::warn!(room = %room, "update {i} does not decode: {e}"),
            }
        }
    }
    st.awareness = Awareness::new(doc);
    ok
}

/// Rebuilds the room's awareness without the states of clients that left, once there are many:
/// yrs keeps each one (its clock, no state) for good.
fn forget_removed_states(st: &mut RoomState) {
    if st.awareness_dead <= AWARENESS_DEAD_MAX {
        return;
    }
    let mut fresh = Awareness::new(st.awareness.doc().clone());
    if let Ok(live) = st.awareness.update() {
        let _ = fresh.apply_update(live);
    }
    st.awareness = fresh;
    st.awareness_dead = 0;
}

impl Room {
    /// A room whose tokens are `write_hash` / `view_hash` (see [`hash_token`]).
    pub fn new(
        id: String,
        write_hash: String,
        view_hash: String,
        max_doc_bytes: usize,
        metrics: Arc<Metrics>,
        log: Option<RoomLog>,
    ) -> Room {
        let doc = new_doc();
        let applied: Applied = Arc::default();
        Room {
            id,
            write_hash,
            view_hash,
            max_doc_bytes,
            state: Mutex::new(RoomState {
                awareness: Awareness::new(doc),
                lent: None,
                members: HashMap::new(),
                approx_bytes: 0,
                applied,
                dirty: false,
                log,
                last_active: std::time::Instant::now(),
                held: Vec::new(),
                awareness_bytes: 0,
                viewer_awareness_bytes: 0,
                awareness_dead: 0,
                writer_ids: HashSet::new(),
                owners: HashMap::new(),
            }),
            metrics,
            arriving: Default::default(),
        }
    }

    /// Restores a room from its stored updates (snapshot first, then the log), skipping any
    /// update that does not decode (reported, never fatal).
    pub fn restore(
        id: String,
        write_hash: String,
        view_hash: String,
        max_doc_bytes: usize,
        metrics: Arc<Metrics>,
        updates: &[Vec<u8>],
        log: RoomLog,
    ) -> Room {
        let room = Room::new(id, write_hash, view_hash, max_doc_bytes, metrics, Some(log));
        {
            let mut st = lock(&room.state);
            let mut stored = updates.iter().map(Vec::as_slice).enumerate();
            load_quietly(&mut st, &mut stored, &room.id);
            st.approx_bytes = updates.iter().map(Vec::len).sum();
        }
        room
    }

    /// Takes a host's own document as the room's (see [`Lent`]). Only for a room nobody has
    /// joined or written to, and without a data dir (the host's own edits never pass through
    /// the room's log).
    pub fn lend(&self, lent: Lent) -> Result<(), String> {
        let mut st = lock(&self.state);
        let empty =
            st.members.is_empty() && st.doc().transact().state_vector() == StateVector::default();
        if !empty {
            return Err("the room is already in use".into());
        }
        if st.log.is_some() {
            return Err("the room is stored on disk".into());
        }
        // Awareness keeps the room's own (empty) doc: on the host's, it would have the host's
        // client id, and yrs never lets a peer remove its "own" presence.
        st.applied = lent.applied.clone();
        // Its size, about: the content's length in UTF-16 units (encoding it to measure would
        // cost a transient copy of a big file; the exact size is measured before refusing).
        st.approx_bytes = lent
            .doc
            .transact()
            .state_vector()
            .iter()
            .map(|(_, clock)| *clock as usize)
            .sum();
        st.lent = Some(lent);
        st.dirty = true;
        Ok(())
    }

    /// Writes the whole document as a snapshot and empties the log (with `--data-dir`).
    pub fn compact(&self) -> std::io::Result<()> {
        let mut st = lock(&self.state);
        let state = st
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        match &mut st.log {
            Some(log) => {
                log.compact(&state)?;
                st.approx_bytes = state.len();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Which role a token grants here, comparing in constant time.
    pub fn role_for(&self, token: &str) -> Option<Role> {
        let hash = hash_token(token);
        // Evaluate both comparisons so timing does not reveal which one matched.
        let w = protocol::constant_time_eq(&hash, &self.write_hash);
        let v = protocol::constant_time_eq(&hash, &self.view_hash);
        match (w, v) {
            (true, _) => Some(Role::Writer),
            (false, true) => Some(Role::Viewer),
            _ => None,
        }
    }

    pub fn member_count(&self) -> usize {
        lock(&self.state).members.len()
    }

    /// One sweep for silent members, run every third of the relay's `ping_after`: a member
    /// not heard from for `ping_at` sweeps in a row is pinged, one silent for `drop_at` sweeps
    /// is dropped (a peer that vanished without closing its socket: its presence would stay
    /// on everyone's screen for good). Returns how many were dropped.
    pub fn sweep_silent(&self, ping_at: u8, drop_at: u8, reason: &str) -> usize {
        let mut st = lock(&self.state);
        let mut silent = Vec::new();
        for (id, member) in &st.members {
            let n = member.tx.silent_for();
            if n >= drop_at {
                silent.push(*id);
            } else if n >= ping_at {
                member.tx.ping();
            }
        }
        for id in &silent {
            if let Some(member) = st.members.get(id) {
                member.tx.kick(close::POLICY, reason);
            }
            self.drop_member(&mut st, *id);
        }
        silent.len()
    }

    /// Marks a join under way (see [`Room::arriving`]); the relay calls this under its room
    /// map's lock, which eviction also holds.
    pub fn arrive(self: &Arc<Self>) -> Arrival {
        self.arriving.fetch_add(1, Ordering::AcqRel);
        Arrival(self.clone())
    }

    /// How long the room has had no members and no traffic (`None` while anyone is in it or
    /// on the way in).
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        if self.arriving.load(Ordering::Acquire) > 0 {
            return None;
        }
        let st = lock(&self.state);
        st.members.is_empty().then(|| st.last_active.elapsed())
    }

    /// The room's whole document as one update (for snapshots and tests).
    pub fn encode_state(&self) -> Vec<u8> {
        let st = lock(&self.state);
        let txn = st.doc().transact();
        txn.encode_state_as_update_v1(&StateVector::default())
    }

    /// Takes the dirty flag: true when the document changed since the last call.
    pub fn take_dirty(&self) -> bool {
        std::mem::take(&mut lock(&self.state).dirty)
    }

    /// Marks the room as needing a save (after a failed one).
    pub fn mark_dirty(&self) {
        lock(&self.state).dirty = true;
    }

    /// Adds a member and returns the frames that open its session: our sync step 1 (so it sends
    /// what we lack) and the current awareness of everyone else. `None` when the room is full.
    pub fn join(
        &self,
        conn_id: u64,
        role: Role,
        tx: Arc<super::outbox::Outbox>,
        max_members: usize,
    ) -> Option<Vec<Bytes>> {
        let mut st = lock(&self.state);
        if st.members.len() >= max_members {
            return None;
        }
        let sv = st.doc().transact().state_vector();
        let mut hello = vec![Bytes::from(protocol::sync_step1(&sv))];
        if let Ok(update) = st.awareness.update()
            && !update.clients.is_empty()
        {
            hello.push(Bytes::from(protocol::awareness(update)));
        }
        st.members.insert(
            conn_id,
            Member {
                role,
                tx,
                clients: HashMap::new(),
                claimed: Vec::new(),
            },
        );
        Some(hello)
    }

    /// Asks every member's connection to close with `code` and `reason`.
    pub fn kick_all(&self, code: u16, reason: &str) {
        for member in lock(&self.state).members.values() {
            member.tx.kick(code, reason);
        }
    }

    /// Removes a member and tells the others its awareness states are gone.
    pub fn leave(&self, conn_id: u64) {
        let mut st = lock(&self.state);
        st.last_active = std::time::Instant::now();
        let Some(member) = st.members.remove(&conn_id) else {
            return;
        };
        self.remove_awareness(&mut st, &member);
    }

    fn remove_awareness(&self, st: &mut RoomState, member: &Member) {
        let clients = &member.clients;
        if clients.is_empty() {
            return;
        }
        let mut removal = AwarenessUpdate {
            clients: HashMap::new(),
        };
        for (&client, &bytes) in clients {
            st.owners.remove(&client);
            st.awareness_bytes = st.awareness_bytes.saturating_sub(bytes);
            if member.role == Role::Viewer {
                st.viewer_awareness_bytes = st.viewer_awareness_bytes.saturating_sub(bytes);
            }
            let id = yrs::block::ClientID::new(client);
            if let Some((clock, _)) = st.awareness.meta(id) {
                removal.clients.insert(
                    id,
                    yrs::sync::awareness::AwarenessUpdateEntry {
                        // (No entry above AWARENESS_CLOCK_MAX is admitted.)
                        clock: clock.saturating_add(1),
                        json: "null".into(),
                    },
                );
            }
        }
        if removal.clients.is_empty() {
            return;
        }
        st.awareness_dead += removal.clients.len();
        let frame = Bytes::from(protocol::awareness(removal.clone()));
        let _ = st.awareness.apply_update(removal);
        self.broadcast(st, None, frame);
        forget_removed_states(st);
    }

    /// Handles one binary WebSocket message from a member.
    pub fn handle(&self, conn_id: u64, frame: &[u8]) -> Result<(), Refusal> {
        let msgs =
            protocol::decode_messages(frame).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let mut st = lock(&self.state);
        st.last_active = std::time::Instant::now();
        let Some(role) = st.members.get(&conn_id).map(|m| m.role) else {
            return Ok(());
        };
        let handled = self.handle_messages(&mut st, conn_id, role, msgs);
        // What the doc changed goes out even when a later message in the frame was refused.
        self.send_applied(&mut st);
        handled
    }

    /// Sends what the room's doc changed since the last call: a member's update to everyone
    /// else, a lending host's edit to everyone.
    fn send_applied(&self, st: &mut RoomState) {
        let applied = std::mem::take(&mut *lock(&st.applied));
        for (source, update) in applied {
            st.dirty = true;
            let except = match source {
                Source::Sender(id) => Some(id),
                Source::Host => st.lender(),
            };
            self.broadcast(st, except, Bytes::from(protocol::sync_update(update)));
        }
    }

    fn handle_messages(
        &self,
        st: &mut RoomState,
        conn_id: u64,
        role: Role,
        msgs: Vec<Message>,
    ) -> Result<(), Refusal> {
        for msg in msgs {
            match msg {
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    let diff = st.doc().transact().encode_state_as_update_v1(&sv);
                    self.send_to(st, conn_id, Bytes::from(protocol::sync_step2(diff)));
                }
                Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                    match role {
                        Role::Writer => self.apply_write(st, conn_id, &update)?,
                        Role::Viewer => self.refuse_viewer_write(st, conn_id, &update)?,
                    }
                }
                Message::Awareness(update) => self.apply_awareness(st, conn_id, update),
                Message::AwarenessQuery => {
                    if let Ok(update) = st.awareness.update() {
                        self.send_to(st, conn_id, Bytes::from(protocol::awareness(update)));
                    }
                }
                // Clients have no business sending auth; unknown tags are ignored like y-websocket does.
                Message::Auth(_) | Message::Custom(_, _) => {
                    self.metrics
                        .ignored_messages
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// A writer's update: applied, or held back until what it follows arrives ([`gap`]); then
    /// whatever it lets through of the held ones.
    fn apply_write(&self, st: &mut RoomState, from: u64, bytes: &[u8]) -> Result<(), Refusal> {
        let update =
            protocol::decode_update(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let sv = st.doc().transact().state_vector();
        if let Some((client, clock, has)) = gap(&update, &sv) {
            let held_bytes: usize = st.held.iter().map(|(_, b)| b.len()).sum();
            if st.held.len() >= HELD_MAX || held_bytes + bytes.len() > HELD_MAX_BYTES {
                return Err(Refusal::Malformed(format!(
                    "update skips clocks: client {client} from {clock}, the room has {has}"
                )));
            }
            st.held.push((from, bytes.to_vec()));
            return Ok(());
        }
        self.apply_now(st, Source::Sender(from), update, bytes)?;
        // Each one applied may let another through.
        // (Nothing to look at, the common case: no state vector made.)
        while !st.held.is_empty() {
            let sv = st.doc().transact().state_vector();
            let Some(i) = st.held.iter().position(|(_, b)| {
                protocol::decode_update(b).is_ok_and(|u| gap(&u, &sv).is_none())
            }) else {
                break;
            };
            let (sender, bytes) = st.held.remove(i);
            if let Ok(update) = protocol::decode_update(&bytes)
                && let Err(e) = self.apply_now(st, Source::Sender(sender), update, &bytes)
            {
                tracing::warn!(room = %self.id, "a held-back update was refused: {e}");
            }
        }
        Ok(())
    }

    /// Stores and applies one update, and queues what it changed to be broadcast (on a lent doc
    /// the observer does; see [`new_doc`]).
    fn apply_now(
        &self,
        st: &mut RoomState,
        source: Source,
        update: Update,
        bytes: &[u8],
    ) -> Result<(), Refusal> {
        if !would_change(st, &update) {
            // A reconnecting writer's step 2 often brings nothing new: nothing to store or send.
            return Ok(());
        }
        if st.approx_bytes + bytes.len() > self.max_doc_bytes {
            // The running estimate only grows; measure exactly before refusing.
            let exact = st
                .doc()
                .transact()
                .encode_state_as_update_v1(&StateVector::default())
                .len();
            st.approx_bytes = exact;
            if exact + bytes.len() > self.max_doc_bytes {
                return Err(Refusal::DocTooLarge(self.max_doc_bytes));
            }
        }
        // Stored before it is applied or broadcast: what anyone has seen, the disk has.
        if let Some(log) = &mut st.log {
            log.append(bytes).map_err(|e| {
                tracing::error!(room = %self.id, "cannot append to the room log: {e}");
                Refusal::Storage(e.to_string())
            })?;
        }
        let (changed, applied) = match &st.lent {
            Some(lent) => (lent.apply)(bytes),
            None => {
                let mut txn = st.doc().transact_mut();
                let applied = txn.apply_update(update);
                // Encoded before the commit merges the new items into the blocks before them.
                (txn.encode_update_v1(), applied.map_err(|e| e.to_string()))
            }
        };
        // A refused update may have gone in part-way: that part goes out too.
        if changed != protocol::EMPTY_UPDATE {
            lock(&st.applied).push((source, changed));
        }
        applied.map_err(Refusal::Malformed)?;
        st.approx_bytes += bytes.len();
        if st.log.as_ref().is_some_and(|l| l.len > COMPACT_LOG_AT) {
            // Keep replay time and disk use bounded; the periodic snapshot covers the rest.
            let state = st
                .doc()
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            if let Some(log) = &mut st.log
                && let Err(e) = log.compact(&state)
            {
                tracing::error!(room = %self.id, "compaction failed: {e}");
            }
        }
        Ok(())
    }

    /// A viewer's update never reaches the document or any member. If it would have changed
    /// something, the viewer is told (`auth` permission denied) and the drop is counted; an update
    /// that carries nothing new (a stock client's sync step 2 reply) is dropped silently.
    fn refuse_viewer_write(
        &self,
        st: &mut RoomState,
        conn_id: u64,
        bytes: &[u8],
    ) -> Result<(), Refusal> {
        let update =
            protocol::decode_update(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if update.is_empty() {
            return Ok(());
        }
        let writes = would_change(st, &update);
        if writes {
            self.metrics
                .viewer_writes_dropped
                .fetch_add(1, Ordering::Relaxed);
            let denied =
                protocol::permission_denied("read-only: this connection joined with a view token");
            self.send_to(st, conn_id, Bytes::from(denied));
        }
        Ok(())
    }

    /// A member's presence: only the entries it may publish ([`Room::admit_awareness`]) are kept
    /// and passed on; the others are dropped (and counted), the connection stays.
    fn apply_awareness(&self, st: &mut RoomState, conn_id: u64, mut update: AwarenessUpdate) {
        let before = update.clients.len();
        update
            .clients
            .retain(|id, entry| self.admit_awareness(st, conn_id, id.get(), entry));
        let dropped = before - update.clients.len();
        if dropped > 0 {
            self.metrics
                .awareness_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        if update.clients.is_empty() {
            return;
        }
        let frame = Bytes::from(protocol::awareness(update.clone()));
        let _ = st.awareness.apply_update(update);
        self.broadcast(st, Some(conn_id), frame);
        forget_removed_states(st);
    }

    /// Whether one awareness entry from `conn_id` goes in, accounting for it if so. An entry is
    /// dropped when it:
    /// - speaks for a client id another member speaks for, or (from a viewer) one a writer
    ///   spoke for or that wrote to the document: nobody takes over someone else's presence;
    /// - is not newer than what the room has for that id (it would change nothing);
    /// - is not JSON, or is larger than [`AWARENESS_STATE_MAX`]: stock Yjs clients `JSON.parse`
    ///   every state they receive, and one that throws takes the client down;
    /// - removes a state the connection does not hold;
    /// - has a clock past [`AWARENESS_CLOCK_MAX`];
    /// - is past the connection's [`AWARENESS_IDS`], or the room's [`AWARENESS_ROOM_MAX`]
    ///   ([`AWARENESS_VIEWERS_MAX`] for a viewer).
    fn admit_awareness(
        &self,
        st: &mut RoomState,
        conn_id: u64,
        id: u64,
        entry: &yrs::sync::awareness::AwarenessUpdateEntry,
    ) -> bool {
        let Some(member) = st.members.get(&conn_id) else {
            return false;
        };
        let role = member.role;
        let held = member.clients.get(&id).copied();
        let removing = entry.json.as_ref() == "null";
        if entry.clock > AWARENESS_CLOCK_MAX {
            return false;
        }
        if held.is_none() {
            let new_id = !member.claimed.contains(&id);
            if removing || (new_id && member.claimed.len() >= AWARENESS_IDS) {
                return false;
            }
            if st.owners.contains_key(&id) {
                // (Not ours: ours would be in `held`.)
                return false;
            }
            if role == Role::Viewer
                && (st.writer_ids.contains(&id)
                    || st
                        .doc()
                        .transact()
                        .state_vector()
                        .contains_client(&yrs::block::ClientID::new(id)))
            {
                return false;
            }
        }
        // Newer than what the room has, as yrs decides: a later clock, or a removal at the same one.
        let newer = match st.awareness.meta(yrs::block::ClientID::new(id)) {
            None => true,
            Some((clock, _)) => clock < entry.clock || (clock == entry.clock && removing),
        };
        if !newer {
            return false;
        }
        let bytes = if removing { 0 } else { entry.json.len() };
        if !removing {
            if bytes > AWARENESS_STATE_MAX
                || serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).is_err()
            {
                return false;
            }
            let others = st.awareness_bytes - held.unwrap_or(0);
            if others + bytes > AWARENESS_ROOM_MAX {
                return false;
            }
            if role == Role::Viewer
                && st.viewer_awareness_bytes - held.unwrap_or(0) + bytes > AWARENESS_VIEWERS_MAX
            {
                return false;
            }
        }
        st.awareness_bytes = st.awareness_bytes - held.unwrap_or(0) + bytes;
        if role == Role::Viewer {
            st.viewer_awareness_bytes = st.viewer_awareness_bytes - held.unwrap_or(0) + bytes;
        }
        if role == Role::Writer && !st.writer_ids.contains(&id) {
            if st.writer_ids.len() >= WRITER_IDS_MAX {
                st.writer_ids.clear();
            }
            st.writer_ids.insert(id);
        }
        let Some(member) = st.members.get_mut(&conn_id) else {
            return false;
        };
        if removing {
            member.clients.remove(&id);
            st.owners.remove(&id);
            st.awareness_dead += 1;
        } else {
            if !member.claimed.contains(&id) {
                member.claimed.push(id);
            }
            member.clients.insert(id, bytes);
            st.owners.insert(id, conn_id);
        }
        true
    }

    fn send_to(&self, st: &mut RoomState, conn_id: u64, frame: Bytes) {
        let Some(member) = st.members.get(&conn_id) else {
            return;
        };
        if !self.offer(member, frame) {
            self.drop_member(st, conn_id);
        }
    }

    /// Sends `frame` to every member but `except`; members whose queue is full are disconnected.
    fn broadcast(&self, st: &mut RoomState, except: Option<u64>, frame: Bytes) {
        let mut slow = Vec::new();
        let mut sent = 0;
        for (id, member) in &st.members {
            if Some(*id) == except {
                continue;
            }
            if self.queue(member, frame.clone()) {
                sent += 1;
            } else {
                slow.push(*id);
            }
        }
        // Counted once per broadcast: two shared counters per member were contended writes.
        self.count_out(sent, sent * frame.len() as u64);
        for id in slow {
            self.drop_member(st, id);
        }
    }

    fn count_out(&self, messages: u64, bytes: u64) {
        self.metrics
            .messages_out
            .fetch_add(messages, Ordering::Relaxed);
        self.metrics.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Queues a frame without waiting; false when the member cannot keep up (or is gone).
    fn offer(&self, member: &Member, frame: Bytes) -> bool {
        let len = frame.len() as u64;
        let queued = self.queue(member, frame);
        if queued {
            self.count_out(1, len);
        }
        queued
    }

    /// [`Room::offer`] without the counting.
    fn queue(&self, member: &Member, frame: Bytes) -> bool {
        match member.tx.try_send(frame) {
            Ok(()) => true,
            Err(super::outbox::Refused::Full) => {
                self.metrics
                    .slow_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                member.tx.kick(close::POLICY, "too slow: send queue full");
                false
            }
            Err(super::outbox::Refused::Closed) => false,
        }
    }

    fn drop_member(&self, st: &mut RoomState, conn_id: u64) {
        if let Some(member) = st.members.remove(&conn_id) {
            member.tx.kick(close::POLICY, "disconnected by the relay");
            self.remove_awareness(st, &member);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_room() -> Room {
        Room::new(
            "r".into(),
            "w".into(),
            "v".into(),
            1 << 20,
            Arc::new(Metrics::default()),
            None,
        )
    }

    /// Between a join's `101` and its connection becoming a member the room has no members;
    /// it must not count as idle then, or eviction could take it from under the arriving member
    /// (seen once in CI: a room evicted while its two members were connecting).
    #[test]
    fn a_join_under_way_keeps_the_room_from_being_idle() {
        let room = Arc::new(test_room());
        assert!(room.idle_for().is_some(), "empty and nobody coming: idle");
        let first = room.arrive();
        let second = room.arrive();
        assert!(room.idle_for().is_none());
        drop(first);
        assert!(room.idle_for().is_none(), "one is still on the way");
        let outbox = Arc::new(super::super::outbox::Outbox::new(8));
        assert!(room.join(1, Role::Viewer, outbox, 10).is_some());
        drop(second);
        assert!(room.idle_for().is_none(), "a member is in");
        room.leave(1);
        assert!(room.idle_for().is_some());
    }

    /// A host's own edits in the document it lent go to every member but the host's own
    /// connection (the one whose presence speaks for the document's client id): it has them
    /// already, and each echo was a message to decode and a wake of its editor (a big paste, a
    /// big one). Until that connection has spoken, and after it leaves, they go to everyone.
    #[test]
    fn the_lending_hosts_own_edits_are_not_sent_back_to_it() {
        use yrs::updates::decoder::Decode as _;
        use yrs::{GetString as _, ReadTxn as _, Text as _, Transact as _};
        let room = test_room();
        let host_doc = yrs::Doc::new();
        let host_text = host_doc.get_or_insert_text("text");
        let into = host_doc.clone();
        let lent = Lent::new(host_doc.clone(), move |update| {
            let applied = yrs::Update::decode_v1(update)
                .map_err(|e| e.to_string())
                .and_then(|u| {
                    into.transact_mut()
                        .apply_update(u)
                        .map_err(|e| e.to_string())
                });
            (update.to_vec(), applied)
        });
        let host_edits = lent.host_edits();
        room.lend(lent).unwrap();
        let outbox = || Arc::new(super::super::outbox::Outbox::new(1 << 10));
        let (host, viewer, writer) = (outbox(), outbox(), outbox());
        assert!(room.join(0, Role::Writer, host.clone(), 10).is_some());
        assert!(room.join(1, Role::Viewer, viewer.clone(), 10).is_some());
        assert!(room.join(2, Role::Writer, writer.clone(), 10).is_some());
        let presence = |id: u64, clock: u32| {
            let mut update = AwarenessUpdate {
                clients: HashMap::new(),
            };
            update.clients.insert(
                yrs::block::ClientID::new(id),
                yrs::sync::awareness::AwarenessUpdateEntry {
                    clock,
                    json: r#"{"user":{"name":"n"}}"#.into(),
                },
            );
            protocol::awareness(update)
        };
        // The host types; its session hands the update to the room and, on its next flush,
        // sends it from its connection too (which lets the room pass it on).
        let host_types = |conn: u64, text: &str| {
            let before = host_doc.transact().state_vector();
            {
                let mut txn = host_doc.transact_mut();
                let at = host_text.len(&txn);
                host_text.insert(&mut txn, at, text);
            }
            let update = host_doc.transact().encode_state_as_update_v1(&before);
            host_edits.push(&update);
            room.handle(conn, &protocol::sync_update(update)).unwrap();
        };
        let drain = |outbox: &super::super::outbox::Outbox| {
            let mut updates = 0;
            while let Some(frame) = outbox.try_recv() {
                let msgs = protocol::decode_messages(&frame).unwrap();
                updates += msgs
                    .iter()
                    .filter(|m| matches!(m, Message::Sync(SyncMessage::Update(_))))
                    .count();
            }
            updates
        };
        let drain_all = || [drain(&host), drain(&viewer), drain(&writer)];
        drain_all();
        // Before the host's connection has said who it is: everyone, the host too.
        host_types(0, "a");
        assert_eq!(drain_all(), [1, 1, 1]);
        // Once its presence speaks for the document's client id: everyone but the host.
        room.handle(0, &presence(host_doc.client_id().get(), 1))
            .unwrap();
        drain_all();
        host_types(0, "b");
        assert_eq!(drain_all(), [0, 1, 1]);
        // Another writer's presence under its own id changes nothing.
        room.handle(2, &presence(77, 1)).unwrap();
        drain_all();
        host_types(0, "c");
        assert_eq!(drain_all(), [0, 1, 1]);
        assert_eq!(host_text.get_string(&host_doc.transact()), "abc");
        // The host's connection gone (its session reconnects): a new one gets them until it speaks.
        room.leave(0);
        let again = outbox();
        assert!(room.join(3, Role::Writer, again.clone(), 10).is_some());
        drain(&again);
        host_types(3, "d");
        assert_eq!([drain(&again), drain(&viewer), drain(&writer)], [1, 1, 1]);
    }

    /// Members come and go for as long as a relay runs; the awareness must not keep every one
    /// of them (yrs keeps a removed client's clock for good).
    #[test]
    fn the_presence_of_members_that_left_is_forgotten() {
        let room = test_room();
        let stays = Arc::new(super::super::outbox::Outbox::new(1 << 20));
        assert!(room.join(0, Role::Writer, stays, 10).is_some());
        let say = |id: u64| {
            let mut update = AwarenessUpdate {
                clients: HashMap::new(),
            };
            update.clients.insert(
                yrs::block::ClientID::new(id),
                yrs::sync::awareness::AwarenessUpdateEntry {
                    clock: 1,
                    json: r#"{"user":{"name":"n"}}"#.into(),
                },
            );
            protocol::awareness(update)
        };
        room.handle(0, &say(1)).unwrap();
        for conn in 1..=(2 * AWARENESS_DEAD_MAX as u64) {
            let outbox = Arc::new(super::super::outbox::Outbox::new(64));
            assert!(room.join(conn, Role::Viewer, outbox, 10).is_some());
            room.handle(conn, &say(1000 + conn)).unwrap();
            room.leave(conn);
        }
        let st = lock(&room.state);
        let kept = st.awareness.iter().count();
        assert!(kept <= AWARENESS_DEAD_MAX + 1, "{kept} states kept");
        assert!(st.awareness.meta(yrs::block::ClientID::new(1)).is_some());
        assert_eq!(
            st.awareness.update().unwrap().clients.len(),
            1,
            "the one who stayed"
        );
        assert_eq!(st.awareness_bytes, r#"{"user":{"name":"n"}}"#.len());
    }
}
