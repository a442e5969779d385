//! Talking to an OpenCode server: an HTTP client with its password, the
//! operations its OpenAPI document lists, and calls to them by name with
//! JSON-RPC params mapped onto path, query and body.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value};

use crate::rpc::{ErrorCode, RpcError};

/// One operation of OpenCode's API.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    pub method: reqwest::Method,
    /// `/session/{sessionID}/message`.
    pub path: String,
    pub path_params: Vec<String>,
    pub query_params: Vec<String>,
    /// Whether the operation takes a JSON body.
    pub has_body: bool,
    /// The names a JSON object body has, for mapping params.
    pub body_fields: Vec<String>,
    pub required: Vec<String>,
    /// The operation streams (server-sent events) and cannot be bridged as one call.
    pub streams: bool,
    pub summary: String,
}

/// Every operation, by `operationId`.
#[derive(Debug, Default, Clone)]
pub struct Operations {
    pub by_id: BTreeMap<String, Operation>,
}

impl Operations {
    /// Reads an OpenAPI 3 document.
    pub fn from_openapi(doc: &Value) -> Operations {
        let mut by_id = BTreeMap::new();
        let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
            return Operations { by_id };
        };
        for (path, methods) in paths {
            let Some(methods) = methods.as_object() else {
                continue;
            };
            for (method, op) in methods {
                let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                    continue;
                };
                let Ok(method) = method.to_ascii_uppercase().parse::<reqwest::Method>() else {
                    continue;
                };
                let mut path_params = Vec::new();
                let mut query_params = Vec::new();
                let mut required = Vec::new();
                for p in op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(name) = p.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    match p.get("in").and_then(Value::as_str) {
                        Some("path") => {
                            path_params.push(name.to_owned());
                            required.push(name.to_owned());
                        }
                        Some("query") => {
                            query_params.push(name.to_owned());
                            if p.get("required") == Some(&Value::Bool(true)) {
                                required.push(name.to_owned());
                            }
                        }
                        _ => {}
                    }
                }
                let body_schema = op.pointer("/requestBody/content/application~1json/schema");
                let body_fields = body_schema
                    .and_then(|s| resolve(doc, s).get("properties"))
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                let streams = op
                    .get("responses")
                    .and_then(Value::as_object)
                    .is_some_and(|r| {
                        r.values().any(|resp| {
                            resp.get("content")
                                .and_then(Value::as_object)
                                .is_some_and(|c| {
                                    c.contains_key("text/event-stream")
                                        && !c.contains_key("application/json")
                                })
                        })
                    });
                by_id.insert(
                    id.to_owned(),
                    Operation {
                        id: id.to_owned(),
                        method,
                        path: path.clone(),
                        path_params,
                        query_params,
                        has_body: body_schema.is_some(),
                        body_fields,
                        required,
                        streams,
                        summary: op
                            .get("summary")
                            .or_else(|| op.get("description"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    },
                );
            }
        }
        Operations { by_id }
    }

    /// The operations that can be called as one request and answer.
    pub fn callable(&self) -> impl Iterator<Item = &Operation> {
        self.by_id.values().filter(|op| !op.streams)
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer))
            .unwrap_or(schema),
        None => schema,
    }
}

/// An HTTP client for one OpenCode server.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

/// Why a call to OpenCode failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("OpenCode cannot be reached: {0}")]
    Unreachable(String),
    #[error("OpenCode answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        body: Value,
    },
    #[error("{0}")]
    Params(String),
}

