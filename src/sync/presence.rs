//! The awareness (presence) schema: what each member publishes about itself.
//!
//! It follows the convention of Yjs editor bindings (y-codemirror, y-monaco), so browser peers show
//! our members and we show theirs: `{ "user": { "name", "color" }, "cursor": { "anchor", "head" } }`
//! where `anchor`/`head` are Yjs relative positions (yrs `StickyIndex`, serialised as Yjs does).
//! pairedit adds `"role"`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::Role;

/// Distinct colours for members, readable on dark and light themes.
pub const PALETTE: [&str; 8] = [
    "#e06c75", "#61afef", "#98c379", "#e5c07b", "#c678dd", "#56b6c2", "#d19a66", "#be5046",
];

/// A stable colour for a member: the same client id always gets the same colour.
pub fn color_for(client_id: u64) -> &'static str {
    // Fibonacci hashing spreads consecutive and random ids alike.
    let h = client_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61;
    PALETTE[h as usize % PALETTE.len()]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub color: String,
}

/// A selection as two Yjs relative positions (JSON, as a browser binding stores them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CursorState {
    pub anchor: Value,
    pub head: Value,
}

/// The latest chat line a member sent; `seq` grows by one per message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatState {
    pub seq: u64,
    pub text: String,
}

/// The state this replica publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalState {
    pub user: User,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorState>,
    /// Unix time (ms) of this member's last edit or cursor move, for "idle" in the members panel.
    #[serde(default)]
    pub active: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatState>,
}

/// A member as seen through awareness: whatever a peer published, read leniently (stock Yjs
/// clients publish any JSON, or only part of ours).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub client_id: u64,
    pub name: String,
    pub color: String,
    /// `None` for peers that do not say (stock Yjs clients).
    pub role: Option<Role>,
    pub cursor: Option<CursorState>,
    /// Unix time (ms) of the member's last activity, when it says.
    pub active: Option<u64>,
    pub chat: Option<ChatState>,
}

impl Member {
    pub fn from_json(client_id: u64, json: &str) -> Option<Member> {
        Self::from_value(client_id, serde_json::from_str(json).ok()?)
    }

    pub fn from_value(client_id: u64, v: Value) -> Option<Member> {
        if !v.is_object() {
            return None;
        }
        let user = v.get("user");
        let name = user
            .and_then(|u| u.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("peer-{}", client_id % 10_000));
        let color = user
            .and_then(|u| u.get("color"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| color_for(client_id).to_string());
        let role = v.get("role").and_then(Value::as_str).and_then(Role::parse);
        let cursor = v
            .get("cursor")
            .and_then(|c| serde_json::from_value::<CursorState>(c.clone()).ok());
        let active = v.get("active").and_then(Value::as_u64);
        let chat = v
            .get("chat")
            .and_then(|c| serde_json::from_value::<ChatState>(c.clone()).ok());
        Some(Member {
            client_id,
            name,
            color,
            role,
            cursor,
            active,
            chat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_leniently() {
        let m = Member::from_json(
            7,
            r##"{"user":{"name":"ana","color":"#fff"},"role":"viewer"}"##,
        )
        .unwrap();
        assert_eq!((m.name.as_str(), m.color.as_str()), ("ana", "#fff"));
        assert_eq!(m.role, Some(Role::Viewer));
        let stock = Member::from_json(42, r#"{"cursor":null}"#).unwrap();
        assert_eq!(stock.name, "peer-42");
        assert_eq!(stock.color, color_for(42));
        assert!(Member::from_json(1, "null").is_none());
        assert!(Member::from_json(1, "{not json").is_none());
    }

    #[test]
    fn colors_are_stable_and_varied() {
        assert_eq!(color_for(123), color_for(123));
        let distinct: std::collections::HashSet<_> = (0..64u64).map(color_for).collect();
        assert!(distinct.len() >= 6, "{distinct:?}");
    }
}
