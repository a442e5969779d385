//! `schema/`: the OpenRPC document and the JSON Schema of every wire type,
//! generated from the method table the host serves and the notification list.
//!
//! The output is deterministic (sorted keys, sorted methods, fixed layout), so
//! a test can regenerate it in memory and fail on any drift from the files
//! checked in. Extensions (documented in `schema/README.md`):
//! - `x-access` on a method: `open`, `owner`, or the scope it needs;
//! - `x-params` on a method or notification: the whole params object's schema
//!   (`params` lists its members as OpenRPC content descriptors);
//! - `x-notification: true`: a method clients send as a notification;
//! - `x-notifications` (root): the host-to-client notifications;
//! - `x-method-prefixes` (root): methods served by prefix (`opencode.*`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::transform::RecursiveTransform;
use schemars::{Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::protocol::PROTOCOL_VERSION;
use crate::rpc::methods::{CallContext, table};
use crate::rpc::notifications;
use crate::rpc::table::{Access, MethodDoc, Scheduling};
use crate::rpc::{ErrorCode, MethodTable};

/// The OpenRPC version the document follows.
pub const OPENRPC_VERSION: &str = "1.3.2";
const SCHEMAS: &str = "#/components/schemas/";
const DRAFT07: &str = "http://json-schema.org/draft-07/schema#";

/// A generated file: its path under `schema/` and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    pub path: PathBuf,
    pub text: String,
}

/// Why `schema/` could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SchemaError + '_ {
    move |source| SchemaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The OpenRPC document of the host's own method table.
pub fn openrpc() -> Value {
    document(&table())
}

/// Every file of `schema/`: `openrpc.json` and `types/<Type>.json`.
pub fn render() -> Vec<SchemaFile> {
    let doc = openrpc();
    let mut files = vec![SchemaFile {
        path: PathBuf::from("openrpc.json"),
        text: pretty(&doc),
    }];
    if let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (name, schema) in schemas {
            let mut standalone = schema.clone();
            point_refs_at_files(&mut standalone);
            let mut root = Map::new();
            root.insert("$schema".into(), DRAFT07.into());
            root.insert("$id".into(), format!("{name}.json").into());
            if let Value::Object(members) = standalone {
                root.extend(members);
            }
            files.push(SchemaFile {
                path: Path::new("types").join(format!("{name}.json")),
                text: pretty(&Value::Object(root)),
            });
        }
    }
    files
}

/// Writes `schema/` into `dir`, removing type files that are no longer generated.
pub fn write(dir: &Path) -> Result<(), SchemaError> {
    let files = render();
    let types = dir.join("types");
    std::fs::create_dir_all(&types).map_err(io(&types))?;
    for stale in stale_files(dir, &files)? {
        std::fs::remove_file(&stale).map_err(io(&stale))?;
    }
    for file in &files {
        let path = dir.join(&file.path);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(file.text.as_str()) {
            std::fs::write(&path, &file.text).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// What differs between `dir` and a fresh generation, one line per file;
/// empty when `dir` is up to date.
pub fn check(dir: &Path) -> Result<Vec<String>, SchemaError> {
    let files = render();
    let mut problems = Vec::new();
    for file in &files {
        let path = dir.join(&file.path);
        match std::fs::read_to_string(&path) {
            Ok(text) if text == file.text => {}
            Ok(text) => problems.push(format!(
                "{} differs from the generated version{}",
                path.display(),
                first_difference(&text, &file.text)
            )),
            Err(_) => problems.push(format!("{} is missing", path.display())),
        }
    }
    for stale in stale_files(dir, &files)? {
        problems.push(format!("{} is no longer generated", stale.display()));
    }
    Ok(problems)
}

fn stale_files(dir: &Path, files: &[SchemaFile]) -> Result<Vec<PathBuf>, SchemaError> {
    let types = dir.join("types");
    let entries = match std::fs::read_dir(&types) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&types)(e)),
    };
    let mut stale = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(&types))?.path();
        let relative = path.strip_prefix(dir).unwrap_or(&path);
        if !files.iter().any(|f| f.path == relative) {
            stale.push(path);
        }
    }
    stale.sort();
    Ok(stale)
}

