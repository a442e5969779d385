//! The SQL behind tasks and their log chunks.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::stored::{self, StoredData};

use crate::clock;
use crate::protocol::{LogStream, TaskCounts, TaskOutcomes, TaskRecord, TaskStatus, TaskUpdate};

/// A task row about to be inserted.
pub(crate) struct NewTask {
    pub id: String,
    pub runtime: String,
    pub title: Option<String>,
    pub argv: Option<Vec<String>>,
    pub command: Option<String>,
    pub cwd: String,
    pub timeout_s: Option<u64>,
    pub created_by: String,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub created_at: i64,
    pub prompt: Option<String>,
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub agent: Option<String>,
}

/// A change of a task's status, with what goes with it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatusChange {
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub pgid: Option<i32>,
    pub session_id: Option<String>,
}

const TASK_COLUMNS: &str = "rowid, id, status, runtime, title, argv, command, cwd, timeout_s, exit_code, signal, error, \
     created_at, started_at, finished_at, \
     COALESCE((SELECT MAX(id) FROM log_chunks WHERE id BETWEEN tasks.rowid << 32 AND (tasks.rowid << 32) | 4294967295) & 4294967295, 0), \
     prompt, session_id, model, agent, created_by";
/// How many columns `TASK_COLUMNS` selects (`task_from_row` reads 0 to 20):
/// a query that selects more after them reads those from this index on.
const TASK_COLUMN_COUNT: usize = 21;

/// The key of a chunk: the task's row id in the high 32 bits, the seq in the low.
fn chunk_key(task_rowid: i64, seq: u64) -> i64 {
    (task_rowid << 32) | (seq.min(u64::from(u32::MAX)) as i64)
}

/// A task's row id and record.
pub(crate) struct StoredTask {
    pub rowid: i64,
    pub record: TaskRecord,
}

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<StoredTask> {
    let status: String = row.get(2)?;
    let argv: Option<String> = row.get(5)?;
    Ok(StoredTask {
        rowid: row.get(0)?,
        record: TaskRecord {
            task_id: row.get(1)?,
            status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Interrupted),
            runtime: row.get(3)?,
            title: row.get(4)?,
            argv: argv.and_then(|a| serde_json::from_str(&a).ok()),
            command: row.get(6)?,
            cwd: row.get(7)?,
            timeout_s: row.get::<_, Option<i64>>(8)?.map(|t| t as u64),
            exit_code: row.get(9)?,
            signal: row.get(10)?,
            error: row.get(11)?,
            created_at: clock::rfc3339(row.get(12)?),
            started_at: row.get::<_, Option<i64>>(13)?.map(clock::rfc3339),
            finished_at: row.get::<_, Option<i64>>(14)?.map(clock::rfc3339),
            last_seq: row.get::<_, i64>(15)? as u64,
            prompt: row.get(16)?,
            session_id: row.get(17)?,
            model: row.get(18)?,
            agent: row.get(19)?,
            created_by: row.get(20)?,
        },
    })
}

/// The update notification that describes a record's current status.
pub(crate) fn update_of(record: &TaskRecord) -> TaskUpdate {
    TaskUpdate {
        task_id: record.task_id.clone(),
        status: record.status,
        exit_code: record.exit_code,
        signal: record.signal.clone(),
        error: record.error.clone(),
    }
}

