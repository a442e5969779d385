//! JSON-RPC 2.0 messages: classifying an incoming frame and encoding replies.
//!
//! Ids are kept as the raw JSON text the client sent, so that every id (a
//! string, any number such as `-1`, `1.5` or `1e3`, or `null`) is echoed exactly
//! as sent. Parsing never trusts the frame: anything that is not a valid request
//! becomes a `Message::Invalid` with the error the spec prescribes.

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::error::RpcError;

/// A request id exactly as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Id(Box<str>);

impl Id {
    /// The raw JSON text of the id.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// Builds an id from raw JSON text; `None` unless it is a string, number or null.
    pub fn from_json(raw: &str) -> Option<Id> {
        let raw = raw.trim();
        match raw.as_bytes().first()? {
            b'"' | b'-' | b'0'..=b'9' => Some(Id(raw.into())),
            b'n' if raw == "null" => Some(Id(raw.into())),
            _ => None,
        }
    }

    /// A numeric id, for clients that number their requests.
    pub fn number(n: u64) -> Id {
        Id(n.to_string().into())
    }
}

/// One element of an incoming frame.
#[derive(Debug)]
pub enum Message {
    /// A call that expects a response.
    Request(Request),
    /// A call without an id: executed, never answered.
    Notification(Notification),
    /// A response from the peer; the host sends no requests, so these are dropped.
    Response,
    /// Not a valid request: answered with this error and this id (or null).
    Invalid { id: Option<Id>, error: RpcError },
}

#[derive(Debug)]
pub struct Request {
    pub id: Id,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

#[derive(Debug)]
pub struct Notification {
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

/// An incoming frame, classified.
#[derive(Debug)]
pub enum Incoming {
    Single(Message),
    /// A batch array; an empty one is answered with a single Invalid Request.
    Batch(Vec<Message>),
    /// Not JSON at all: answered with a parse error, id null.
    ParseError(RpcError),
}

/// Classifies one frame's bytes.
pub fn parse_frame(bytes: &[u8]) -> Incoming {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return Incoming::ParseError(RpcError::parse_error(format_args!(
                "the message is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            )));
        }
    };
    // Validate the syntax of the whole frame first, so that a syntax error
    // anywhere is a parse error and never an Invalid Request.
    if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
        return Incoming::ParseError(RpcError::parse_error(format_args!("invalid JSON: {e}")));
    }
    if text.trim_start().starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => Incoming::Batch(
                items
                    .into_iter()
                    .map(|raw| parse_message(raw.get()))
                    .collect(),
            ),
            Err(e) => {
                Incoming::ParseError(RpcError::parse_error(format_args!("invalid JSON: {e}")))
            }
        }
    } else {
        Incoming::Single(parse_message(text))
    }
}

/// The members of a message object, each kept raw so that we judge them ourselves.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// Deserializes a member that is present, even when its value is `null`
/// (serde's `Option` would turn `"id": null` into "absent").
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn parse_message(raw: &str) -> Message {
    let fields: Fields<'_> = match serde_json::from_str(raw) {
        Ok(fields) => fields,
        Err(e) => {
            let detail = if raw.trim_start().starts_with('{') {
                format!("{e}")
            } else {
                "a message must be a JSON object".to_owned()
            };
            return Message::Invalid {
                id: None,
                error: RpcError::invalid_request(detail),
            };
        }
    };
    let id = match fields.id {
        None => None,
        Some(raw_id) => match Id::from_json(raw_id.get()) {
            Some(id) => Some(id),
            None => {
                return Message::Invalid {
                    id: None,
                    error: RpcError::invalid_request("`id` must be a string, a number or null"),
                };
            }
        },
    };
    let invalid = |id: Option<Id>, detail: &str| Message::Invalid {
        id,
        error: RpcError::invalid_request(detail),
    };
    let version_ok = fields
        .jsonrpc
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
        .is_some_and(|v| v == "2.0");
    if !version_ok {
        return invalid(id, "`jsonrpc` must be exactly \"2.0\"");
    }
    let Some(method) = fields.method else {
        if id.is_some() && (fields.result.is_some() != fields.error.is_some()) {
            return Message::Response;
        }
        return invalid(id, "`method` is missing");
    };
    let Ok(method) = serde_json::from_str::<String>(method.get()) else {
        return invalid(id, "`method` must be a string");
    };
    let params = match fields.params {
        None => None,
        Some(p) if matches!(p.get().as_bytes().first(), Some(b'{' | b'[')) => Some(p.to_owned()),
        Some(_) => return invalid(id, "`params` must be an object or an array"),
    };
    match id {
        Some(id) => Message::Request(Request { id, method, params }),
        None => Message::Notification(Notification { method, params }),
    }
}