impl ApiError {
    /// The HTTP status OpenCode answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<ApiError> for RpcError {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match e {
            ApiError::Unreachable(_) => RpcError::new(ErrorCode::RUNTIME_UNAVAILABLE, message)
                .with_action("see the OpenCode check in `openwork-host status`; the host restarts OpenCode by itself"),
            ApiError::Params(_) => RpcError::invalid_params(message),
            ApiError::Status { status, body, .. } => {
                let code = match status {
                    400 | 422 => ErrorCode::INVALID_PARAMS,
                    // OpenCode refused the host itself: it cannot be used until that is fixed.
                    401 | 403 => ErrorCode::RUNTIME_UNAVAILABLE,
                    404 => ErrorCode::NOT_FOUND,
                    409 => ErrorCode::CONFLICT,
                    429 => ErrorCode::RATE_LIMITED,
                    _ => ErrorCode::INTERNAL_ERROR,
                };
                RpcError::new(code, message)
                    .with_data("httpStatus", status.into())
                    .with_data("opencode", body)
            }
        }
    }
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client for `base` (`http://127.0.0.1:PORT`) with basic-auth credentials.
    pub fn new(base: &str, auth: Option<(String, String)>) -> Result<ApiClient, ApiError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        Ok(ApiClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// A request with the server's credentials, for streams.
    pub fn stream_request(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
            .header("accept", "text/event-stream")
    }

    /// Sends a request and decodes the JSON answer (`null` for an empty one).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let mut request = self
            .request(method, path)
            .query(query)
            .header("accept", "application/json")
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else if content_type.contains("json") {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        } else if let Ok(text) = std::str::from_utf8(&bytes) {
            Value::String(text.to_owned())
        } else {
            serde_json::json!({"contentType": content_type, "base64": base64::engine::general_purpose::STANDARD.encode(&bytes)})
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .pointer("/data/message")
            .or_else(|| value.get("message"))
            .or_else(|| value.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| match &value {
                Value::String(s) if !s.is_empty() => s.clone(),
                _ => status.canonical_reason().unwrap_or("error").to_owned(),
            });
        Err(ApiError::Status {
            status: status.as_u16(),
            message,
            body: value,
        })
    }

    /// GET with a short timeout.
    pub async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value, ApiError> {
        self.send(
            reqwest::Method::GET,
            path,
            query,
            None,
            Duration::from_secs(30),
        )
        .await
    }

    /// POST a JSON body.
    pub async fn post(
        &self,
        path: &str,
        query: &[(String, String)],
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.send(
            reqwest::Method::POST,
            path,
            query,
            Some(body),
            Duration::from_secs(60),
        )
        .await
    }

    /// Calls an operation with named params (see `Operation::map_params`).
    pub async fn call(
        &self,
        op: &Operation,
        params: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let mapped = op.map_params(params)?;
        self.send(
            op.method.clone(),
            &mapped.path,
            &mapped.query,
            mapped.body.as_ref(),
            Duration::from_secs(120),
        )
        .await
    }
}

