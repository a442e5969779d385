//! Which OpenCode operations the `opencode` scope covers, and which need
//! `admin` as well: those that run commands the host's policy never sees,
//! make the agent act outside a host task (where its commands would not
//! reach the policy either), change OpenCode's configuration, credentials or
//! servers, publish a session, or answer OpenCode's permission asks (which
//! is what `permissions.reply` and the host's policy are for).
//!
//! Operations are named by id, or by a prefix ending in `.` that covers a
//! whole family (`pty.`), so that new operations of a family are covered too.

use serde_json::{Map, Value};

/// Why a group of operations needs `admin`, and the operations in it.
const ADMIN_OPERATIONS: &[(&str, &[&str])] = &[
    (
        "runs commands that the host's policy does not see",
        &[
            "session.shell",
            "session.command",
            "pty.",
            "v2.pty.",
            "vcs.apply",
        ],
    ),
    (
        "makes the agent act outside a host task, where its commands would not reach the host's policy (send prompts with `task.run`)",
        &[
            "session.prompt",
            "session.prompt_async",
            "session.init",
            "v2.session.prompt",
            "experimental.session.background",
            "part.update",
            "tui.",
        ],
    ),
    (
        "changes OpenCode's configuration, credentials, servers or projects",
        &[
            "config.update",
            "global.config.update",
            "global.upgrade",
            "global.dispose",
            "instance.dispose",
            "auth.",
            "mcp.add",
            "mcp.connect",
            "mcp.disconnect",
            "mcp.auth.",
            "provider.oauth.",
            "v2.integration.",
            "v2.credential.",
            "project.update",
            "project.initGit",
            "worktree.",
            "sync.",
            "experimental.console.switchOrg",
            "experimental.workspace.",
            "experimental.controlPlane.",
            "experimental.projectCopy.",
            "v2.projectCopy.",
        ],
    ),
    (
        "publishes the session outside this machine",
        &["session.share", "session.unshare"],
    ),
    (
        "answers OpenCode's permission asks, which reach people as `permission.request` (answer with `permission.reply`)",
        &[
            "permission.reply",
            "permission.respond",
            "v2.session.permission.reply",
            "v2.session.permission.create",
            "v2.permission.saved.remove",
        ],
    ),
];

/// Operations that take a session's permission rules, which would let the
/// caller switch asking off.
const TAKES_PERMISSION_RULES: &[&str] = &["session.create", "session.update", "v2.session.create"];

fn matches(entry: &str, op_id: &str) -> bool {
    match entry.strip_suffix('.') {
        Some(family) => op_id
            .strip_prefix(family)
            .is_some_and(|rest| rest.starts_with('.')),
        None => entry == op_id,
    }
}

/// Why calling `op_id` with `params` needs `admin`, or `None` when the
/// `opencode` scope is enough.
pub(crate) fn needs_admin(op_id: &str, params: &Map<String, Value>) -> Option<&'static str> {
    if let Some((why, _)) = ADMIN_OPERATIONS
        .iter()
        .find(|(_, ops)| ops.iter().any(|entry| matches(entry, op_id)))
    {
        return Some(why);
    }
    let sets_rules = params.contains_key("permission")
        || params
            .get("body")
            .is_some_and(|b| b.get("permission").is_some());
    (TAKES_PERMISSION_RULES.contains(&op_id) && sets_rules)
        .then_some("sets the session's permission rules, which could switch asking off")
}

/// The operation ids and families that always need `admin` (the README's
/// list is checked against it).
#[cfg(test)]
fn admin_operations() -> impl Iterator<Item = &'static str> {
    ADMIN_OPERATIONS
        .iter()
        .flat_map(|(_, ops)| ops.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn commands_config_and_permission_answers_need_admin_and_reading_does_not() {
        let none = Map::new();
        for op in [
            "session.shell",
            "pty.create",
            "pty.connectToken",
            "v2.pty.create",
            "config.update",
            "permission.reply",
            "session.prompt_async",
            "auth.set",
            "mcp.auth.start",
        ] {
            assert!(needs_admin(op, &none).is_some(), "{op}");
        }
        for op in [
            "session.list",
            "session.get",
            "session.messages",
            "session.abort",
            "permission.list",
            "file.read",
            "ptyx.create",
            "config.get",
        ] {
            assert!(needs_admin(op, &none).is_none(), "{op}");
        }
    }

    #[test]
    fn setting_a_sessions_permission_rules_needs_admin() {
        assert!(needs_admin("session.create", &params(json!({"title": "x"}))).is_none());
        let rules = json!([{"permission": "bash", "pattern": "*", "action": "allow"}]);
        assert!(needs_admin("session.create", &params(json!({"permission": rules}))).is_some());
        assert!(
            needs_admin(
                "session.update",
                &params(json!({"sessionID": "s", "body": {"permission": rules}}))
            )
            .is_some()
        );
    }

    #[test]
    fn the_readme_lists_every_operation_that_needs_admin() {
        let readme = include_str!("../../../README.md");
        for entry in admin_operations() {
            let shown = match entry.strip_suffix('.') {
                Some(family) => format!("`{family}.*`"),
                None => format!("`{entry}`"),
            };
            assert!(readme.contains(&shown), "README.md does not list {shown}");
        }
    }
}