/// The requests a frame of responses answers: each one's id, and whether it
/// succeeded (`result`) rather than failed (`error`). Whatever is not a
/// response (a notification, anything invalid) is passed over. Used where
/// frames are relayed rather than served (`openwork-host stdio`'s bridge).
pub fn answered(bytes: &[u8]) -> Vec<(Id, bool)> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Vec::new();
    };
    let items: Vec<&RawValue> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).unwrap_or_default()
    } else {
        serde_json::from_str(text).map_or_else(|_| Vec::new(), |one| vec![one])
    };
    items
        .into_iter()
        .filter_map(|raw| {
            let fields: Fields<'_> = serde_json::from_str(raw.get()).ok()?;
            if fields.method.is_some() {
                return None;
            }
            let id = Id::from_json(fields.id?.get())?;
            match (fields.result.is_some(), fields.error.is_some()) {
                (true, false) => Some((id, true)),
                (false, true) => Some((id, false)),
                _ => None,
            }
        })
        .collect()
}

/// Encodes a success response.
pub fn encode_result(id: &Id, result: &RawValue) -> Bytes {
    let (id, result) = (id.as_json(), result.get());
    let mut out = String::with_capacity(40 + id.len() + result.len());
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id);
    out.push_str(r#","result":"#);
    out.push_str(result);
    out.push('}');
    Bytes::from(out)
}

/// Encodes an error response; `None` becomes `"id":null`.
pub fn encode_error(id: Option<&Id>, error: &RpcError) -> Bytes {
    let id = id.map_or("null", Id::as_json);
    // Serializing a struct of strings and JSON values cannot fail.
    let error = serde_json::to_string(error).unwrap_or_else(|_| {
        r#"{"code":-32603,"message":"Internal error: unencodable error"}"#.to_owned()
    });
    let mut out = String::with_capacity(40 + id.len() + error.len());
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id);
    out.push_str(r#","error":"#);
    out.push_str(&error);
    out.push('}');
    Bytes::from(out)
}

/// Encodes a host-to-client notification.
pub fn encode_notification<P: Serialize + ?Sized>(method: &str, params: &P) -> Bytes {
    #[derive(Serialize)]
    struct Out<'a, P: ?Sized> {
        jsonrpc: &'static str,
        method: &'a str,
        params: &'a P,
    }
    let out = Out {
        jsonrpc: "2.0",
        method,
        params,
    };
    match serde_json::to_vec(&out) {
        Ok(v) => Bytes::from(v),
        Err(e) => {
            tracing::error!(method, error = %e, "could not encode a notification");
            Bytes::new()
        }
    }
}

