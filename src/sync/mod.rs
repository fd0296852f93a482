//! The pure sync core: no sockets, no terminal, no runtime.
//!
//! [`SharedDoc`] holds the yrs document and a `ropey` mirror of its text; [`Batcher`] turns the
//! local updates of one flush window into a single message; [`presence`] is the awareness schema.

mod batch;
mod doc;
mod idmap;
mod pairs;
mod place;
pub mod presence;
mod typing;

pub use batch::Batcher;
pub use doc::{DocError, Edit, LOCAL_ORIGIN, REMOTE_ORIGIN, SharedDoc, next_version};
