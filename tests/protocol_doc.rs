//! docs/protocol.md against the schema: every method, notification, method
//! prefix and error code the host serves is described there, the document's
//! relative links lead to files in the repository, and nothing in the
//! repository's documentation points outside it.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> Value {
    serde_json::from_str(&read(&root().join("schema/openrpc.json"))).expect("openrpc.json")
}

fn doc() -> String {
    read(&root().join("docs/protocol.md"))
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|m| m[key].as_str().expect("a name").to_owned())
        .collect()
}

#[test]
fn every_method_and_notification_of_the_schema_is_in_the_protocol_document() {
    let (schema, doc) = (schema(), doc());
    let mut missing = Vec::new();
    for name in names(&schema["methods"], "name")
        .into_iter()
        .chain(names(&schema["x-notifications"], "name"))
        .chain(names(&schema["x-method-prefixes"], "prefix"))
    {
        if !doc.contains(&format!("`{name}")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/protocol.md does not describe {missing:?}"
    );
}

#[test]
fn every_error_code_of_the_schema_is_in_the_protocol_document_s_error_table() {
    let (schema, doc) = (schema(), doc());
    let errors = doc
        .split("\n## Errors")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("an Errors section");
    let codes = schema["components"]["errors"]
        .as_object()
        .expect("components/errors")
        .values()
        .map(|e| e["code"].as_i64().expect("a code"));
    let missing: Vec<i64> = codes
        .filter(|code| !errors.contains(&format!("| `{code}` |")))
        .collect();
    assert!(missing.is_empty(), "the Errors table lacks {missing:?}");
    // And each method's errors, by name, are codes the table has.
    for method in schema["methods"].as_array().unwrap() {
        for error in method["errors"].as_array().into_iter().flatten() {
            let name = error["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
            let code = &schema["components"]["errors"][name]["code"];
            assert!(
                errors.contains(&format!("| `{code}` |")),
                "{} answers {name} ({code}), which the Errors table lacks",
                method["name"]
            );
        }
    }
}

#[test]
fn the_protocol_document_s_links_lead_to_files_in_the_repository() {
    let doc = doc();
    let docs_dir = root().join("docs");
    let mut broken = Vec::new();
    for link in doc.split("](").skip(1).filter_map(|s| s.split(')').next()) {
        if link.starts_with('#') || link.contains("://") {
            continue;
        }
        let file = link.split('#').next().unwrap_or(link);
        if !docs_dir.join(file).exists() {
            broken.push(link.to_owned());
        }
    }
    assert!(
        broken.is_empty(),
        "broken links in docs/protocol.md: {broken:?}"
    );
}

#[test]
fn no_documentation_depends_on_files_outside_the_repository() {
    for file in [
        "README.md",
        "docs/protocol.md",
        "schema/README.md",
        "fixtures/README.md",
    ] {
        let text = read(&root().join(file));
        assert!(
            !text.contains("../shared"),
            "{file} points at ../shared, which is not in the repository"
        );
    }
    let readme = read(&root().join("README.md"));
    assert!(
        readme.contains("docs/protocol.md"),
        "the README links the protocol document"
    );
}
