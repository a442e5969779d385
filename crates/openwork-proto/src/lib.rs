//! openwork-proto: the wire contract of openwork-host, what a host and its
//! clients both need and nothing else (no storage, no server, no runtimes).
//!
//! - [`protocol`]: every params, result and notification type, the source of
//!   `schema/` and of the generated clients; [`scope::Scope`] names the
//!   rights a paired device holds.
//! - [`rpc`]: JSON-RPC 2.0 messages, error codes, and the hand-written JSON
//!   readers and writers the hot paths use.
//! - [`transport`]: the frame codec (LSP headers, newline-delimited, or
//!   sniffed), one reader and writer for every byte stream.
//! - [`pairing::crypto`]: the SPAKE2 exchange bound to the TLS session.
//! - [`tls`]: TLS 1.3 with our ALPN id, certificate pinning by fingerprint,
//!   the exporter pairing binds to.
//! - [`discovery`]: browsing the LAN for hosts (mDNS / DNS-SD).
//!
//! The host (`openwork-host`) re-exports these modules under their old paths
//! (`openwork_host::protocol`, `openwork_host::rpc::message`, …).
//! `docs/protocol.md` in the repository is the contract in prose.

pub mod discovery;
pub mod protocol;
pub mod scope;
pub mod tls;
pub mod transport;

/// JSON-RPC 2.0: messages, error codes and the JSON helpers.
pub mod rpc {
    pub mod error;
    pub mod json;
    pub mod message;

    pub use error::{ErrorCode, RpcError};
    pub use message::{Id, Incoming, Message};
}

/// Pairing, as both ends compute it.
pub mod pairing {
    pub mod crypto;
}
