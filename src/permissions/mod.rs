//! Permissions: the policy for the built-in runner, requests to people when a
//! task needs confirmation, remembered "always" rules, and the audit trail.
//!
//! A request reaches every connection that follows the task and holds
//! `permissions.reply`, in order with the task's other notifications (it
//! travels in the task's feed), and again to anyone who subscribes while it
//! is pending. The first valid reply decides; the others are told who did.
//! With no answer it expires as a rejection.

pub mod policy;
mod records;
pub mod shell;

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::clock;
use crate::execution::RequestBoard;
use crate::ids;
use crate::protocol::{
    AuditEntry, Decision, PermissionAuditParams, PermissionReplyResult, PermissionRequest,
    PermissionResolved, PermissionRule,
};
use crate::rpc::notifications;
use crate::store::{Store, StoreError};
pub use policy::{Finding, PermissionsConfig, Policy, Verdict};

#[cfg(test)]
mod tests {
    #[test]
    fn globs_match_like_opencode_patterns() {
        use super::glob_matches;
        assert!(glob_matches("echo *", "echo hello world"));
        assert!(glob_matches("git status*", "git status"));
        assert!(!glob_matches("echo *", "rm -rf x"));
        assert!(glob_matches("a?c", "abc") && !glob_matches("a?c", "ac"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b", "a\nb") && glob_matches("é?", "éü"));
        assert!(glob_matches("[x](y)+.^$", "[x](y)+.^$"));
    }

    #[test]
    fn globs_that_backtrack_exponentially_answer_correctly() {
        use super::glob_matches;
        let text = "a".repeat(200);
        assert!(!glob_matches("*a*a*a*a*b", &text));
        assert!(glob_matches("*a*a*a*a*a", &text));
        let pattern = "*a".repeat(100) + "b";
        assert!(!glob_matches(&pattern, &text));
    }
}
use records::NewRule;

/// How many answered request ids are kept to explain a late reply.
const ANSWERED_KEPT: usize = 1024;

/// Why a permission call failed.
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    #[error("permission request `{id}` was already answered: {decision} by {by}")]
    AlreadyAnswered {
        id: String,
        decision: &'static str,
        by: String,
    },
    #[error("no permission request `{0}` is waiting for an answer")]
    Unknown(String),
    #[error("permission request `{0}` does not offer `always`")]
    AlwaysNotOffered(String),
    #[error("permission rule `{0}` not found")]
    NoRule(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The policy's answer once remembered rules are applied.
#[derive(Debug)]
pub(crate) enum Check {
    Allow,
    Deny(Finding),
    Ask(Vec<Finding>),
}

/// What to ask people.
pub(crate) struct Ask {
    /// The request's id, known before it is asked so that the runtime can
    /// settle or withdraw it.
    pub request_id: String,
    pub runtime: &'static str,
    pub tool: String,
    pub summary: String,
    pub detail: String,
    /// What `always` would allow, in words; `None` when it is not offered.
    pub always: Option<String>,
    /// The rules `always` stores.
    pub remember: Vec<RuleTemplate>,
    /// The rules that made it ask (policy rule ids, or `opencode:PERMISSION`
    /// when OpenCode's own configuration asks), for the audit.
    pub rules: Vec<String>,
}

/// A rule to store when someone answers `always`.
#[derive(Debug, Clone)]
pub(crate) struct RuleTemplate {
    pub kind: String,
    pub program: Option<String>,
    pub directory: Option<String>,
    pub pattern: Option<String>,
    pub description: String,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AskOutcome {
    Allowed {
        decision: Decision,
        by: String,
    },
    Rejected {
        by: String,
    },
    Expired {
        after: Duration,
    },
    /// The task was cancelled or the host is stopping.
    Withdrawn,
}

struct Answer {
    decision: Decision,
    by: String,
    actor: String,
    session: Option<u64>,
    /// The rules an `always` answer stored.
    rule_ids: Vec<String>,
}

/// How a pending request ended, sent to the `ask` waiting on it.
enum Settled {
    Answer(Answer),
    /// No one answered in time.
    Expired,
    /// It no longer matters: why (`the task being cancelled`).
    Withdrawn(String),
}

struct Pending {
    request: PermissionRequest,
    runtime: &'static str,
    remember: Vec<RuleTemplate>,
    decide: oneshot::Sender<Settled>,
}

/// Permissions for the whole host.
pub(crate) struct Permissions {
    store: Store,
    /// Shared so that judging a command (which may touch the file system)
    /// can run off the async workers.
    policy: Arc<Policy>,
    timeout: Duration,
    pending: Mutex<HashMap<String, Pending>>,
    answered: Mutex<VecDeque<(String, &'static str, String)>>,
}

/// How a principal is named to other people.
pub(crate) fn display_name(principal: &Principal) -> String {
    match principal {
        Principal::Local => "the host's owner".to_owned(),
        Principal::Device { name, .. } => name.clone(),
        Principal::Anonymous => "an unauthenticated client".to_owned(),
    }
}

impl Permissions {
    /// Compiles the policy; a rule that does not compile stops the host.
    pub(crate) fn new(
        store: Store,
        config: &PermissionsConfig,
        roots: &[PathBuf],
    ) -> Result<Arc<Permissions>, String> {
        Ok(Arc::new(Permissions {
            store,
            policy: Arc::new(Policy::new(config, roots)?),
            timeout: Duration::from_secs(config.request_timeout_s.max(1)),
            pending: Mutex::new(HashMap::new()),
            answered: Mutex::new(VecDeque::new()),
        }))
    }

    /// Runs the policy on a command line on a blocking thread: it resolves
    /// paths on disk, which may stall (a hung network mount, say).
    async fn evaluate(&self, line: &str, cwd: &Path) -> Verdict {
        let (policy, line, cwd) = (Arc::clone(&self.policy), line.to_owned(), cwd.to_owned());
        let judged = tokio::task::spawn_blocking(move || policy.evaluate(&line, &cwd)).await;
        judged.unwrap_or_else(|e| {
            Verdict::Deny(Finding {
                rule_id: "policy-failed".to_owned(),
                action: policy::Action::Deny,
                explain: format!("could not be checked against the policy ({e})"),
                program: None,
                command: String::new(),
            })
        })
    }

    /// Judges a built-in command line: the policy, then remembered rules.
    pub(crate) async fn check_command(
        &self,
        task_id: &str,
        line: &str,
        cwd: &Path,
    ) -> Result<Check, StoreError> {
        let findings = match self.evaluate(line, cwd).await {
            Verdict::Allow => return Ok(Check::Allow),
            Verdict::Deny(finding) => {
                self.audit(
                    Audit::new(
                        task_id,
                        "denied",
                        &format!("`{}` {}", finding.command, finding.explain),
                    )
                    .rule(Some(&finding.rule_id)),
                )
                .await?;
                return Ok(Check::Deny(finding));
            }
            Verdict::Ask(findings) => findings,
        };
        let rules = self
            .store
            .read(|c| records::rules(c, Some("builtin")))
            .await?;
        let mut remaining = Vec::new();
        for finding in findings {
            let covering = rules.iter().find(|r| {
                r.kind == finding.rule_id
                    && r.program
                        .as_ref()
                        .is_none_or(|p| Some(p) == finding.program.as_ref())
                    && r.directory.as_ref().is_none_or(|d| cwd.starts_with(d))
            });
            match covering {
                Some(rule) => {
                    self.audit(
                        Audit::new(
                            task_id,
                            "allowed by rule",
                            &format!(
                                "`{}` {} (remembered: {})",
                                finding.command, finding.explain, rule.description
                            ),
                        )
                        .rule(Some(&rule.rule_id)),
                    )
                    .await?;
                }
                None => remaining.push(finding),
            }
        }
        Ok(if remaining.is_empty() {
            Check::Allow
        } else {
            Check::Ask(remaining)
        })
    }

    /// Asks people and waits for the first answer, the timeout, or
    /// `cancel`/`shutdown`. However it ends, the request is audited and the
    /// task's followers get `permission.resolved` on `board`.
    pub(crate) async fn ask(
        &self,
        board: &dyn RequestBoard,
        ask: Ask,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<AskOutcome, StoreError> {
        let task_id = board.task_id();
        let request_id = ask.request_id.clone();
        let request = self.request(task_id, &ask);
        let rules = (!ask.rules.is_empty()).then(|| ask.rules.join(","));
        self.audit(
            Audit::new(task_id, "requested", &ask.summary)
                .request(&request_id)
                .rule(rules.as_deref()),
        )
        .await?;
        let (decide, answer) = oneshot::channel();
        self.pending.lock().insert(
            request_id.clone(),
            Pending {
                request: request.clone(),
                runtime: ask.runtime,
                remember: ask.remember,
                decide,
            },
        );
        board.requested(
            &request_id,
            notifications::PERMISSION_REQUEST.encode(&request),
        );
        let settled = self.settle(&request_id, answer, cancel, shutdown).await;
        let (result, resolved, except) = self.record(task_id, &request_id, settled).await?;
        board.resolved(
            &request_id,
            notifications::PERMISSION_RESOLVED.encode(&resolved),
            except,
        );
        Ok(result)
    }

    /// The request people are shown for `ask`.
    fn request(&self, task_id: &str, ask: &Ask) -> PermissionRequest {
        let mut options = vec![Decision::Once];
        if ask.always.is_some() {
            options.push(Decision::Always);
        }
        options.push(Decision::Reject);
        PermissionRequest {
            request_id: ask.request_id.clone(),
            task_id: task_id.to_owned(),
            tool: ask.tool.clone(),
            summary: ask.summary.clone(),
            detail: ask.detail.clone(),
            options,
            always: ask.always.clone(),
            expires_at: clock::rfc3339(
                clock::now_ms().saturating_add(self.timeout.as_millis() as i64),
            ),
        }
    }

    /// Waits for a pending request to be settled: an answer, the timeout, or
    /// `cancel`/`shutdown` (which withdraw it).
    async fn settle(
        &self,
        request_id: &str,
        mut answer: oneshot::Receiver<Settled>,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Settled {
        let settled = tokio::select! {
            answer = &mut answer => answer.ok(),
            _ = tokio::time::sleep(self.timeout) => None,
            _ = cancel.cancelled() => None,
            _ = shutdown.cancelled() => None,
        };
        if let Some(settled) = settled {
            return settled;
        }
        let (settled, why) = if shutdown.is_cancelled() {
            (None, "the host shutting down".to_owned())
        } else if cancel.is_cancelled() {
            (None, "the task being cancelled".to_owned())
        } else {
            (
                Some(Settled::Expired),
                format!("no answer within {} s", self.timeout.as_secs()),
            )
        };
        // Whoever removes the request records the answer in the same
        // step, so a late reply always learns who answered.
        if self.take_pending(request_id, "reject", &why).is_some() {
            settled.unwrap_or(Settled::Withdrawn(why))
        } else {
            // Someone settled it just as time ran out: that counts.
            answer
                .await
                .unwrap_or(Settled::Withdrawn("the request being dropped".to_owned()))
        }
    }

    /// Audits how a request was settled; returns what the task learns, what
    /// the followers learn, and the connection that answered (it knows already).
    async fn record(
        &self,
        task_id: &str,
        request_id: &str,
        settled: Settled,
    ) -> Result<(AskOutcome, PermissionResolved, Option<u64>), StoreError> {
        let (result, decision, by, except) = match settled {
            Settled::Answer(answer) => {
                let result = match answer.decision {
                    Decision::Reject => AskOutcome::Rejected {
                        by: answer.by.clone(),
                    },
                    decision => AskOutcome::Allowed {
                        decision,
                        by: answer.by.clone(),
                    },
                };
                let created = (!answer.rule_ids.is_empty()).then(|| answer.rule_ids.join(","));
                let summary = format!("{} by {}", answer.decision.as_str(), answer.by);
                self.audit(
                    Audit::new(task_id, "decided", &summary)
                        .request(request_id)
                        .decision(answer.decision)
                        .actor(&answer.actor)
                        .rule(created.as_deref()),
                )
                .await?;
                (result, answer.decision, answer.by, answer.session)
            }
            Settled::Expired => {
                let by = format!("no answer within {} s", self.timeout.as_secs());
                self.audit(
                    Audit::new(task_id, "expired", &by)
                        .request(request_id)
                        .decision(Decision::Reject),
                )
                .await?;
                let after = self.timeout;
                (AskOutcome::Expired { after }, Decision::Reject, by, None)
            }
            Settled::Withdrawn(why) => {
                self.audit(
                    Audit::new(task_id, "withdrawn", &why)
                        .request(request_id)
                        .decision(Decision::Reject),
                )
                .await?;
                (AskOutcome::Withdrawn, Decision::Reject, why, None)
            }
        };
        let resolved = PermissionResolved {
            request_id: request_id.to_owned(),
            task_id: task_id.to_owned(),
            decision,
            by,
        };
        Ok((result, resolved, except))
    }

    /// Ends a pending request that no longer matters (its task is ending):
    /// its `ask` records `why` and tells the followers. False when it was
    /// not pending (answered already, or never asked).
    pub(crate) fn withdraw(&self, request_id: &str, why: &str) -> bool {
        match self.take_pending(request_id, "reject", why) {
            Some(pending) => {
                let _ = pending.decide.send(Settled::Withdrawn(why.to_owned()));
                true
            }
            None => false,
        }
    }

    /// Settles a pending request with an answer given outside the host (in
    /// OpenCode itself): recorded and announced as `decision` by `by`.
    pub(crate) fn settle_elsewhere(&self, request_id: &str, decision: Decision, by: &str) -> bool {
        match self.take_pending(request_id, decision.as_str(), by) {
            Some(pending) => {
                let _ = pending.decide.send(Settled::Answer(Answer {
                    decision,
                    by: by.to_owned(),
                    actor: "opencode".to_owned(),
                    session: None,
                    rule_ids: Vec::new(),
                }));
                true
            }
            None => false,
        }
    }

    /// The requests waiting for an answer, the one expiring first first.
    pub(crate) fn pending(&self) -> Vec<PermissionRequest> {
        let mut requests: Vec<PermissionRequest> = self
            .pending
            .lock()
            .values()
            .map(|p| p.request.clone())
            .collect();
        requests
            .sort_by(|a, b| (&a.expires_at, &a.request_id).cmp(&(&b.expires_at, &b.request_id)));
        requests
    }

    /// Removes a pending request and records how it ended, in one step.
    fn take_pending(&self, id: &str, decision: &'static str, by: &str) -> Option<Pending> {
        let mut pending = self.pending.lock();
        let taken = pending.remove(id)?;
        let mut answered = self.answered.lock();
        answered.push_back((id.to_owned(), decision, by.to_owned()));
        while answered.len() > ANSWERED_KEPT {
            answered.pop_front();
        }
        Some(taken)
    }

    /// A person's answer; the first valid one decides.
    pub(crate) async fn reply(
        &self,
        request_id: &str,
        decision: Decision,
        principal: &Principal,
        session: u64,
    ) -> Result<PermissionReplyResult, PermissionError> {
        let offers_always = self
            .pending
            .lock()
            .get(request_id)
            .map(|p| p.request.options.contains(&Decision::Always));
        if decision == Decision::Always && offers_always == Some(false) {
            return Err(PermissionError::AlwaysNotOffered(request_id.to_owned()));
        }
        let pending = self.take_pending(request_id, decision.as_str(), &display_name(principal));
        let Some(pending) = pending else {
            let answered = self.answered.lock();
            return Err(
                match answered.iter().rev().find(|(id, _, _)| id == request_id) {
                    Some((id, decision, by)) => PermissionError::AlreadyAnswered {
                        id: id.clone(),
                        decision,
                        by: by.clone(),
                    },
                    None => PermissionError::Unknown(request_id.to_owned()),
                },
            );
        };
        // Remember first, so that the task's next step already sees the rule.
        let mut rule_ids = Vec::new();
        if decision == Decision::Always {
            for template in &pending.remember {
                let rule = NewRule {
                    id: ids::random_id("rule_"),
                    runtime: pending.runtime.to_owned(),
                    template: template.clone(),
                    created_by: display_name(principal),
                };
                rule_ids.push(rule.id.clone());
                self.store
                    .write(move |c| records::insert_rule(c, &rule))
                    .await?;
            }
        }
        let answer = Answer {
            decision,
            by: display_name(principal),
            actor: principal.key(),
            session: Some(session),
            rule_ids: rule_ids.clone(),
        };
        if pending.decide.send(Settled::Answer(answer)).is_err() {
            return Err(PermissionError::Unknown(request_id.to_owned()));
        }
        Ok(PermissionReplyResult {
            request_id: request_id.to_owned(),
            decision,
            rule_ids,
        })
    }

    /// Remembered rules, newest first.
    pub(crate) async fn rules(&self) -> Result<Vec<PermissionRule>, StoreError> {
        self.store.read(|c| records::rules(c, None)).await
    }

    /// Forgets a remembered rule: the next such action asks again.
    pub(crate) async fn forget(&self, rule_id: &str) -> Result<(), PermissionError> {
        let id = rule_id.to_owned();
        let removed = self
            .store
            .write(move |c| records::delete_rule(c, &id))
            .await?;
        if removed {
            Ok(())
        } else {
            Err(PermissionError::NoRule(rule_id.to_owned()))
        }
    }

    /// The audit trail, newest first.
    pub(crate) async fn audit_entries(
        &self,
        params: PermissionAuditParams,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = params.limit.unwrap_or(100).clamp(1, 1000);
        let filter = records::AuditFilter {
            principal: params.device_id.as_deref().map(|d| match d {
                "local" => d.to_owned(),
                id => format!("device:{id}"),
            }),
            decision: params.decision.map(|d| match d {
                Decision::Once => "once",
                Decision::Always => "always",
                Decision::Reject => "reject",
            }),
        };
        self.store
            .read(move |c| {
                records::audit(c, params.task_id.as_deref(), params.before, limit, &filter)
            })
            .await
    }

    /// At start: requests that were waiting when the host stopped have expired.
    pub(crate) async fn expire_unanswered(&self) -> Result<usize, StoreError> {
        let now = clock::now_ms();
        self.store
            .write(move |c| records::expire_unanswered(c, now))
            .await
    }

    async fn audit(&self, audit: Audit<'_>) -> Result<(), StoreError> {
        let entry = records::NewAudit {
            at: clock::now_ms(),
            task_id: audit.task_id.to_owned(),
            request_id: audit.request_id.map(str::to_owned),
            event: audit.event.to_owned(),
            decision: audit.decision.map(|d| d.as_str().to_owned()),
            actor: audit.actor.map(str::to_owned),
            rule: audit.rule.map(str::to_owned),
            summary: audit.summary.to_owned(),
        };
        self.store
            .write(move |c| records::insert_audit(c, &entry))
            .await
    }
}

/// One line of the audit trail, before it is written.
struct Audit<'a> {
    task_id: &'a str,
    event: &'a str,
    summary: &'a str,
    request_id: Option<&'a str>,
    decision: Option<Decision>,
    actor: Option<&'a str>,
    rule: Option<&'a str>,
}

impl<'a> Audit<'a> {
    /// `event` (`requested`, `decided`, `denied`, …) on `task_id`, in words.
    fn new(task_id: &'a str, event: &'a str, summary: &'a str) -> Audit<'a> {
        Audit {
            task_id,
            event,
            summary,
            request_id: None,
            decision: None,
            actor: None,
            rule: None,
        }
    }

    fn request(self, request_id: &'a str) -> Audit<'a> {
        Audit {
            request_id: Some(request_id),
            ..self
        }
    }

    fn decision(self, decision: Decision) -> Audit<'a> {
        Audit {
            decision: Some(decision),
            ..self
        }
    }

    fn actor(self, actor: &'a str) -> Audit<'a> {
        Audit {
            actor: Some(actor),
            ..self
        }
    }

    /// The rule (or rules, comma-separated) behind it, if any.
    fn rule(self, rule: Option<&'a str>) -> Audit<'a> {
        Audit { rule, ..self }
    }
}

/// What OpenCode itself would do with an ask, by its own configuration
/// (had the host not made the session ask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpencodeVerdict {
    Allow,
    Ask,
    /// Denied: the rule (for the audit) and why, in words.
    Deny {
        rule: String,
        reason: String,
    },
}

/// The host's answer to an OpenCode permission ask, before asking anyone.
#[derive(Debug)]
pub(crate) enum OpencodeCheck {
    /// Rejected without asking anyone: why.
    Deny(String),
    /// Allowed without asking anyone: why.
    Allow(String),
    /// A person must answer: the policy's findings (none when only
    /// OpenCode's own configuration asks) and the rules that made it ask.
    Ask {
        findings: Vec<Finding>,
        rules: Vec<String>,
    },
}

impl Permissions {
    /// Judges an OpenCode ask: the host's policy on the command first (a
    /// deny rule rejects it, an allow rule allows it), then what OpenCode's
    /// own configuration says, then rules remembered from earlier `always`
    /// answers. It asks a person when the policy or OpenCode's configuration
    /// asks and no remembered rule covers it.
    pub(crate) async fn check_opencode(
        &self,
        task_id: &str,
        permission: &str,
        patterns: &[String],
        command: Option<&str>,
        cwd: &Path,
        opencode: OpencodeVerdict,
    ) -> Result<OpencodeCheck, StoreError> {
        let verdict = match command {
            Some(line) => Some(self.evaluate(line, cwd).await),
            None => None,
        };
        if let Some(Verdict::Deny(finding)) = &verdict {
            let reason = format!(
                "`{}` {} (rule {})",
                finding.command, finding.explain, finding.rule_id
            );
            self.audit(Audit::new(task_id, "denied", &reason).rule(Some(&finding.rule_id)))
                .await?;
            return Ok(OpencodeCheck::Deny(reason));
        }
        if let OpencodeVerdict::Deny { rule, reason } = &opencode {
            self.audit(Audit::new(task_id, "denied", reason).rule(Some(rule)))
                .await?;
            return Ok(OpencodeCheck::Deny(reason.clone()));
        }
        let explicitly_allowed = match command {
            Some(line) => {
                let (policy, line) = (Arc::clone(&self.policy), line.to_owned());
                tokio::task::spawn_blocking(move || policy.explicitly_allowed(&line))
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        if let Some(line) = command
            && let Some(rule) = explicitly_allowed
        {
            let reason = format!("`{line}` is allowed by rule {rule}");
            self.audit(Audit::new(task_id, "allowed by rule", &reason).rule(Some(&rule)))
                .await?;
            return Ok(OpencodeCheck::Allow(reason));
        }
        let (findings, rules) = match verdict {
            Some(Verdict::Ask(findings)) => {
                let rules = findings.iter().map(|f| f.rule_id.clone()).collect();
                (findings, rules)
            }
            _ if opencode == OpencodeVerdict::Ask => {
                (Vec::new(), vec![format!("opencode:{permission}")])
            }
            _ => {
                return Ok(OpencodeCheck::Allow(
                    "neither this host's policy nor OpenCode's configuration asks about it"
                        .to_owned(),
                ));
            }
        };
        let remembered = self
            .store
            .read(|c| records::rules(c, Some("opencode")))
            .await?;
        // Matching globs is linear, but the texts and patterns are the
        // agent's and may be long: off the async workers.
        let (permission_owned, cwd_owned, patterns_owned) =
            (permission.to_owned(), cwd.to_owned(), patterns.to_vec());
        let covering = tokio::task::spawn_blocking(move || {
            remembered.into_iter().find(|r| {
                r.kind == permission_owned
                    && r.directory
                        .as_ref()
                        .is_none_or(|d| cwd_owned.starts_with(d))
                    && !patterns_owned.is_empty()
                    && r.pattern.as_deref().is_some_and(|globs| {
                        let globs: Vec<Glob> = globs.lines().filter_map(Glob::new).collect();
                        patterns_owned
                            .iter()
                            .all(|p| globs.iter().any(|g| g.matches(p)))
                    })
            })
        })
        .await
        .ok()
        .flatten();
        if let Some(rule) = covering {
            let reason = format!("remembered: {}", rule.description);
            self.audit(Audit::new(task_id, "allowed by rule", &reason).rule(Some(&rule.rule_id)))
                .await?;
            return Ok(OpencodeCheck::Allow(reason));
        }
        Ok(OpencodeCheck::Ask { findings, rules })
    }
}

/// Whether `text` matches a glob where `*` is any run of characters and `?` one.
/// A glob too large to compile matches nothing.
pub fn glob_matches(glob: &str, text: &str) -> bool {
    Glob::new(glob).is_some_and(|g| g.matches(text))
}

/// A compiled glob (`*` any run of characters, `?` one, everything else
/// itself), matched in time linear in the text whatever the pattern: the
/// patterns come from OpenCode's `always` lists, which an agent can shape,
/// and a backtracking matcher takes exponential time on `*a*a*a*b`.
#[derive(Debug, Clone)]
pub(crate) struct Glob(regex::Regex);

impl Glob {
    /// Compiles a glob; `None` when it is too large to compile.
    pub(crate) fn new(glob: &str) -> Option<Glob> {
        let mut source = String::with_capacity(glob.len() + 8);
        source.push_str("(?s)^");
        let mut literal = [0u8; 4];
        for c in glob.chars() {
            match c {
                '*' => source.push_str(".*"),
                '?' => source.push('.'),
                c => source.push_str(&regex::escape(c.encode_utf8(&mut literal))),
            }
        }
        source.push_str(r"\z");
        regex::RegexBuilder::new(&source)
            .size_limit(1 << 22)
            .dfa_size_limit(1 << 22)
            .build()
            .ok()
            .map(Glob)
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

/// An OpenCode permission ask, as OpenCode describes it.
pub(crate) struct OpencodeAsk<'a> {
    pub task_id: &'a str,
    /// `bash`, `edit`, `task`, `external_directory`…
    pub permission: &'a str,
    pub patterns: &'a [String],
    /// What OpenCode would allow from then on after `always`.
    pub always: &'a [String],
    /// The command line, for `bash`.
    pub command: Option<&'a str>,
    pub metadata: Option<&'a serde_json::Value>,
    pub cwd: &'a Path,
}

/// What to ask about an OpenCode permission ask; `findings` are the
/// policy's reasons (none when OpenCode's own configuration asks).
pub(crate) fn opencode_ask(oc: &OpencodeAsk<'_>, findings: &[Finding], rules: Vec<String>) -> Ask {
    let OpencodeAsk {
        task_id,
        permission,
        patterns,
        always,
        command,
        metadata,
        cwd,
    } = *oc;
    let what = match command {
        Some(command) => format!("run `{}`", shorten(command, 120)),
        None if patterns.is_empty() => format!("use `{permission}`"),
        None => format!("use `{permission}` on {}", patterns.join(", ")),
    };
    let reasons: Vec<String> = findings.iter().map(|f| f.explain.clone()).collect();
    let summary = if reasons.is_empty() {
        format!("OpenCode wants to {what}")
    } else {
        format!("OpenCode wants to {what}, which {}", join_words(&reasons))
    };
    let mut detail = format!(
        "The OpenCode agent of task {task_id}, working in {}, asks to {what}.\n",
        cwd.display()
    );
    if !patterns.is_empty() {
        detail.push_str(&format!(
            "Permission: {permission}; patterns: {}\n",
            patterns.join(", ")
        ));
    }
    if findings.is_empty() {
        detail.push_str("It asks because OpenCode's configuration asks for it.\n");
    } else {
        detail.push_str("It asks because of this host's policy:\n");
        for f in findings {
            let who = f.program.as_deref().unwrap_or("the command line");
            detail.push_str(&format!("  - {who}: {} (rule {})\n", f.explain, f.rule_id));
        }
    }
    if let Some(meta) = metadata.filter(|m| m.as_object().is_some_and(|o| !o.is_empty())) {
        detail.push_str(&format!("Details: {meta}\n"));
    }
    let directory = cwd.display().to_string();
    let (always_text, remember) = if always.is_empty() {
        (None, Vec::new())
    } else {
        let description = format!(
            "OpenCode's `{permission}` for {} in {directory} and below",
            always
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        (
            Some(format!(
                "From now on, without asking: {description} (this host's deny rules still apply)"
            )),
            vec![RuleTemplate {
                kind: permission.to_owned(),
                program: None,
                directory: Some(directory),
                pattern: Some(always.join("\n")),
                description,
            }],
        )
    };
    Ask {
        request_id: ids::random_id("pq_"),
        runtime: "opencode",
        tool: permission.to_owned(),
        summary,
        detail,
        always: always_text,
        remember,
        rules,
    }
}

/// What to ask about a built-in command, from the policy's findings.
pub(crate) fn builtin_ask(task_id: &str, line: &str, cwd: &Path, findings: &[Finding]) -> Ask {
    let reasons: Vec<String> = findings.iter().map(|f| f.explain.clone()).collect();
    let summary = format!("`{}` {}", shorten(line, 120), join_words(&reasons));
    let mut detail = format!(
        "Task {task_id} wants to run:\n    {line}\nin {}.\n\nIt asks because:\n",
        cwd.display()
    );
    for f in findings {
        let who = f.program.as_deref().unwrap_or("the command line");
        detail.push_str(&format!("  - {who}: {} (rule {})\n", f.explain, f.rule_id));
    }
    let directory = cwd.display().to_string();
    let remember: Vec<RuleTemplate> = findings
        .iter()
        .map(|f| RuleTemplate {
            kind: f.rule_id.clone(),
            program: f.program.clone(),
            directory: Some(directory.clone()),
            pattern: None,
            description: match &f.program {
                Some(p) => format!("`{p}` that {} in {directory} and below", f.explain),
                None => format!("commands that {} in {directory} and below", f.explain),
            },
        })
        .collect();
    // What the policy could not see cannot be remembered as safe.
    let always = findings
        .iter()
        .all(|f| policy::rememberable(&f.rule_id))
        .then(|| {
            format!(
                "From now on, without asking: {}",
                remember
                    .iter()
                    .map(|r| r.description.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        });
    Ask {
        request_id: ids::random_id("pq_"),
        runtime: "builtin",
        tool: "command".into(),
        summary,
        detail,
        always,
        remember,
        rules: findings.iter().map(|f| f.rule_id.clone()).collect(),
    }
}

fn join_words(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}
