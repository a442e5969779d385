//! openwork-host: a host for remote agent work.
//!
//! One machine runs tasks for many clients (phones, laptops, scripts) that
//! speak JSON-RPC 2.0 to it over stdio, the owner's unix socket, TLS, or a
//! WebSocket on the TLS port. `docs/protocol.md` in the repository is the wire
//! contract and trust model; `README.md` is the operator's guide.
//!
//! The workspace has three crates:
//! - `openwork-proto`: the wire contract both ends share (protocol types,
//!   JSON-RPC messages and errors, the frame codec, pairing crypto, TLS
//!   pinning, the LAN browser);
//! - `openwork-client`: the client library, on `openwork-proto` alone, so a
//!   client links no SQLite and no server code;
//! - this crate, the daemon and its command line.
//!
//! # What this library exports, and for whom
//!
//! - **An embedder** runs a host in its own process: [`Host::open`] with a
//!   [`datadir::DataDir`] (and a [`config::Config`], or the data dir's
//!   `config.toml`), then [`Host::serve`] (every listener, in order), `serve_unix`,
//!   `serve_tls`, or `serve_connection` on any byte stream; [`Host`], [`HostCore`] and [`HostError`] are
//!   re-exported at the root.
//! - **A client** needs [`protocol`] and [`client`] (re-exports of
//!   `openwork_proto::protocol` and of `openwork_client`), and [`auth::Scope`];
//!   a client outside this repository should depend on those two crates, not
//!   on this one.
//! - **The binary, the tests, the benchmarks and the fuzz harness** drive the
//!   host through its real parts: [`transport`] (framing and the listeners),
//!   [`session`] (one connection), [`rpc`] (the method table), [`conformance`]
//!   (the fixture runner), [`schema`] (the generated `schema/`), and the
//!   domain modules below.
//!
//! Modules re-exported from `openwork-proto` keep their old paths here:
//! [`protocol`], [`rpc::message`], [`rpc::error`], [`rpc::json`],
//! [`transport::codec`], [`pairing::crypto`], the shared half of
//! [`transport::tls`] and the browser in [`discovery`].
//!
//! # Layers
//!
//! transport (bytes to frames) → [`session`] (one connection: who calls, its
//! lifecycle, its subscriptions) → [`rpc`] (method table, handlers) → the
//! domain: [`tasks`] and `runtime` (what runs; `execution` is what a
//! running task is), [`permissions`] (what may run), [`pairing`] and
//! `devices` (who may call), `store` (SQLite), [`health`] and `metrics` (what
//! the owner sees). `host` opens all of it and serves the listeners;
//! [`discovery`] advertises it on the LAN.
//!
//! Items are `pub(crate)` unless a client, an embedder, the binary, the
//! tests, the benchmarks or the fuzz harness name them (or a public item's
//! signature does): every `pub` left in the modules above is named from
//! outside the crate. `clock`, `devices`, `execution`, `host` (but for
//! [`Host`], [`HostCore`] and [`HostError`]), `identity`, `ids`, `metrics`,
//! `runtime` (its settings are [`config::Enabled`] and
//! [`config::OpencodeConfig`]) and `store` are private to the crate, and the
//! `unreachable_pub` lint keeps what is in them `pub(crate)`.

#![warn(unreachable_pub)]

pub mod alloc;
pub mod auth;
pub mod bridge;
pub(crate) mod clock;
pub mod config;
pub mod conformance;
pub mod datadir;
pub(crate) mod devices;
pub mod discovery;
pub(crate) mod execution;
pub mod health;
pub(crate) mod host;
pub(crate) mod identity;
pub(crate) mod ids;
pub(crate) mod metrics;
pub mod pairing;
pub mod permissions;
pub mod rpc;
pub(crate) mod runtime;
pub mod schema;
pub mod session;
pub(crate) mod store;
pub mod tasks;
pub mod transport;

pub use openwork_client as client;
pub use openwork_proto::protocol;

pub use host::{Host, HostCore, HostError, Mdns};