fn first_difference(old: &str, new: &str) -> String {
    old.lines()
        .zip(new.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| {
            format!(
                " at line {}:\n    checked in: {}\n    generated:  {}",
                i + 1,
                a.trim(),
                b.trim()
            )
        })
        .unwrap_or_else(|| " in length".to_owned())
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Builds the OpenRPC document of a method table.
pub fn document(table: &MethodTable<CallContext>) -> Value {
    let mut generator = generator();
    let mut methods = Vec::new();
    let mut used_errors = BTreeMap::new();
    for name in table.names() {
        let Some(method) = table.get(name) else {
            continue;
        };
        let errors = method_errors(method.access, method.scheduling, &method.doc);
        let mut entry = describe(&mut generator, name, &method.doc, &errors);
        entry.insert("x-access".into(), access(method.access).into());
        methods.push(Value::Object(entry));
        used_errors.extend(errors.into_iter().map(|c| (c.0, c)));
    }
    let prefixes: Vec<Value> = table
        .prefixes()
        .map(|(prefix, method)| {
            let errors = method_errors(method.access, Scheduling::Concurrent, &method.doc);
            let mut entry = describe(&mut generator, prefix, &method.doc, &errors);
            entry.remove("name");
            entry.remove("params");
            entry.remove("paramStructure");
            entry.insert("prefix".into(), prefix.into());
            entry.insert("x-access".into(), access(method.access).into());
            used_errors.extend(errors.into_iter().map(|c| (c.0, c)));
            Value::Object(entry)
        })
        .collect();
    let notes: Vec<Value> = notifications::all()
        .into_iter()
        .map(|n| {
            let params = (n.params)(&mut generator);
            let mut entry = Map::new();
            entry.insert("name".into(), n.method.into());
            entry.insert("summary".into(), n.summary.into());
            entry.insert(
                "description".into(),
                format!("Sent to {}.", n.audience).into(),
            );
            entry.insert("paramStructure".into(), "by-name".into());
            entry.insert(
                "params".into(),
                content_descriptors(&mut generator, &params).into(),
            );
            entry.insert("x-params".into(), params.to_value());
            Value::Object(entry)
        })
        .collect();
    let definitions = generator.take_definitions(true);
    let errors: Map<String, Value> = ErrorCode::ALL
        .iter()
        .filter(|(code, _, _)| used_errors.contains_key(&code.0))
        .map(|(code, name, meaning)| {
            (
                (*name).to_owned(),
                json!({"code": code.0, "message": meaning}),
            )
        })
        .collect();
    json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "openwork-host",
            "version": PROTOCOL_VERSION,
            "description": "JSON-RPC 2.0 over LSP framing (TLS, unix socket, stdio). Params are objects with named members; unknown members are refused. Extensions: `x-access` (open, owner, or the scope a method needs), `x-params` (the params object's schema), `x-notification` (sent by clients as a notification), `x-notifications` (host-to-client notifications), `x-method-prefixes` (methods served by prefix). See schema/README.md.",
        },
        "methods": methods,
        "components": {
            "schemas": definitions,
            "errors": errors,
        },
        "x-notifications": notes,
        "x-method-prefixes": prefixes,
    })
}

fn generator() -> SchemaGenerator {
    SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            // Before the draft-07 transforms, so that `$ref` siblings are still handled.
            s.transforms
                .insert(0, Box::new(RecursiveTransform(omit_null_when_optional)));
        })
        .into_generator()
}

/// Optional members are omitted rather than sent as `null` (the protocol's
/// rule, see `protocol`), so their schemas do not offer `null`.
fn omit_null_when_optional(schema: &mut Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let required: Vec<String> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let Some(Value::Object(properties)) = object.get_mut("properties") else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        if !required.contains(name) {
            drop_null(property);
        }
    }
}

fn drop_null(property: &mut Value) {
    let Some(object) = property.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(any_of)) = object.get("anyOf") {
        let rest: Vec<Value> = any_of
            .iter()
            .filter(|s| s.get("type").and_then(Value::as_str) != Some("null"))
            .cloned()
            .collect();
        if rest.len() == 1 && rest.len() < any_of.len() {
            object.remove("anyOf");
            if let Value::Object(only) = &rest[0] {
                for (k, v) in only {
                    object.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
}

/// The codes a method may answer with: its own, and those of its access level.
fn method_errors(access: Access, scheduling: Scheduling, doc: &MethodDoc) -> Vec<ErrorCode> {
    let mut codes = doc.errors.clone();
    codes.extend([ErrorCode::INVALID_PARAMS, ErrorCode::INTERNAL_ERROR]);
    if access != Access::Open {
        codes.extend([ErrorCode::UNAUTHORIZED, ErrorCode::FORBIDDEN]);
    }
    if scheduling == Scheduling::Concurrent && !doc.notification {
        codes.push(ErrorCode::REQUEST_CANCELLED);
    }
    codes.sort_by_key(|c| std::cmp::Reverse(c.0));
    codes.dedup();
    codes
}

fn access(access: Access) -> String {
    match access {
        Access::Open => "open".into(),
        Access::Owner => "owner".into(),
        Access::Scope(scope) => scope.as_str().into(),
    }
}

fn error_ref(code: ErrorCode) -> Value {
    let name = ErrorCode::ALL
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or("InternalError", |(_, name, _)| name);
    json!({"$ref": format!("#/components/errors/{name}")})
}

fn describe(
    generator: &mut SchemaGenerator,
    name: &str,
    doc: &MethodDoc,
    errors: &[ErrorCode],
) -> Map<String, Value> {
    let params = (doc.params)(generator);
    let result = (doc.result)(generator);
    let mut entry = Map::new();
    entry.insert("name".into(), name.into());
    if let Some(summary) = doc.summary {
        entry.insert("summary".into(), summary.into());
    }
    entry.insert("paramStructure".into(), "by-name".into());
    entry.insert(
        "params".into(),
        content_descriptors(generator, &params).into(),
    );
    if doc.notification {
        entry.insert("x-notification".into(), true.into());
    } else {
        entry.insert(
            "result".into(),
            json!({"name": "result", "schema": result.to_value()}),
        );
    }
    entry.insert(
        "errors".into(),
        errors
            .iter()
            .map(|&c| error_ref(c))
            .collect::<Vec<_>>()
            .into(),
    );
    entry.insert("x-params".into(), params.to_value());
    entry
}

/// The members of a params object as OpenRPC content descriptors.
fn content_descriptors(generator: &mut SchemaGenerator, params: &Schema) -> Vec<Value> {
    let resolved = match params.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches(SCHEMAS);
            let Some(definition) = generator.definitions().get(name).cloned() else {
                return Vec::new();
            };
            // Definitions are transformed when taken; apply the same here.
            let mut schema = Schema::try_from(definition).unwrap_or_default();
            for transform in generator.transforms_mut() {
                transform.transform(&mut schema);
            }
            schema.to_value()
        }
        None => params.as_value().clone(),
    };
    let required: Vec<&str> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = resolved.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, schema)| {
            let mut descriptor = Map::new();
            descriptor.insert("name".into(), name.clone().into());
            if let Some(description) = schema.get("description") {
                descriptor.insert("description".into(), description.clone());
            }
            descriptor.insert("required".into(), required.contains(&name.as_str()).into());
            descriptor.insert("schema".into(), schema.clone());
            Value::Object(descriptor)
        })
        .collect()
}