/// Joins encoded responses into one batch response array.
pub fn encode_batch(parts: &[Bytes]) -> Bytes {
    let len = parts.iter().map(Bytes::len).sum::<usize>() + parts.len() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(part);
    }
    out.push(b']');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Message {
        match parse_frame(text.as_bytes()) {
            Incoming::Single(m) => m,
            other => panic!("expected a single message, got {other:?}"),
        }
    }

    #[test]
    fn ids_are_echoed_exactly_as_sent() {
        for raw in [
            r#""abc""#,
            "-1",
            "1.5",
            "1e3",
            "null",
            "18446744073709551616",
            r#""\u00e9""#,
        ] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{raw},"method":"m"}}"#);
            let Message::Request(req) = single(&text) else {
                panic!("not a request: {text}")
            };
            assert_eq!(req.id.as_json(), raw);
        }
    }

    #[test]
    fn null_id_is_a_request_and_missing_id_a_notification() {
        assert!(matches!(
            single(r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#),
            Message::Request(_)
        ));
        assert!(matches!(
            single(r#"{"jsonrpc":"2.0","method":"m"}"#),
            Message::Notification(_)
        ));
    }

    #[test]
    fn answered_lists_the_responses_of_a_frame_with_their_outcome() {
        assert_eq!(
            answered(br#"{"jsonrpc":"2.0","id":1e3,"result":null}"#),
            vec![(Id::from_json("1e3").unwrap(), true)]
        );
        assert_eq!(
            answered(
                br#"[{"jsonrpc":"2.0","id":"a","error":{"code":-32602,"message":"x"}},
                    {"jsonrpc":"2.0","method":"log.chunk","params":{}},
                    {"jsonrpc":"2.0","id":2,"result":{}}]"#
            ),
            vec![
                (Id::from_json("\"a\"").unwrap(), false),
                (Id::number(2), true)
            ]
        );
        assert!(answered(br#"{"jsonrpc":"2.0","method":"task.updated"}"#).is_empty());
        assert!(answered(b"\xff not json").is_empty());
    }

    #[test]
    fn invalid_requests_are_classified() {
        let cases = [
            (r#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#, None),
            (r#"{"jsonrpc":"1.0","id":7,"method":"m"}"#, Some("7")),
            (r#"{"id":7,"method":"m"}"#, Some("7")),
            (r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#, None),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"m","params":5}"#,
                Some("3"),
            ),
            (r#"{"foo":"boo"}"#, None),
            ("1", None),
            (r#""text""#, None),
        ];
        for (text, want_id) in cases {
            match single(text) {
                Message::Invalid { id, error } => {
                    assert_eq!(
                        error.code,
                        super::super::error::ErrorCode::INVALID_REQUEST,
                        "{text}"
                    );
                    assert_eq!(id.as_ref().map(Id::as_json), want_id, "{text}");
                }
                other => panic!("{text} gave {other:?}"),
            }
        }
    }

    #[test]
    fn syntax_errors_and_bad_utf8_are_parse_errors() {
        for bytes in [
            &b"{\"jsonrpc\": \"2.0\", \"method\": \"foobar\", \"params\": \"bar\", \"baz]"[..],
            b"[",
            b"\xff\xfe",
            b"{\"a\":1} x",
        ] {
            assert!(
                matches!(parse_frame(bytes), Incoming::ParseError(_)),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn batches_keep_each_element() {
        let Incoming::Batch(items) = parse_frame(b"[1,2,3]") else {
            panic!()
        };
        assert_eq!(items.len(), 3);
        assert!(items.iter().all(|m| matches!(m, Message::Invalid { .. })));
        let Incoming::Batch(items) = parse_frame(b"[]") else {
            panic!()
        };
        assert!(items.is_empty());
    }

    #[test]
    fn responses_from_the_peer_are_recognised() {
        assert!(matches!(
            single(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Message::Response
        ));
        assert!(matches!(
            single(r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#),
            Message::Invalid { .. }
        ));
    }

    #[test]
    fn encoded_messages_are_valid_json() {
        let id = Id::from_json("1e3").unwrap();
        let ok = encode_result(&id, &RawValue::from_string("{\"a\":1}".into()).unwrap());
        assert_eq!(&ok[..], br#"{"jsonrpc":"2.0","id":1e3,"result":{"a":1}}"#);
        let err = encode_error(None, &RpcError::method_not_found("x"));
        let v: serde_json::Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(v["id"], serde_json::Value::Null);
        assert_eq!(v["error"]["code"], -32601);
        let batch = encode_batch(&[ok, err]);
        let v: serde_json::Value = serde_json::from_slice(&batch).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
    }
}
