//! JSON-RPC error codes and the error object every handler returns.
//!
//! All codes the host can answer with live here, so that no handler invents a
//! number of its own; services map their error enums onto these in `rpc::errors`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A JSON-RPC error code: the spec's, LSP's cancellation code, and the host's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    /// The frame is not valid JSON (or not UTF-8).
    pub const PARSE_ERROR: Self = Self(-32700);
    /// The message is JSON but not a valid request object, or is too large.
    pub const INVALID_REQUEST: Self = Self(-32600);
    /// No method of that name.
    pub const METHOD_NOT_FOUND: Self = Self(-32601);
    /// The params do not fit the method.
    pub const INVALID_PARAMS: Self = Self(-32602);
    /// A fault inside the host.
    pub const INTERNAL_ERROR: Self = Self(-32603);
    /// The connection has not authenticated (pair, then `initialize` with `auth`).
    pub const UNAUTHORIZED: Self = Self(-32001);
    /// The caller lacks the scope the method needs.
    pub const FORBIDDEN: Self = Self(-32002);
    /// The named task, request or device does not exist.
    pub const NOT_FOUND: Self = Self(-32003);
    /// The thing exists but is in the wrong state for this call.
    pub const CONFLICT: Self = Self(-32004);
    /// Too many attempts or the resource is busy; try later.
    pub const RATE_LIMITED: Self = Self(-32005);
    /// The runtime the call needs is not available on this host.
    pub const RUNTIME_UNAVAILABLE: Self = Self(-32006);
    /// LSP's code for a request ended by `$/cancelRequest`.
    pub const REQUEST_CANCELLED: Self = Self(-32800);

    /// Every code with a name and its meaning, for `schema/openrpc.json`.
    pub const ALL: [(ErrorCode, &'static str, &'static str); 12] = [
        (
            Self::PARSE_ERROR,
            "ParseError",
            "the frame is not valid JSON (or not UTF-8)",
        ),
        (
            Self::INVALID_REQUEST,
            "InvalidRequest",
            "not a valid request object, too large, or sent after `shutdown`",
        ),
        (
            Self::METHOD_NOT_FOUND,
            "MethodNotFound",
            "no method of that name",
        ),
        (
            Self::INVALID_PARAMS,
            "InvalidParams",
            "the params do not fit the method; the message names the member",
        ),
        (
            Self::INTERNAL_ERROR,
            "InternalError",
            "a fault inside the host; see its log",
        ),
        (
            Self::UNAUTHORIZED,
            "Unauthorized",
            "the connection has not authenticated, or a credential or pairing code is wrong",
        ),
        (
            Self::FORBIDDEN,
            "Forbidden",
            "the caller lacks the scope the method needs (`data.scope`)",
        ),
        (
            Self::NOT_FOUND,
            "NotFound",
            "the named task, request, rule or device does not exist",
        ),
        (
            Self::CONFLICT,
            "Conflict",
            "the thing exists but is in the wrong state for this call",
        ),
        (
            Self::RATE_LIMITED,
            "RateLimited",
            "too many attempts or the resource is busy; try later",
        ),
        (
            Self::RUNTIME_UNAVAILABLE,
            "RuntimeUnavailable",
            "the runtime the call needs is not available on this host",
        ),
        (
            Self::REQUEST_CANCELLED,
            "RequestCancelled",
            "the request was ended by `$/cancelRequest`",
        ),
    ];
}

/// A JSON-RPC error object: code, a message a person understands, optional data.
///
/// `data.action`, when present, says what the user can do about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {})", code.0)]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and message and no data.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Adds `data.action`: what the user can do next.
    pub fn with_action(self, action: impl Into<String>) -> Self {
        self.with_data("action", Value::String(action.into()))
    }

    /// Adds one member to `data`, which becomes an object if it was not one.
    pub fn with_data(mut self, key: &str, value: Value) -> Self {
        let mut map = match self.data.take() {
            Some(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        map.insert(key.to_owned(), value);
        self.data = Some(Value::Object(map));
        self
    }

    /// The `data.action` member, if any.
    pub fn action(&self) -> Option<&str> {
        self.data.as_ref()?.get("action")?.as_str()
    }

    pub fn parse_error(detail: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::PARSE_ERROR, format!("Parse error: {detail}")).with_action(
            "send one JSON-RPC 2.0 message (or a batch array) per frame, as UTF-8 JSON",
        )
    }

    /// Not a valid request object; the action says what one looks like
    /// (callers with a more precise one replace it).
    pub fn invalid_request(detail: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::INVALID_REQUEST,
            format!("Invalid Request: {detail}"),
        )
        .with_action(
            r#"send a JSON-RPC 2.0 request object: {"jsonrpc": "2.0", "id": 1, "method": "…", "params": {…}} (without "id" for a notification)"#,
        )
    }

    /// A frame over the size limit: skipped unread; the connection goes on.
    pub fn frame_too_large(size: Option<u64>, limit: usize) -> Self {
        let shown = size.map_or_else(String::new, |s| format!("{s} bytes, "));
        Self::invalid_request(format_args!(
            "the message is {shown}over the host's limit of {limit} bytes"
        ))
        .with_data("limit", limit.into())
        .with_action(
            "send smaller messages, or raise limits.max_frame_bytes in the host's config.toml",
        )
    }

    /// A frame header that cannot be read: the connection closes after this.
    pub fn malformed_header(detail: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::PARSE_ERROR,
            format!("Parse error: malformed frame header: {detail}"),
        )
        .with_action(
            "frame each message as `Content-Length: N\\r\\n\\r\\n` followed by N bytes of JSON (on stdio, or one JSON message per line), then connect again",
        )
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            ErrorCode::METHOD_NOT_FOUND,
            format!("Method not found: `{method}`"),
        )
        .with_action("check the method name against schema/openrpc.json")
    }

    /// The params do not fit; the action points at where they are described
    /// (callers with a more precise one replace it).
    pub fn invalid_params(detail: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::INVALID_PARAMS,
            format!("Invalid params: {detail}"),
        )
        .with_action("fix the params as the message says; every method's params are described in schema/openrpc.json")
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::INTERNAL_ERROR,
            format!("Internal error: {detail}"),
        )
        .with_action("see the host's log (stderr of `openwork-host serve`) for details")
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::CONFLICT, detail)
    }

    pub fn cancelled() -> Self {
        Self::new(
            ErrorCode::REQUEST_CANCELLED,
            "Request cancelled by $/cancelRequest",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_params_errors_say_what_to_do_and_a_precise_action_wins() {
        for error in [
            RpcError::invalid_request("`method` is missing"),
            RpcError::invalid_params("`taskId`: missing field"),
            RpcError::parse_error("invalid JSON"),
            RpcError::malformed_header("no Content-Length"),
            RpcError::frame_too_large(Some(10), 4),
        ] {
            assert!(error.action().is_some_and(|a| !a.is_empty()), "{error}");
        }
        let precise = RpcError::invalid_params("`cwd`: no such directory")
            .with_action("give an existing directory as `cwd`");
        assert_eq!(
            precise.action(),
            Some("give an existing directory as `cwd`")
        );
        assert_eq!(
            RpcError::frame_too_large(None, 4096).data.unwrap()["limit"],
            4096
        );
        assert_eq!(
            RpcError::frame_too_large(None, 4096).message,
            "Invalid Request: the message is over the host's limit of 4096 bytes"
        );
        assert_eq!(
            RpcError::frame_too_large(Some(5000), 4096).message,
            "Invalid Request: the message is 5000 bytes, over the host's limit of 4096 bytes"
        );
    }
}
