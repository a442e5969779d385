//! openwork-host: a host for remote agent work.
//!
//! One machine runs tasks for many clients (phones, laptops, scripts) that
//! speak JSON-RPC 2.0 to it over stdio, a local socket or TLS. See
//! `docs/protocol.md` in the repository for the wire contract and trust model.

pub mod alloc;
pub mod auth;
pub mod bridge;
pub mod client;
pub mod clock;
pub mod config;
pub mod conformance;
pub mod datadir;
pub mod devices;
pub mod discovery;
pub mod execution;
pub mod health;
pub mod host;
pub mod identity;
pub mod ids;
pub mod metrics;
pub mod pairing;
pub mod permissions;
pub mod protocol;
pub mod rpc;
pub mod runtime;
pub mod schema;
pub mod session;
pub mod store;
pub mod tasks;
pub mod transport;

pub use host::{Host, HostCore, HostError};
