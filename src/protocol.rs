//! The wire, in one place: y-websocket messages (y-protocols over lib0 v1, encoded by `yrs`),
//! limits, roles, ids and tokens, and the join-code scheme.
//!
//! See `docs/protocol.md` for the contract a stock Yjs client relies on.

use std::fmt;

use base64::Engine as _;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};

/// Name of the shared `Y.Text` holding the document.
pub const TEXT_NAME: &str = "content";
/// Name of the shared `Y.Map` holding room metadata (`name`, `language`).
pub const META_NAME: &str = "meta";
/// Protocol version of pairedit's own additions (codes, role header); y-protocols itself is unversioned.
pub const PROTOCOL_VERSION: u32 = 1;
/// Response header on the WebSocket upgrade with the relay's [`PROTOCOL_VERSION`].
pub const VERSION_HEADER: &str = "x-pairedit-protocol";
/// Response header on the WebSocket upgrade that tells the client its role.
pub const ROLE_HEADER: &str = "x-pairedit-role";
/// Response header on the WebSocket upgrade with the largest message the relay accepts, so a
/// client can say why before sending something bigger (instead of being cut off mid-send).
pub const MAX_FRAME_HEADER: &str = "x-pairedit-max-frame";
/// Largest WebSocket message the relay accepts by default.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Default flush cadence of local edits (the mission's delta cadence).
pub const DEFAULT_FLUSH_MS: u64 = 200;

/// WebSocket close codes the relay uses, with their meaning.
pub mod close {
    /// The peer sent bytes that are not y-websocket messages.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy: the room is full, or the connection could not keep up.
    pub const POLICY: u16 = 1008;
    /// A message was larger than the relay's `max_frame`, or the document would grow too large.
    pub const TOO_BIG: u16 = 1009;
    /// The relay is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The relay could not store an update (disk full, say); it was not applied.
    pub const INTERNAL: u16 = 1011;
}

/// What a connection may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May read and write the document.
    Writer,
    /// May read the document and send awareness, never write.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "writer" => Some(Role::Writer),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed y-websocket message: {0}")]
    Malformed(String),
    #[error("empty message")]
    Empty,
}

/// Decodes every y-protocols message in one WebSocket binary message (y-websocket sends one,
/// but the format allows several back to back).
pub fn decode_messages(bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
    if bytes.is_empty() {
        return Err(ProtocolError::Empty);
    }
    guarded(|| {
        let mut decoder = DecoderV1::from(bytes);
        let mut out = Vec::new();
        for msg in yrs::sync::MessageReader::new(&mut decoder) {
            out.push(msg.map_err(|e| ProtocolError::Malformed(e.to_string()))?);
        }
        if out.is_empty() {
            return Err(ProtocolError::Malformed("truncated message".into()));
        }
        Ok(out)
    })
}

/// Runs a yrs decoder on untrusted bytes. Some malformed input makes yrs 0.28 panic (e.g. a
/// client id wider than 53 bits trips an assertion in `ClientID::new`, found by `tests/fuzz.rs`);
/// here that becomes a malformed-message error for that connection, not a crash.
pub fn guarded<T>(decode: impl FnOnce() -> Result<T, ProtocolError>) -> Result<T, ProtocolError> {
    quiet_panics_in_guard();
    IN_GUARD.with(|g| g.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode));
    IN_GUARD.with(|g| g.set(false));
    result.unwrap_or_else(|_| {
        Err(ProtocolError::Malformed(
            "the decoder rejected the bytes".into(),
        ))
    })
}

thread_local! {
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A hostile frame must not flood stderr with panic reports: inside [`guarded`] a panic is
/// logged at debug level; everywhere else the previous hook (ratatui's terminal restore, the
/// default report) runs as before.
fn quiet_panics_in_guard() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_GUARD.with(|g| g.get()) {
                tracing::debug!("decoder panicked on malformed input: {info}");
            } else {
                previous(info);
            }
        }));
    });
}

/// Encodes one message as a WebSocket binary payload.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut enc = EncoderV1::new();
    msg.encode(&mut enc);
    enc.to_vec()
}

pub fn sync_step1(sv: &yrs::StateVector) -> Vec<u8> {
    encode(&Message::Sync(SyncMessage::SyncStep1(sv.clone())))
}

pub fn sync_step2(update: Vec<u8>) -> Vec<u8> {
    encode(&Message::Sync(SyncMessage::SyncStep2(update)))
}

pub fn sync_update(update: Vec<u8>) -> Vec<u8> {
    encode(&Message::Sync(SyncMessage::Update(update)))
}

pub fn permission_denied(reason: &str) -> Vec<u8> {
    encode(&Message::Auth(Some(reason.to_string())))
}