/// An operation's call, once its params are placed.
#[derive(Debug, PartialEq)]
pub struct Mapped {
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Operation {
    /// Every param name the operation takes.
    fn accepted(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .path_params
            .iter()
            .chain(&self.query_params)
            .chain(if self.has_body {
                &self.body_fields[..]
            } else {
                &[]
            })
            .map(String::as_str)
            .collect();
        if self.has_body {
            names.push("body");
        }
        names
    }

    /// Places named params: path and query params by their names, the body's
    /// fields into the JSON body (or the whole body as `body`). A name the
    /// operation does not take is an error, never sent along silently. An
    /// array given for a query param repeats the key.
    pub fn map_params(&self, params: Map<String, Value>) -> Result<Mapped, ApiError> {
        let mut params = params;
        // A body whose fields the document does not list takes any field.
        let open_body = self.has_body && self.body_fields.is_empty();
        let accepted = self.accepted();
        let unknown: Vec<String> = params
            .keys()
            .filter(|k| !accepted.contains(&k.as_str()) && !open_body)
            .map(|k| format!("`{k}`"))
            .collect();
        if !unknown.is_empty() {
            let takes = if accepted.is_empty() {
                "it takes no params".to_owned()
            } else {
                format!(
                    "it takes {}",
                    accepted
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(ApiError::Params(format!(
                "`opencode.{}` has no param {}; {takes}",
                self.id,
                unknown.join(", ")
            )));
        }
        for name in &self.required {
            if !params.contains_key(name) {
                return Err(ApiError::Params(format!(
                    "`opencode.{}` needs `{name}`",
                    self.id
                )));
            }
        }
        let mut path = self.path.clone();
        for name in &self.path_params {
            let text = match params.remove(name).unwrap_or(Value::Null) {
                Value::String(s) => s,
                other => other.to_string(),
            };
            path = path.replace(
                &format!("{{{name}}}"),
                &percent_encoding::utf8_percent_encode(&text, PATH_SEGMENT).to_string(),
            );
        }
        let mut query = Vec::new();
        for name in &self.query_params {
            match params.remove(name) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        query.push((name.clone(), query_text(item)));
                    }
                }
                Some(value) => query.push((name.clone(), query_text(value))),
            }
        }
        let body = if !self.has_body {
            None
        } else {
            match params.remove("body") {
                Some(body) if params.is_empty() => Some(body),
                Some(_) => {
                    return Err(ApiError::Params(format!(
                        "`opencode.{}`: give either `body` or the body's fields ({}), not both",
                        self.id,
                        params
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                None => Some(Value::Object(params)),
            }
        };
        Ok(Mapped { path, query, body })
    }
}

/// A query value as text: strings as they are, other values as JSON.
fn query_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// All but RFC 3986's unreserved characters, encoded in a path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_are_read_with_their_params_and_streams_are_marked() {
        let doc = json!({
            "paths": {
                "/session/{sessionID}/message": {
                    "get": {"operationId": "session.messages", "parameters": [
                        {"name": "sessionID", "in": "path", "required": true},
                        {"name": "limit", "in": "query"}],
                        "responses": {"200": {"content": {"application/json": {}}}}},
                    "post": {"operationId": "session.prompt", "parameters": [{"name": "sessionID", "in": "path"}],
                        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Prompt"}}}},
                        "responses": {"200": {"content": {"application/json": {}}}}}
                },
                "/event": {"get": {"operationId": "event.subscribe", "responses": {"200": {"content": {"text/event-stream": {}}}}}}
            },
            "components": {"schemas": {"Prompt": {"type": "object", "properties": {"parts": {}, "agent": {}}}}}
        });
        let ops = Operations::from_openapi(&doc);
        let messages = &ops.by_id["session.messages"];
        assert_eq!(messages.path_params, ["sessionID"]);
        assert_eq!(messages.query_params, ["limit"]);
        assert!(!messages.has_body);
        let prompt = &ops.by_id["session.prompt"];
        assert!(prompt.has_body);
        assert_eq!(prompt.body_fields, ["agent", "parts"]);
        assert!(ops.by_id["event.subscribe"].streams);
        assert_eq!(ops.callable().count(), 2);
    }

    fn op(query: &[&str], body_fields: Option<&[&str]>) -> Operation {
        Operation {
            id: "thing.do".into(),
            method: reqwest::Method::POST,
            path: "/thing/{thingID}".into(),
            path_params: vec!["thingID".into()],
            query_params: query.iter().map(|s| s.to_string()).collect(),
            has_body: body_fields.is_some(),
            body_fields: body_fields
                .unwrap_or_default()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            required: vec!["thingID".into()],
            streams: false,
            summary: String::new(),
        }
    }

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn params_go_to_path_query_and_body_by_name() {
        let op = op(&["directory", "tag"], Some(&["title", "parts"]));
        let mapped = op
            .map_params(params(json!({
                "thingID": "a b", "directory": "/w", "tag": ["x", "y"], "title": "t"
            })))
            .unwrap();
        assert_eq!(mapped.path, "/thing/a%20b");
        assert_eq!(
            mapped.query,
            [
                ("directory".to_owned(), "/w".to_owned()),
                ("tag".to_owned(), "x".to_owned()),
                ("tag".to_owned(), "y".to_owned())
            ],
            "an array repeats the key"
        );
        assert_eq!(mapped.body, Some(json!({"title": "t"})));
        let whole = op
            .map_params(params(json!({"thingID": "a", "body": {"title": "t"}})))
            .unwrap();
        assert_eq!(whole.body, Some(json!({"title": "t"})));
    }

    #[test]
    fn unknown_or_conflicting_params_are_refused_with_the_names_accepted() {
        let op = op(&["directory"], Some(&["title"]));
        let err = op
            .map_params(params(json!({"thingID": "a", "titel": "t"})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`titel`") && err.contains("`title`"), "{err}");
        assert!(
            err.contains("`directory`") && err.contains("`body`"),
            "{err}"
        );
        let err = op
            .map_params(params(json!({"thingID": "a", "title": "t", "body": {}})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both") && err.contains("`title`"), "{err}");
        let get = super::tests::op(&["limit"], None);
        let err = get
            .map_params(params(json!({"thingID": "a", "body": {"x": 1}})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no param `body`"), "{err}");
        let err = get.map_params(params(json!({}))).unwrap_err().to_string();
        assert!(err.contains("needs `thingID`"), "{err}");
    }

    #[test]
    fn a_body_without_listed_fields_takes_the_remaining_params() {
        let op = op(&[], Some(&[]));
        let mapped = op
            .map_params(params(json!({"thingID": "a", "anything": 1})))
            .unwrap();
        assert_eq!(mapped.body, Some(json!({"anything": 1})));
    }
}
