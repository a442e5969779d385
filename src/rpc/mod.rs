//! JSON-RPC: messages, error codes, the method table and the host's handlers.

pub mod error;
pub mod json;
pub mod message;
pub mod methods;
pub mod notifications;
pub mod table;

pub use error::{ErrorCode, RpcError};
pub use message::{Id, Incoming, Message};
pub use table::{Access, MethodTable, Scheduling};