/// Rewrites `#/components/schemas/X` references to `X.json`, for the standalone files.
fn point_refs_at_files(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(reference) if key == "$ref" => {
                        if let Some(name) = reference.strip_prefix(SCHEMAS) {
                            *reference = format!("{name}.json");
                        }
                    }
                    _ => point_refs_at_files(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(point_refs_at_files),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(doc: &'a Value, list: &str, name: &str) -> &'a Value {
        doc[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in {list}"))
    }

    #[test]
    fn every_served_method_is_documented_with_params_result_and_errors() {
        let table = table();
        let doc = openrpc();
        let documented: Vec<&str> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(documented, table.names());
        let run = find(&doc, "methods", "task.run");
        assert_eq!(run["x-access"], "tasks.run");
        assert_eq!(
            run["x-params"]["$ref"],
            "#/components/schemas/TaskRunParams"
        );
        assert_eq!(
            run["result"]["schema"]["$ref"],
            "#/components/schemas/TaskRunResult"
        );
        let errors: Vec<&str> = run["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["$ref"].as_str().unwrap())
            .collect();
        for name in [
            "Conflict",
            "RuntimeUnavailable",
            "Unauthorized",
            "Forbidden",
        ] {
            assert!(
                errors.contains(&format!("#/components/errors/{name}").as_str()),
                "{errors:?}"
            );
        }
        let argv = run["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "argv")
            .unwrap();
        assert_eq!(argv["required"], false);
        assert_eq!(
            argv["schema"]["type"], "array",
            "no null for omitted members"
        );
    }

    #[test]
    fn client_notifications_have_no_result_and_open_methods_need_no_auth() {
        let doc = openrpc();
        let cancel = find(&doc, "methods", "$/cancelRequest");
        assert_eq!(cancel["x-notification"], true);
        assert!(cancel.get("result").is_none());
        let ping = find(&doc, "methods", "$/ping");
        assert_eq!(ping["x-access"], "open");
        assert!(
            !ping["errors"]
                .to_string()
                .contains("#/components/errors/Unauthorized")
        );
        assert_eq!(find(&doc, "methods", "devices.list")["x-access"], "owner");
    }

    #[test]
    fn notifications_and_prefixes_are_extensions_with_resolvable_types() {
        let doc = openrpc();
        let chunk = find(&doc, "x-notifications", "log.chunk");
        assert_eq!(chunk["x-params"]["$ref"], "#/components/schemas/LogChunk");
        let seq = chunk["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "seq")
            .unwrap();
        assert_eq!(seq["required"], true);
        let prefix = &doc["x-method-prefixes"][0];
        assert_eq!(prefix["prefix"], "opencode.");
        assert_eq!(prefix["x-access"], "opencode");
        // Every reference points at a schema that exists.
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
        let errors = doc["components"]["errors"].as_object().unwrap();
        for piece in text.split("\"#/components/errors/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(errors.contains_key(name), "dangling reference to {name}");
        }
    }

    #[test]
    fn rendering_twice_gives_the_same_bytes() {
        assert_eq!(render(), render());
        let files = render();
        let status = files
            .iter()
            .find(|f| f.path == Path::new("types/TaskStatus.json"))
            .unwrap();
        assert!(status.text.contains("\"$id\": \"TaskStatus.json\""));
        let list = files
            .iter()
            .find(|f| f.path == Path::new("types/TaskListResult.json"))
            .unwrap();
        assert!(
            list.text.contains("\"$ref\": \"TaskRecord.json\""),
            "{}",
            list.text
        );
    }
}
