//! pairedit: a terminal collaborative code editor.
//!
//! - [`sync`]: the pure core (yrs document, rope mirror, batching, presence schema).
//! - [`protocol`]: the y-websocket wire, limits, roles, join codes.
//! - [`relay`]: the server, `relay::run(listener, config, shutdown)`.
//! - [`client`]: a networked session over a join code.
#![forbid(unsafe_code)]
// Library code never unwraps (data from the network or disk must not panic); tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
pub mod cli;
pub mod client;
pub mod commands;
pub mod fsutil;
pub mod net;
pub mod protocol;
pub mod relay;
pub mod sync;
pub mod trace;
pub mod tui;
