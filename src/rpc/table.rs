//! The method table: every method's name, who may call it, and its typed handler.
//!
//! Handlers are plain async functions over typed params and results; the table
//! decodes params (with the path of any wrong member in the error) and encodes
//! results, so that no handler touches raw JSON.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::error::{ErrorCode, RpcError};
use crate::auth::Scope;

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

type Handler<C> = Arc<
    dyn Fn(C, Option<Box<RawValue>>) -> BoxFuture<Result<Box<RawValue>, RpcError>> + Send + Sync,
>;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any connection, before authentication too (`initialize`, `pairing.*`, `$/ping`).
    Open,
    /// An authenticated connection holding this scope.
    Scope(Scope),
    /// The host's owner: the local principal, or (when the config allows it)
    /// a device holding `admin`.
    Owner,
}

/// How the connection schedules a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// Runs concurrently with other calls on the connection.
    Concurrent,
    /// Lifecycle calls (`initialize`, `shutdown`, `exit`, `$/cancelRequest`)
    /// and `task.subscribe`/`task.unsubscribe`: nothing after them is read
    /// until they finish (their reply and what follows it included), so
    /// their effect is ordered.
    InOrder,
}

/// Produces a type's JSON Schema (a `$ref` into the generator's definitions
/// for named types). A plain function pointer: the host pays nothing for it
/// until `schema/` is generated.
pub(crate) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What `schema/openrpc.json` says about a method, kept beside its handler so
/// that the document describes exactly the table the host serves.
#[derive(Clone)]
pub struct MethodDoc {
    /// One line saying what the method does.
    pub summary: Option<&'static str>,
    /// The host-specific codes the handler itself may answer with; the codes
    /// every method of its access level can get are added by the schema.
    pub errors: Vec<ErrorCode>,
    /// Clients send it as a JSON-RPC notification (`exit`, `$/cancelRequest`).
    pub notification: bool,
    /// The params object's schema.
    pub params: SchemaFn,
    /// The result's schema.
    pub result: SchemaFn,
}

impl MethodDoc {
    fn new(params: SchemaFn, result: SchemaFn) -> Self {
        Self {
            summary: None,
            errors: Vec::new(),
            notification: false,
            params,
            result,
        }
    }

    /// Sets the one-line summary.
    pub(crate) fn summary(&mut self, summary: &'static str) -> &mut Self {
        self.summary = Some(summary);
        self
    }

    /// Declares the codes the handler may answer with (besides the common ones).
    pub(crate) fn errors(&mut self, codes: &[ErrorCode]) -> &mut Self {
        self.errors.extend_from_slice(codes);
        self
    }

    /// Marks the method as one clients send as a notification.
    pub(crate) fn notification(&mut self) -> &mut Self {
        self.notification = true;
        self
    }
}

/// One entry of the table.
pub(crate) struct Method<C> {
    pub access: Access,
    pub scheduling: Scheduling,
    pub doc: MethodDoc,
    handler: Handler<C>,
}

impl<C> Method<C> {
    /// Runs the handler on raw params.
    pub(crate) fn call(
        &self,
        ctx: C,
        params: Option<Box<RawValue>>,
    ) -> BoxFuture<Result<Box<RawValue>, RpcError>> {
        (self.handler)(ctx, params)
    }
}

type PrefixHandler<C> = Arc<
    dyn Fn(C, String, Option<Box<RawValue>>) -> BoxFuture<Result<Box<RawValue>, RpcError>>
        + Send
        + Sync,
>;

/// Methods under a prefix, served by one handler that gets the full name
/// (`opencode.session.list`): for APIs discovered at run time.
pub struct PrefixMethod<C> {
    pub access: Access,
    /// The params and result schemas hold for every method under the prefix.
    pub doc: MethodDoc,
    handler: PrefixHandler<C>,
}

/// A method found by name.
pub(crate) enum Found<'a, C> {
    Exact(&'a Method<C>),
    Prefix(&'a PrefixMethod<C>),
}

impl<C> Found<'_, C> {
    pub(crate) fn access(&self) -> Access {
        match self {
            Found::Exact(m) => m.access,
            Found::Prefix(p) => p.access,
        }
    }

    pub(crate) fn scheduling(&self) -> Scheduling {
        match self {
            Found::Exact(m) => m.scheduling,
            Found::Prefix(_) => Scheduling::Concurrent,
        }
    }

    /// Runs the handler.
    pub(crate) fn call(
        &self,
        ctx: C,
        name: &str,
        params: Option<Box<RawValue>>,
    ) -> BoxFuture<Result<Box<RawValue>, RpcError>> {
        match self {
            Found::Exact(m) => m.call(ctx, params),
            Found::Prefix(p) => (p.handler)(ctx, name.to_owned(), params),
        }
    }
}

/// The table of methods, built once at start.
pub struct MethodTable<C> {
    methods: HashMap<&'static str, Method<C>>,
    prefixes: Vec<(&'static str, PrefixMethod<C>)>,
}

impl<C: Send + 'static> Default for MethodTable<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Send + 'static> MethodTable<C> {
    pub(crate) fn new() -> Self {
        Self {
            methods: HashMap::new(),
            prefixes: Vec::new(),
        }
    }