/// A v1 update with no items and no deletions: what a transaction that changed nothing encodes.
pub const EMPTY_UPDATE: [u8; 2] = [0, 0];

pub fn awareness(update: yrs::sync::AwarenessUpdate) -> Vec<u8> {
    encode(&Message::Awareness(update))
}

/// Decodes a lib0 v1 update, mapping the error to ours.
///
/// An update that lists a client's structs in two places is refused: Yjs and yrs write each
/// client once, and yrs 0.28 integrates a second, overlapping list into a text whose length no
/// longer matches its content.
pub fn decode_update(bytes: &[u8]) -> Result<yrs::Update, ProtocolError> {
    if let Some(depth) = nesting(bytes)
        && depth > MAX_NESTING
    {
        return Err(ProtocolError::Malformed(format!(
            "values nested over {MAX_NESTING} deep"
        )));
    }
    let update = guarded(|| {
        yrs::Update::decode_v1(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))
    })?;
    // The first varuint is how many client lists the update has; every list of a well-formed
    // update starts with a struct, so each names a client of its own. Read as yrs reads it (a
    // padded varuint included), so the two can never disagree.
    let lists = {
        use yrs::encoding::read::{Cursor, Read as _};
        u64::from(Cursor::new(bytes).read_var::<u32>().unwrap_or(0))
    };
    if lists > update.state_vector_lower().len() as u64 {
        return Err(ProtocolError::Malformed(
            "an update lists a client's structs more than once".into(),
        ));
    }
    Ok(update)
}

/// The deepest nesting of values (arrays and maps in arrays and maps: lib0's `Any`, in a
/// `ContentAny` or a sub-document's options) an update may have, as deep as `serde_json` reads
/// JSON. yrs reads, writes and drops such values by recursion: nested 20,000 deep (40 KB of
/// update) they overflowed the relay's stack, which aborts the process, and with `--data-dir`
/// the update was stored first, so every restart aborted too (found by QA).
pub const MAX_NESTING: usize = 128;

/// How deep `update`'s values nest (more than [`MAX_NESTING`]: the first depth found past it),
/// read without recursion; `None` if it is not a v1 update as read here (yrs then decides).
fn nesting(update: &[u8]) -> Option<usize> {
    let mut s = Scan(update);
    let mut deepest = 0;
    for _ in 0..s.varuint()? {
        let structs = s.varuint()?;
        s.varuint()?; // client
        s.varuint()?; // clock
        for _ in 0..structs {
            let info = s.byte()?;
            let content = info & 0x1f;
            if content == 0 || content == 10 {
                // GC or Skip: a length.
                s.varuint()?;
                continue;
            }
            if info & 0x80 != 0 {
                s.varuint()?;
                s.varuint()?;
            }
            if info & 0x40 != 0 {
                s.varuint()?;
                s.varuint()?;
            }
            if info & 0xc0 == 0 {
                if s.varuint()? == 1 {
                    s.bytes()?; // a root type's name
                } else {
                    s.varuint()?;
                    s.varuint()?;
                }
                if info & 0x20 != 0 {
                    s.bytes()?; // parent sub
                }
            }
            match content {
                1 => {
                    s.varuint()?;
                }
                2 => {
                    for _ in 0..s.varuint()? {
                        s.bytes()?;
                    }
                }
                3..=5 => {
                    s.bytes()?;
                }
                6 => {
                    s.bytes()?;
                    s.bytes()?;
                }
                7 => {
                    // XmlElement and XmlHook carry a name.
                    if matches!(s.varuint()?, 3 | 5) {
                        s.bytes()?;
                    }
                }
                8 => {
                    for _ in 0..s.varuint()? {
                        deepest = deepest.max(s.any()?);
                        if deepest > MAX_NESTING {
                            return Some(deepest);
                        }
                    }
                }
                9 => {
                    s.bytes()?;
                    deepest = deepest.max(s.any()?);
                }
                _ => return None,
            }
            if deepest > MAX_NESTING {
                return Some(deepest);
            }
        }
    }
    Some(deepest)
}

/// Reads a lib0 v1 encoding just far enough for [`nesting`].
struct Scan<'a>(&'a [u8]);

