//! The schema as an append-only list of migrations, tracked by `PRAGMA user_version`.
//!
//! Never edit a migration that has shipped: add a new one at the end.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Every migration in order; `user_version` counts how many have been applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: tasks, their log chunks, and counters.
    r#"
    CREATE TABLE tasks (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        runtime TEXT NOT NULL,
        title TEXT,
        argv TEXT,
        command TEXT,
        cwd TEXT NOT NULL,
        timeout_s INTEGER,
        status TEXT NOT NULL,
        exit_code INTEGER,
        signal TEXT,
        error TEXT,
        created_by TEXT NOT NULL,
        idempotency_key TEXT,
        request_hash TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        pgid INTEGER
    );
    CREATE UNIQUE INDEX tasks_by_idempotency_key ON tasks(created_by, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX tasks_by_status ON tasks(status, rowid);
    -- Keyed by `task << 32 | seq` alone: one B-tree, so a commit of a chunk
    -- rewrites one leaf page rather than a table's and an index's.
    CREATE TABLE log_chunks (
        id INTEGER PRIMARY KEY,
        stream INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: paired devices and pairing attempts.
    r#"
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        scopes TEXT NOT NULL,
        paired_at INTEGER NOT NULL,
        last_seen_at INTEGER,
        last_address TEXT,
        revoked_at INTEGER
    );
    CREATE TABLE pairing_attempts (
        rowid INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        address TEXT NOT NULL,
        device_name TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    "#,
    // 3: remembered permission rules and the permission audit trail.
    r#"
    CREATE TABLE permission_rules (
        id TEXT PRIMARY KEY,
        runtime TEXT NOT NULL,
        kind TEXT NOT NULL,
        program TEXT,
        directory TEXT,
        pattern TEXT,
        description TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE permission_audit (
        rowid INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        request_id TEXT,
        event TEXT NOT NULL,
        decision TEXT,
        actor TEXT,
        rule TEXT,
        summary TEXT NOT NULL
    );
    CREATE INDEX permission_audit_by_task ON permission_audit(task_id, rowid);
    "#,
    // 4: OpenCode tasks: the prompt, its session, model and agent.
    r#"
    ALTER TABLE tasks ADD COLUMN prompt TEXT;
    ALTER TABLE tasks ADD COLUMN session_id TEXT;
    ALTER TABLE tasks ADD COLUMN model TEXT;
    ALTER TABLE tasks ADD COLUMN agent TEXT;
    "#,
    // 5: health: the store check's probe row, and tasks by finish time for
    // the success rates and the last outcome.
    r#"
    CREATE TABLE health_probe (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at INTEGER NOT NULL
    );
    CREATE INDEX tasks_by_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
    "#,
    // 6: how a chunk's data is stored: 0 as written, 1 LZ4-compressed (see
    // `execution::stored`). Older rows are all 0.
    r#"
    ALTER TABLE log_chunks ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
    "#,
    // 7: a browser's credential: the public key (SPKI DER, P-256) its
    // signatures are checked with. A device with a key has no token (its
    // token_hash is empty, which no token hashes to).
    r#"
    ALTER TABLE devices ADD COLUMN public_key BLOB;
    "#,
    // 8: the counters hour by hour (`metrics.series`), keyed by the hour's
    // start in ms since the epoch.
    r#"
    CREATE TABLE counter_hours (
        hour INTEGER NOT NULL,
        name TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (hour, name)
    ) WITHOUT ROWID;
    "#,
];

/// Brings the schema up to date in one exclusive transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for migration in &MIGRATIONS[found as usize..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        conn.execute("INSERT INTO counters(name, value) VALUES ('x', 1)", [])
            .unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(StoreError::TooNew { found: 999, .. })
        ));
    }
}
