//! JSON-RPC: the method table and the host's handlers; messages and error
//! codes are `openwork_proto::rpc`, re-exported here.
//!
//! The method table is our own, not jsonrpsee's `RpcModule` (which the
//! project's first issue suggested). What a connection must get exactly
//! right is all outside `RpcModule`: batches (empty, invalid, all
//! notifications), notifications that are run but never answered, telling a
//! parse error from an invalid request, ids echoed byte for byte, and the
//! per-connection context (principal, lifecycle, subscriptions) that
//! `session` keeps. `RpcModule`'s `raw_json_request`/`call` handle none of
//! these, so it would have been a map of typed handlers behind an adapter.
//! `MethodTable` is that map, plus what it alone knows: each method's access
//! (checked before its params are decoded), its scheduling, and the
//! documentation `schema/openrpc.json` is generated from.

pub use openwork_proto::rpc::{error, json, message};

pub mod methods;
pub(crate) mod notifications;
pub(crate) mod table;

pub use error::{ErrorCode, RpcError};
pub use message::{Id, Incoming, Message};
pub use table::{Access, MethodTable, Scheduling};
