//! OpenCode's permission rules: the ones the host adds to the sessions it
//! prompts, so that every command reaches the host's policy, and how OpenCode
//! would judge an ask by its own configuration.
//!
//! OpenCode judges an action by the last rule whose permission and pattern
//! match it (`*` any run of characters, `?` one), looking at the agent's rules
//! (its configuration) and then the session's; when no rule matches, it asks.
//! A session's rules therefore override the configuration, which is how the
//! host makes `bash` ask everywhere. Since that also overrides OpenCode's own
//! answers, the host works out what OpenCode would have said without its
//! rules and applies it itself: what OpenCode denies stays denied, what it
//! asks about still reaches a person, and only what it allows is left to the
//! host's policy alone.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::permissions::glob_matches;

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    Allow,
    Ask,
    Deny,
}

/// One OpenCode permission rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rule {
    pub permission: String,
    pub pattern: String,
    pub action: Action,
}

impl Rule {
    fn new(permission: &str, pattern: &str, action: Action) -> Rule {
        Rule {
            permission: permission.to_owned(),
            pattern: pattern.to_owned(),
            action,
        }
    }
}

/// The permissions whose every use the host wants to see: commands, and
/// sub-agents (which run commands in sessions of their own).
const WATCHED: [&str; 2] = ["bash", "task"];

/// Reads a ruleset (`[{permission, pattern, action}]`), skipping entries it
/// does not understand.
pub(crate) fn parse(value: &Value) -> Vec<Rule> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|rule| serde_json::from_value(rule.clone()).ok())
        .collect()
}

/// The rules the host appends to a session before prompting it: `bash` and
/// `task` ask, whatever OpenCode's configuration says, followed by copies of
/// the deny rules for them that were in force (`own`), so that OpenCode
/// itself still refuses what it refused before.
pub(crate) fn host_rules(own: &[Rule]) -> Vec<Rule> {
    let mut rules: Vec<Rule> = WATCHED
        .iter()
        .map(|p| Rule::new(p, "*", Action::Ask))
        .collect();
    for rule in own {
        // Once each: a session continued by another task already has copies.
        if rule.action == Action::Deny
            && WATCHED.contains(&rule.permission.as_str())
            && !rules.contains(rule)
        {
            rules.push(rule.clone());
        }
    }
    rules
}

/// A session's rules without what an earlier host task appended, as far as
/// they can be told apart: the two catch-all asks.
pub(crate) fn without_host_rules(rules: &[Rule]) -> Vec<Rule> {
    rules
        .iter()
        .filter(|r| {
            !(r.pattern == "*"
                && r.action == Action::Ask
                && WATCHED.contains(&r.permission.as_str()))
        })
        .cloned()
        .collect()
}

/// OpenCode's wildcard: `*` any run of characters, `?` one, and a trailing
/// ` *` may also match nothing (`ls *` covers `ls`).
pub(crate) fn wildcard(pattern: &str, text: &str) -> bool {
    glob_matches(pattern, text)
        || pattern
            .strip_suffix(" *")
            .is_some_and(|head| glob_matches(head, text))
}

/// What `rules` say about `permission` on `pattern`: the last match wins,
/// and without one OpenCode asks.
pub(crate) fn evaluate(rules: &[Rule], permission: &str, pattern: &str) -> Action {
    rules
        .iter()
        .rev()
        .find(|r| wildcard(&r.permission, permission) && wildcard(&r.pattern, pattern))
        .map_or(Action::Ask, |r| r.action)
}

/// OpenCode's answer to an ask with several patterns: any denied denies it,
/// any asked asks.
pub(crate) fn verdict(rules: &[Rule], permission: &str, patterns: &[String]) -> Action {
    let actions: Vec<Action> = if patterns.is_empty() {
        vec![evaluate(rules, permission, "*")]
    } else {
        patterns
            .iter()
            .map(|p| evaluate(rules, permission, p))
            .collect()
    };
    if actions.contains(&Action::Deny) {
        Action::Deny
    } else if actions.contains(&Action::Ask) {
        Action::Ask
    } else {
        Action::Allow
    }
}