impl Scan<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }

    fn varuint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    /// A length-prefixed string or byte array.
    fn bytes(&mut self) -> Option<()> {
        let n = usize::try_from(self.varuint()?).ok()?;
        self.skip(n)
    }

    /// One `Any` value; how deeply its arrays and maps nest (stops past [`MAX_NESTING`]).
    fn any(&mut self) -> Option<usize> {
        // Children still to read of each open array (false) or map (true).
        let mut open: Vec<(u64, bool)> = Vec::new();
        let mut deepest = 0;
        loop {
            if let Some(&(_, true)) = open.last() {
                self.bytes()?; // the key
            }
            let tag = self.byte()?;
            if let Some(top) = open.last_mut() {
                top.0 -= 1;
            }
            match tag {
                120 | 121 | 126 | 127 => {}
                125 => {
                    // A signed varint.
                    while self.byte()? & 0x80 != 0 {}
                }
                124 => self.skip(4)?,
                122 | 123 => self.skip(8)?,
                116 | 119 => self.bytes()?,
                117 | 118 => {
                    let n = self.varuint()?;
                    if n > 0 {
                        open.push((n, tag == 118));
                        deepest = deepest.max(open.len());
                        if deepest > MAX_NESTING {
                            return Some(deepest);
                        }
                    }
                }
                _ => return None,
            }
            while let Some(&(0, _)) = open.last() {
                open.pop();
            }
            if open.is_empty() {
                return Some(deepest);
            }
        }
    }
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS RNG failing is not recoverable for a server that must mint secrets.
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A fresh room id: 128 random bits, URL- and shell-safe.
pub fn new_room_id() -> String {
    random_b64(16)
}

/// A fresh capability token: 128 random bits, prefixed `w_` or `v_` so a person can tell them
/// apart. The prefix is cosmetic: the relay compares whole tokens and never trusts it.
pub fn new_token(role: Role) -> String {
    let prefix = match role {
        Role::Writer => "w_",
        Role::Viewer => "v_",
    };
    format!("{prefix}{}", random_b64(16))
}

/// Room ids and tokens are short URL-safe strings; anything else is refused before any lookup.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A join code: one pasteable string holding the relay address, the room and the token.
///
/// Its form is a WebSocket URL `ws://HOST:PORT/r/ROOM/TOKEN` (`wss://` with TLS), free of the
/// characters shells treat specially (`?`, `&`, `#`), so it survives copy and paste into any shell.
/// [`JoinCode::parse`] also takes `http(s)://` and the query form `.../r/ROOM?token=TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinCode {
    /// `ws` or `wss`.
    pub scheme: String,
    /// `host:port` (or `host`), as given.
    pub authority: String,
    /// Path prefix before `/r/` when the relay sits behind a proxy path; usually empty.
    pub prefix: String,
    pub room: String,
    pub token: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a pairedit join code ({0}); expected ws://HOST:PORT/r/ROOM/TOKEN")]
pub struct BadCode(pub String);

impl JoinCode {
    pub fn parse(code: &str) -> Result<JoinCode, BadCode> {
        let code = code.trim();
        let url = url::Url::parse(code).map_err(|e| BadCode(e.to_string()))?;
        let scheme = match url.scheme() {
            "ws" | "http" => "ws",
            "wss" | "https" => "wss",
            other => return Err(BadCode(format!("unknown scheme {other:?}"))),
        };
        let host = url.host_str().ok_or_else(|| BadCode("no host".into()))?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        let segments: Vec<&str> = url
            .path()
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .collect();
        let r = segments
            .iter()
            .rposition(|s| *s == "r")
            .ok_or_else(|| BadCode("no /r/ROOM in the path".into()))?;
        let prefix = segments[..r]
            .iter()
            .map(|s| format!("/{s}"))
            .collect::<String>();
        let rest = &segments[r + 1..];
        let query_token = url
            .query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned());
        let (room, token) = match (rest, query_token) {
            ([room, token], None) => (room.to_string(), token.to_string()),
            ([room], Some(token)) => (room.to_string(), token),
            _ => return Err(BadCode("no /r/ROOM/TOKEN path in it".into())),
        };
        if !is_valid_id(&room) || !is_valid_id(&token) {
            return Err(BadCode(
                "room or token has characters outside A-Z a-z 0-9 - _".into(),
            ));
        }
        Ok(JoinCode {
            scheme: scheme.to_string(),
            authority,
            prefix,
            room,
            token,
        })
    }

    /// The URL a client connects to (the same one a stock `WebsocketProvider` builds).
    pub fn ws_url(&self) -> String {
        format!(
            "{}://{}{}/r/{}?token={}&v={}",
            self.scheme, self.authority, self.prefix, self.room, self.token, PROTOCOL_VERSION
        )
    }

    /// The relay's HTTP base URL, e.g. `http://127.0.0.1:7070`.
    pub fn http_base(&self) -> String {
        let scheme = if self.scheme == "wss" {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{}", self.authority, self.prefix)
    }
}

impl fmt::Display for JoinCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}/r/{}/{}",
            self.scheme, self.authority, self.prefix, self.room, self.token
        )
    }
}