pub(crate) fn insert_task(conn: &Connection, task: &NewTask) -> rusqlite::Result<i64> {
    let argv = task
        .argv
        .as_ref()
        .map(|a| serde_json::to_string(a).unwrap_or_default());
    conn.execute(
        "INSERT INTO tasks (id, runtime, title, argv, command, cwd, timeout_s, status, created_by, \
         idempotency_key, request_hash, created_at, prompt, session_id, model, agent) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            task.id,
            task.runtime,
            task.title,
            argv,
            task.command,
            task.cwd,
            task.timeout_s.map(|t| t as i64),
            task.created_by,
            task.idempotency_key,
            task.request_hash,
            task.created_at,
            task.prompt,
            task.session_id,
            task.model,
            task.agent
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn get_task(conn: &Connection, id: &str) -> rusqlite::Result<Option<StoredTask>> {
    conn.query_row(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
        [id],
        task_from_row,
    )
    .optional()
}

/// The task a principal created with an idempotency key, with the hash of its request.
pub(crate) fn find_by_idempotency_key(
    conn: &Connection,
    created_by: &str,
    key: &str,
) -> rusqlite::Result<Option<(StoredTask, Option<String>)>> {
    conn.query_row(
        &format!("SELECT {TASK_COLUMNS}, request_hash FROM tasks WHERE created_by = ?1 AND idempotency_key = ?2"),
        [created_by, key],
        |row| Ok((task_from_row(row)?, row.get(TASK_COLUMN_COUNT)?)),
    )
    .optional()
}

/// Tasks newest first, optionally by status and before a given task.
pub(crate) fn list_tasks(
    conn: &Connection,
    status: Option<TaskStatus>,
    before_rowid: Option<i64>,
    limit: u32,
) -> rusqlite::Result<Vec<TaskRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR rowid < ?2) \
         ORDER BY rowid DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![status.map(TaskStatus::as_str), before_rowid, limit],
        task_from_row,
    )?;
    rows.map(|r| r.map(|t| t.record)).collect()
}

pub(crate) fn rowid_of(conn: &Connection, id: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT rowid FROM tasks WHERE id = ?1", [id], |r| r.get(0))
        .optional()
}

pub(crate) fn set_status(
    conn: &Connection,
    rowid: i64,
    status: TaskStatus,
    change: &StatusChange,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE tasks SET status = ?2, exit_code = COALESCE(?3, exit_code), signal = COALESCE(?4, signal), \
         error = COALESCE(?5, error), started_at = COALESCE(?6, started_at), \
         finished_at = COALESCE(?7, finished_at), pgid = COALESCE(?8, pgid), \
         session_id = COALESCE(?9, session_id) WHERE rowid = ?1",
        params![
            rowid,
            status.as_str(),
            change.exit_code,
            change.signal,
            change.error,
            change.started_at,
            change.finished_at,
            change.pgid,
            change.session_id
        ],
    )?;
    Ok(())
}

pub(crate) fn insert_chunk(
    conn: &Connection,
    rowid: i64,
    seq: u64,
    stream: LogStream,
    ts: i64,
    data: &StoredData,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO log_chunks (id, stream, ts, data, codec) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        chunk_key(rowid, seq),
        stream.code(),
        ts,
        data.blob(),
        data.codec()
    ])?;
    Ok(())
}

/// One stored chunk, its bytes borrowed for the length of a visit.
pub(crate) struct ChunkRef<'a> {
    pub seq: u64,
    pub stream: LogStream,
    pub ts: i64,
    pub data: &'a [u8],
}

/// Calls `visit` with a task's chunks `from <= seq <= upto` in order (seqs
/// past 2^32 - 1 are not stored), stopping after `limit` chunks or once
/// `max_bytes` were visited (always at least one). Chunks are decoded into
/// one reused buffer: nothing is allocated per chunk.
pub(crate) fn visit_chunks(
    conn: &Connection,
    rowid: i64,
    from: u64,
    upto: u64,
    limit: u32,
    max_bytes: usize,
    mut visit: impl FnMut(ChunkRef<'_>),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT id & 4294967295, stream, ts, data, codec FROM log_chunks WHERE id BETWEEN ?1 AND ?2 ORDER BY id LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![
        chunk_key(rowid, from),
        chunk_key(rowid, upto),
        limit
    ])?;
    let mut decoder = stored::Decoder::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let data = decoder
            .decode(row.get(4)?, row.get_ref(3)?.as_blob()?)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, Type::Blob, Box::new(e)))?;
        bytes += data.len();
        visit(ChunkRef {
            seq: row.get::<_, i64>(0)? as u64,
            stream: LogStream::from_code(row.get(1)?),
            ts: row.get(2)?,
            data,
        });
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(())
}

/// Marks every task that was not finished as interrupted; returns how many.
pub(crate) fn interrupt_unfinished(conn: &Connection, now: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE tasks SET status = 'interrupted', finished_at = ?1, error = CASE status \
           WHEN 'queued' THEN 'the host stopped before the task started' \
           ELSE 'the host stopped while the task was running' END \
         WHERE status IN ('queued', 'running', 'waiting_permission')",
        [now],
    )
}

