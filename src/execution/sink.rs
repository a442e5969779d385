//! Where a running task writes: each chunk and status change goes to the store
//! and is published to subscribers once committed.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::live::TaskLive;
use super::records::{self, StatusChange};
use super::stored::Compressor;
use crate::clock;
use crate::protocol::{LogStream, TaskStatus, TaskUpdate};
use crate::store::{Store, StoreError};

/// Writes one task's output and status, assigning seqs in order.
pub(crate) struct Sink {
    store: Store,
    live: Arc<TaskLive>,
    next_seq: u64,
    compressor: Compressor,
}

impl Sink {
    pub(crate) fn new(store: Store, live: Arc<TaskLive>) -> Sink {
        let next_seq = live.committed_seq() + 1;
        Sink {
            store,
            live,
            next_seq,
            compressor: Compressor::new(),
        }
    }

    pub(crate) fn live(&self) -> &Arc<TaskLive> {
        &self.live
    }

    /// Queues a chunk; it reaches subscribers once committed.
    pub(crate) async fn chunk(&mut self, stream: LogStream, data: Bytes) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let ts = clock::now_ms();
        let rowid = self.live.rowid;
        let live = Arc::clone(&self.live);
        // Compressed here, on the task's own thread, so the store's single
        // writer only copies what is left.
        let stored = self.compressor.encode(&data);
        self.store
            .submit_append(
                stored.blob().len(),
                Box::new(move |conn| records::insert_chunk(conn, rowid, seq, stream, ts, &stored)),
                Box::new(move |result| match result {
                    Ok(()) => live.publish_chunk(seq, stream, ts, data),
                    Err(e) => {
                        tracing::error!(task = %live.task_id, seq, error = %e, "could not store a log chunk");
                        live.publish_store_error(e);
                    }
                }),
            )
            .await
    }

    /// Queues a status change; the receiver learns when it is committed.
    pub(crate) async fn status(
        &mut self,
        status: TaskStatus,
        change: StatusChange,
    ) -> oneshot::Receiver<()> {
        let update = TaskUpdate {
            task_id: self.live.task_id.clone(),
            status,
            exit_code: change.exit_code,
            signal: change.signal.clone(),
            error: change.error.clone(),
        };
        let (done_tx, done_rx) = oneshot::channel();
        let rowid = self.live.rowid;
        let live = Arc::clone(&self.live);
        let published = Arc::clone(&self.live);
        let fallback = update.clone();
        let submitted = self
            .store
            .submit(
                Box::new(move |conn| records::set_status(conn, rowid, status, &change)),
                Box::new(move |result| {
                    if let Err(e) = result {
                        tracing::error!(task = %live.task_id, error = %e, "could not store a status change");
                        live.publish_store_error(e);
                    }
                    // Subscribers learn the status even if saving it failed:
                    // better a status the store lacks than a client waiting forever.
                    live.publish_transition(&update);
                    let _ = done_tx.send(());
                }),
            )
            .await;
        if submitted.is_err() {
            published.publish_transition(&fallback);
        }
        done_rx
    }
}