    /// Serves every method starting with `prefix` with one handler, whose
    /// params and results are the JSON values `P` and `R` describe.
    pub(crate) fn register_prefix<P: JsonSchema, R: JsonSchema, F>(
        &mut self,
        prefix: &'static str,
        access: Access,
        handler: F,
    ) -> &mut MethodDoc
    where
        F: Fn(C, String, Option<Box<RawValue>>) -> BoxFuture<Result<Box<RawValue>, RpcError>>
            + Send
            + Sync
            + 'static,
    {
        self.prefixes.push((
            prefix,
            PrefixMethod {
                access,
                doc: MethodDoc::new(schema_of::<P>, schema_of::<R>),
                handler: Arc::new(handler),
            },
        ));
        let last = self.prefixes.len() - 1;
        &mut self.prefixes[last].1.doc
    }

    /// Finds a method by name: an exact entry, else a prefix that covers it.
    pub(crate) fn find(&self, name: &str) -> Option<Found<'_, C>> {
        if let Some(m) = self.methods.get(name) {
            return Some(Found::Exact(m));
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix) && name.len() > prefix.len())
            .map(|(_, p)| Found::Prefix(p))
    }

    /// Registers a method that runs concurrently with others.
    pub(crate) fn register<P, R, F, Fut>(
        &mut self,
        name: &'static str,
        access: Access,
        handler: F,
    ) -> &mut MethodDoc
    where
        P: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + 'static,
        F: Fn(C, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        self.insert(name, access, Scheduling::Concurrent, handler)
    }

    /// Registers a method processed in order with the frames around it.
    pub(crate) fn register_in_order<P, R, F, Fut>(
        &mut self,
        name: &'static str,
        access: Access,
        handler: F,
    ) -> &mut MethodDoc
    where
        P: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + 'static,
        F: Fn(C, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        self.insert(name, access, Scheduling::InOrder, handler)
    }

    fn insert<P, R, F, Fut>(
        &mut self,
        name: &'static str,
        access: Access,
        scheduling: Scheduling,
        handler: F,
    ) -> &mut MethodDoc
    where
        P: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + 'static,
        F: Fn(C, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler<C> = Arc::new(move |ctx: C, raw: Option<Box<RawValue>>| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let params: P = decode_params(raw.as_deref()).map_err(|e| {
                    e.with_action(format!(
                        "fix the params as the message says; `{name}` takes the params schema/openrpc.json describes for it"
                    ))
                })?;
                let result = handler(ctx, params).await?;
                serde_json::value::to_raw_value(&result).map_err(RpcError::internal)
            })
        });
        let method = Method {
            access,
            scheduling,
            doc: MethodDoc::new(schema_of::<P>, schema_of::<R>),
            handler: erased,
        };
        match self.methods.entry(name) {
            std::collections::hash_map::Entry::Occupied(_) => {
                panic!("method {name} registered twice")
            }
            std::collections::hash_map::Entry::Vacant(slot) => &mut slot.insert(method).doc,
        }
    }

    /// Looks a method up by name.
    pub(crate) fn get(&self, name: &str) -> Option<&Method<C>> {
        self.methods.get(name)
    }

    /// Every method name, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.methods.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Every prefix entry, in registration order.
    pub fn prefixes(&self) -> impl Iterator<Item = (&'static str, &PrefixMethod<C>)> {
        self.prefixes.iter().map(|(prefix, p)| (*prefix, p))
    }
}

/// Decodes params into a method's type; an absent `params` counts as `{}`.
pub(crate) fn decode_params<P: DeserializeOwned>(raw: Option<&RawValue>) -> Result<P, RpcError> {
    let text = match raw {
        None => "{}",
        Some(raw) if raw.get().starts_with('[') => {
            return Err(RpcError::invalid_params(
                "params must be an object with named members, not an array",
            ));
        }
        Some(raw) => raw.get(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let detail = strip_position(&e.into_inner().to_string());
        if path == "." {
            RpcError::invalid_params(detail)
        } else {
            RpcError::invalid_params(format_args!("`{path}`: {detail}"))
        }
    })
}

/// serde_json appends " at line L column C", which means nothing to a caller
/// who sent a one-line message.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)] // only decoding is under test
    struct P {
        task_id: String,
        #[serde(default)]
        limit: Option<u32>,
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn wrong_types_name_the_member() {
        let err = decode_params::<P>(Some(&raw(r#"{"taskId":"t","limit":"x"}"#))).unwrap_err();
        assert_eq!(err.code, super::super::error::ErrorCode::INVALID_PARAMS);
        assert!(err.message.contains("`limit`"), "{}", err.message);
        assert!(!err.message.contains("line 1"), "{}", err.message);
    }

    #[test]
    fn missing_and_unknown_members_are_invalid_params() {
        let err = decode_params::<P>(None).unwrap_err();
        assert!(err.message.contains("taskId"), "{}", err.message);
        let err = decode_params::<P>(Some(&raw(r#"{"taskId":"t","limmit":1}"#))).unwrap_err();
        assert!(err.message.contains("limmit"), "{}", err.message);
        let err = decode_params::<P>(Some(&raw(r#"["t"]"#))).unwrap_err();
        assert!(err.message.contains("array"), "{}", err.message);
    }
}