#[cfg(test)]
mod nesting_tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// One item in root text "content" holding one `Any`: arrays nested `depth` deep.
    fn nested_update(depth: usize) -> Vec<u8> {
        let mut u = Vec::new();
        for n in [1, 1, 77, 0] {
            varint(&mut u, n);
        }
        u.push(8); // ContentAny, no origins: the parent follows
        varint(&mut u, 1);
        varint(&mut u, 7);
        u.extend_from_slice(b"content");
        varint(&mut u, 1);
        for _ in 0..depth {
            u.extend_from_slice(&[117, 1]);
        }
        u.push(126);
        varint(&mut u, 0);
        u
    }

    #[test]
    fn values_nested_too_deep_are_refused_before_yrs_reads_them() {
        // 20,000 deep aborted the relay (a stack overflow in yrs, not a panic to catch).
        let deep = decode_update(&nested_update(20_000)).unwrap_err();
        assert!(deep.to_string().contains("nested"), "{deep}");
        assert!(decode_update(&nested_update(MAX_NESTING + 1)).is_err());
        // As deep as allowed: yrs reads it.
        assert!(decode_update(&nested_update(MAX_NESTING)).is_ok());
        assert_eq!(nesting(&nested_update(3)), Some(3));
    }

    #[test]
    fn nesting_reads_what_yrs_writes() {
        use yrs::{Any, Array as _, Doc, Map as _, ReadTxn as _, StateVector, Text as _, Transact};
        let doc = Doc::new();
        let leaf = Any::from(vec![
            Any::Null,
            Any::Undefined,
            Any::Bool(true),
            Any::from(1.5),
            Any::from(-7i64),
            Any::from(3i32),
            Any::from("s"),
            Any::Buffer(vec![1u8, 2, 3].into()),
        ]);
        let map =
            |k: &str, v: Any| Any::from(std::collections::HashMap::from([(k.to_string(), v)]));
        // map > array > map > array(leaf): 5 deep.
        let value = map(
            "a",
            Any::from(vec![map("b", Any::from(vec![leaf.clone()]))]),
        );
        // The roots first: asking for one inside a transaction waits for it to end.
        let (text, list, m) = (
            doc.get_or_insert_text("content"),
            doc.get_or_insert_array("list"),
            doc.get_or_insert_map("m"),
        );
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "text");
            list.push_back(&mut txn, value);
            list.push_back(&mut txn, leaf);
            m.insert(&mut txn, "k", Any::from(vec![Any::from(1.0)]));
        }
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(nesting(&update), Some(5));
        assert!(decode_update(&update).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_round_trips_and_accepts_query_form() {
        let c = JoinCode::parse("ws://127.0.0.1:7070/r/abc_D-1/w_tok").unwrap();
        assert_eq!(c.room, "abc_D-1");
        assert_eq!(c.token, "w_tok");
        assert_eq!(c.to_string(), "ws://127.0.0.1:7070/r/abc_D-1/w_tok");
        assert_eq!(JoinCode::parse(&c.to_string()).unwrap(), c);
        let q = JoinCode::parse("http://example.com/proxy/r/room1?token=v_x").unwrap();
        assert_eq!(q.scheme, "ws");
        assert_eq!(q.prefix, "/proxy");
        assert_eq!(q.to_string(), "ws://example.com/proxy/r/room1/v_x");
        assert_eq!(q.ws_url(), "ws://example.com/proxy/r/room1?token=v_x&v=1");
        assert!(JoinCode::parse("ftp://x/r/a/b").is_err());
        assert!(JoinCode::parse("ws://x/r/a").is_err());
        assert!(JoinCode::parse("ws://x/r/a/b%20c").is_err());
        assert!(JoinCode::parse("not a code").is_err());
    }

    #[test]
    fn tokens_are_long_distinct_and_safe() {
        let a = new_token(Role::Writer);
        let b = new_token(Role::Writer);
        assert_ne!(a, b);
        assert!(a.starts_with("w_") && a.len() == 24 && is_valid_id(&a));
        assert!(new_token(Role::Viewer).starts_with("v_"));
        assert!(constant_time_eq(&a, &a.clone()));
        assert!(!constant_time_eq(&a, &b));
        assert!(!constant_time_eq(&a, "w_"));
    }

    #[test]
    fn decoder_rejects_garbage_and_accepts_messages() {
        assert!(decode_messages(&[]).is_err());
        assert!(decode_messages(&[0, 7, 1, 2]).is_err());
        assert!(decode_messages(&[0, 2, 200]).is_err());
        let frame = sync_update(vec![0, 0]);
        assert_eq!(frame, vec![0, 2, 2, 0, 0]);
        let msgs = decode_messages(&frame).unwrap();
        assert_eq!(msgs, vec![Message::Sync(SyncMessage::Update(vec![0, 0]))]);
        assert_eq!(permission_denied("no"), vec![2, 0, 2, b'n', b'o']);
    }
}
