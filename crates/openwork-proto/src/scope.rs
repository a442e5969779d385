//! Scopes: the rights a paired device can hold, by their wire names.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A right a device can hold. The local principal holds all of them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Scope {
    /// Start and cancel tasks.
    #[serde(rename = "tasks.run")]
    TasksRun,
    /// Read tasks, their logs, health details and metrics.
    #[serde(rename = "tasks.read")]
    TasksRead,
    /// Answer permission prompts.
    #[serde(rename = "permissions.reply")]
    PermissionsReply,
    /// Call the OpenCode server API.
    #[serde(rename = "opencode")]
    Opencode,
    /// Manage devices and remembered permission rules.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope, in a stable order.
    pub const ALL: [Scope; 5] = [
        Scope::TasksRun,
        Scope::TasksRead,
        Scope::PermissionsReply,
        Scope::Opencode,
        Scope::Admin,
    ];

    /// The scope's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TasksRun => "tasks.run",
            Scope::TasksRead => "tasks.read",
            Scope::PermissionsReply => "permissions.reply",
            Scope::Opencode => "opencode",
            Scope::Admin => "admin",
        }
    }

    /// Wire names joined by `separator`: `tasks.run,tasks.read`.
    pub fn join(scopes: &[Scope], separator: &str) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(separator)
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// What the scope lets a device do, in words a person understands.
    pub fn description(self) -> &'static str {
        match self {
            Scope::TasksRun => "start and stop tasks (run commands) on this host",
            Scope::TasksRead => "see tasks, their output, the health panel and metrics",
            Scope::PermissionsReply => {
                "approve or reject sensitive actions that tasks ask permission for"
            }
            Scope::Opencode => {
                "use the OpenCode agent on this host: send it prompts (its commands go through this host's permission policy), follow its sessions, and read through its API (files in the workspace included); running commands or terminals directly, changing OpenCode's settings and answering its permission asks also need admin"
            }
            Scope::Admin => "manage paired devices and remembered permission rules",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_round_trip_through_serde_and_parse() {
        for scope in Scope::ALL {
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("root"), None);
    }
}