pub(crate) fn count_by_status(conn: &Connection) -> rusqlite::Result<TaskCounts> {
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM tasks GROUP BY status")?;
    let mut counts = TaskCounts::default();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (status, n) = row?;
        if let Some(status) = TaskStatus::parse(&status) {
            counts.add(status, n as u64);
        }
    }
    Ok(counts)
}

/// How the tasks that finished at or after `since` (ms since the epoch) ended.
pub(crate) fn outcomes_since(conn: &Connection, since: i64) -> rusqlite::Result<TaskOutcomes> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, COUNT(*) FROM tasks WHERE finished_at >= ?1 GROUP BY status",
    )?;
    let mut outcomes = TaskOutcomes::default();
    let rows = stmt.query_map([since], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (status, n) = row?;
        if let Some(status) = TaskStatus::parse(&status) {
            outcomes.add(status, n as u64);
        }
    }
    Ok(outcomes)
}

/// How the tasks that finished at or after `since` (ms since the epoch)
/// ended, hour by hour: `(hour start in ms, status, count)`.
pub(crate) fn outcomes_by_hour(
    conn: &Connection,
    since: i64,
) -> rusqlite::Result<Vec<(i64, TaskStatus, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT finished_at / 3600000 * 3600000, status, COUNT(*) FROM tasks \
         WHERE finished_at >= ?1 GROUP BY 1, 2",
    )?;
    let rows = stmt.query_map([since], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hour, status, n) = row?;
        if let Some(status) = TaskStatus::parse(&status) {
            out.push((hour, status, n as u64));
        }
    }
    Ok(out)
}

/// The task that finished last.
pub(crate) fn last_finished(conn: &Connection) -> rusqlite::Result<Option<TaskRecord>> {
    conn.query_row(
        &format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE finished_at IS NOT NULL \
             ORDER BY finished_at DESC, rowid DESC LIMIT 1"
        ),
        [],
        task_from_row,
    )
    .optional()
    .map(|t| t.map(|t| t.record))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::migrations::{MIGRATIONS, migrate};

    #[test]
    fn chunks_from_before_compression_and_after_read_back_exactly() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A database as a host before migration 6 left it, with one chunk.
        for m in &MIGRATIONS[..5] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        let old = "written by an older host\n".repeat(100);
        conn.execute(
            "INSERT INTO log_chunks (id, stream, ts, data) VALUES (?1, 0, 5, ?2)",
            params![chunk_key(1, 1), old.as_bytes()],
        )
        .unwrap();
        migrate(&mut conn).unwrap();

        let text = Bytes::from("compressible line\n".repeat(500));
        let short = Bytes::from_static(b"short");
        insert_chunk(
            &conn,
            1,
            2,
            LogStream::Stdout,
            6,
            &stored::Compressor::new().encode(&text),
        )
        .unwrap();
        insert_chunk(
            &conn,
            1,
            3,
            LogStream::Stderr,
            7,
            &stored::Compressor::new().encode(&short),
        )
        .unwrap();
        let stored: i64 = conn
            .query_row(
                "SELECT length(data) FROM log_chunks WHERE id = ?1",
                [chunk_key(1, 2)],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            (stored as usize) < text.len() / 4,
            "kept compressed: {stored}"
        );

        let read = |from, upto| {
            let mut rows = Vec::new();
            visit_chunks(&conn, 1, from, upto, 10, usize::MAX, |r| {
                rows.push((r.seq, r.data.to_vec()))
            })
            .map(|()| rows)
        };
        let rows = read(1, 3).unwrap();
        let got: Vec<(u64, &[u8])> = rows.iter().map(|(seq, data)| (*seq, &data[..])).collect();
        assert_eq!(
            got,
            [(1, old.as_bytes()), (2, &text[..]), (3, &short[..])],
            "every chunk reads back as written"
        );

        // A damaged row is an error naming the problem, not a panic or wrong bytes.
        conn.execute(
            "UPDATE log_chunks SET data = x'ffffff7f00' WHERE id = ?1",
            [chunk_key(1, 2)],
        )
        .unwrap();
        let err = read(2, 2).unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
    }
}