/// Whether an agent with these rules asks before every command (or refuses
/// it): then the host sees each one. The last catch-all rule for `bash`
/// decides every command no later rule names, so it must not allow, and no
/// later rule may allow some.
pub(crate) fn every_command_asks(rules: &[Rule]) -> bool {
    let bash: Vec<&Rule> = rules
        .iter()
        .filter(|r| wildcard(&r.permission, "bash"))
        .collect();
    let catch_all = bash
        .iter()
        .rposition(|r| r.pattern == "*" || r.pattern == "**");
    if catch_all.is_some_and(|i| bash[i].action == Action::Allow) {
        return false;
    }
    let after = catch_all.map_or(0, |i| i + 1);
    !bash[after..].iter().any(|r| r.action == Action::Allow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(value: Value) -> Vec<Rule> {
        parse(&value)
    }

    #[test]
    fn the_last_matching_rule_wins_and_no_rule_asks() {
        let r = rules(json!([
            {"permission": "*", "pattern": "*", "action": "allow"},
            {"permission": "bash", "pattern": "rm *", "action": "deny"},
            {"permission": "bash", "pattern": "rm -i *", "action": "allow"},
            {"permission": "bash", "pattern": "git push*", "action": "ask"}
        ]));
        assert_eq!(evaluate(&r, "bash", "ls -la"), Action::Allow);
        assert_eq!(evaluate(&r, "bash", "rm -rf /"), Action::Deny);
        assert_eq!(
            evaluate(&r, "bash", "rm"),
            Action::Deny,
            "a trailing ` *` may match nothing"
        );
        assert_eq!(evaluate(&r, "bash", "rm -i x"), Action::Allow);
        assert_eq!(evaluate(&r, "bash", "git push --force"), Action::Ask);
        assert_eq!(evaluate(&[], "bash", "ls"), Action::Ask);
        assert_eq!(
            verdict(&r, "bash", &["ls".into(), "rm x".into()]),
            Action::Deny
        );
        assert_eq!(
            verdict(&r, "bash", &["ls".into(), "git push".into()]),
            Action::Ask
        );
    }

    #[test]
    fn host_rules_make_commands_and_sub_agents_ask_and_keep_opencodes_denials() {
        let own = rules(json!([
            {"permission": "*", "pattern": "*", "action": "allow"},
            {"permission": "bash", "pattern": "rm *", "action": "deny"},
            {"permission": "edit", "pattern": "*.lock", "action": "deny"}
        ]));
        let added = host_rules(&own);
        let mut session = own.clone();
        session.extend(added.clone());
        assert_eq!(evaluate(&session, "bash", "ls"), Action::Ask);
        assert_eq!(evaluate(&session, "task", "general"), Action::Ask);
        assert_eq!(evaluate(&session, "bash", "rm x"), Action::Deny);
        assert_eq!(added.len(), 3, "{added:?}");
        assert_eq!(without_host_rules(&added), own[1..2].to_vec());
        // A session continued later: what it has already is not added twice.
        let mut continued = own.clone();
        continued.extend(without_host_rules(&session[own.len()..]));
        assert_eq!(host_rules(&continued), added);
    }

    #[test]
    fn an_agent_that_allows_some_command_does_not_ask_before_every_one() {
        let allows = rules(json!([{"permission": "*", "pattern": "*", "action": "allow"}]));
        assert!(!every_command_asks(&allows));
        let asks = rules(json!([
            {"permission": "*", "pattern": "*", "action": "allow"},
            {"permission": "bash", "pattern": "*", "action": "ask"},
            {"permission": "bash", "pattern": "rm *", "action": "deny"}
        ]));
        assert!(every_command_asks(&asks));
        let mut but_git = asks.clone();
        but_git.push(Rule::new("bash", "git *", Action::Allow));
        assert!(!every_command_asks(&but_git));
        assert!(every_command_asks(&[]), "no rule at all asks");
    }
}
