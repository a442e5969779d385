//! The SQL behind remembered rules and the audit trail.

use rusqlite::{Connection, Row, params};

use super::RuleTemplate;
use crate::clock;
use crate::protocol::{AuditEntry, Decision, PermissionRule};

pub(super) struct NewRule {
    pub id: String,
    pub runtime: String,
    pub template: RuleTemplate,
    pub created_by: String,
}

pub(super) struct NewAudit {
    pub at: i64,
    pub task_id: String,
    pub request_id: Option<String>,
    pub event: String,
    pub decision: Option<String>,
    pub actor: Option<String>,
    pub rule: Option<String>,
    pub summary: String,
}

pub(super) fn insert_rule(c: &Connection, rule: &NewRule) -> rusqlite::Result<()> {
    let t = &rule.template;
    c.execute(
        "INSERT INTO permission_rules (id, runtime, kind, program, directory, pattern, description, created_at, created_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![rule.id, rule.runtime, t.kind, t.program, t.directory, t.pattern, t.description, clock::now_ms(), rule.created_by],
    )?;
    Ok(())
}

fn rule_from_row(row: &Row<'_>) -> rusqlite::Result<PermissionRule> {
    Ok(PermissionRule {
        rule_id: row.get(0)?,
        runtime: row.get(1)?,
        kind: row.get(2)?,
        program: row.get(3)?,
        directory: row.get(4)?,
        pattern: row.get(5)?,
        description: row.get(6)?,
        created_at: clock::rfc3339(row.get(7)?),
        created_by: row.get(8)?,
    })
}

pub(super) fn rules(
    c: &Connection,
    runtime: Option<&str>,
) -> rusqlite::Result<Vec<PermissionRule>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, runtime, kind, program, directory, pattern, description, created_at, created_by \
         FROM permission_rules WHERE ?1 IS NULL OR runtime = ?1 ORDER BY created_at DESC, id",
    )?;
    let rows = stmt.query_map([runtime], rule_from_row)?;
    rows.collect()
}

pub(super) fn delete_rule(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    Ok(c.execute("DELETE FROM permission_rules WHERE id = ?1", [id])? > 0)
}

pub(super) fn insert_audit(c: &Connection, e: &NewAudit) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO permission_audit (at, task_id, request_id, event, decision, actor, rule, summary) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![e.at, e.task_id, e.request_id, e.event, e.decision, e.actor, e.rule, e.summary],
    )?;
    Ok(())
}

/// What else `audit` keeps entries by: who (`local` or `device:ID`, the one
/// who started the task or answered) and the decision (`once`, `always`, `reject`).
#[derive(Debug, Clone, Default)]
pub(super) struct AuditFilter {
    pub principal: Option<String>,
    pub decision: Option<&'static str>,
}

pub(super) fn audit(
    c: &Connection,
    task_id: Option<&str>,
    before: Option<i64>,
    limit: u32,
    filter: &AuditFilter,
) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = c.prepare_cached(
        "SELECT a.rowid, a.at, a.task_id, a.request_id, a.event, a.decision, a.actor, a.rule, a.summary, t.created_by \
         FROM permission_audit AS a LEFT JOIN tasks AS t ON t.id = a.task_id \
         WHERE (?1 IS NULL OR a.task_id = ?1) AND (?2 IS NULL OR a.rowid < ?2) \
         AND (?4 IS NULL OR a.actor = ?4 OR t.created_by = ?4) AND (?5 IS NULL OR a.decision = ?5) \
         ORDER BY a.rowid DESC LIMIT ?3",
    )?;
    let bound = params![task_id, before, limit, filter.principal, filter.decision];
    let rows = stmt.query_map(bound, |row| {
        let decision: Option<String> = row.get(5)?;
        Ok(AuditEntry {
            entry_id: row.get(0)?,
            at: clock::rfc3339(row.get(1)?),
            task_id: row.get(2)?,
            request_id: row.get(3)?,
            event: row.get(4)?,
            decision: decision.and_then(|d| match d.as_str() {
                "once" => Some(Decision::Once),
                "always" => Some(Decision::Always),
                "reject" => Some(Decision::Reject),
                _ => None,
            }),
            actor: row.get(6)?,
            rule: row.get(7)?,
            summary: row.get(8)?,
            task_started_by: row.get(9)?,
        })
    })?;
    rows.collect()
}

/// Marks requests with no outcome as expired (the host stopped while they waited).
pub(super) fn expire_unanswered(c: &Connection, now: i64) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT INTO permission_audit (at, task_id, request_id, event, decision, summary) \
         SELECT ?1, task_id, request_id, 'expired', 'reject', 'the host stopped before anyone answered' \
         FROM permission_audit AS r WHERE r.event = 'requested' AND NOT EXISTS \
           (SELECT 1 FROM permission_audit AS o WHERE o.request_id = r.request_id AND o.rowid > r.rowid)",
        [now],
    )
}
