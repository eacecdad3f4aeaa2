//! Subtask log lines, written in batches by one task instead of one transaction each:
//! a 1,000-host stage logs thousands of lines within milliseconds, and each commit on
//! SQLite's single writer would make every host wait for the others.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{LogEntry, Store};

/// How many lines one transaction takes at most.
const BATCH: usize = 1000;

enum Entry {
    Line(LogEntry),
    /// Answered once every line sent before it is in the store.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(crate) struct LogBook {
    entries: mpsc::UnboundedSender<Entry>,
}

impl LogBook {
    /// Starts the writer; it drains what is left and stops when `cancel` fires.
    pub fn start(store: Store, tracker: &TaskTracker, cancel: CancellationToken) -> LogBook {
        let (entries, rx) = mpsc::unbounded_channel();
        tracker.spawn(write(store, rx, cancel));
        LogBook { entries }
    }

    pub fn write(&self, entry: LogEntry) {
        if self.entries.send(Entry::Line(entry)).is_err() {
            tracing::warn!("subtask log writer has stopped; a line is lost");
        }
    }

    /// Waits until every line written so far is stored, so that what the engine records
    /// next (a failure's reason) comes after them.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.entries.send(Entry::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

async fn write(store: Store, mut rx: mpsc::UnboundedReceiver<Entry>, cancel: CancellationToken) {
    loop {
        let first = tokio::select! {
            entry = rx.recv() => entry,
            _ = cancel.cancelled() => {
                // What the runners logged before they stopped still goes in.
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { return };
        let mut lines = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(entry) = next {
            match entry {
                Entry::Line(line) => lines.push(line),
                Entry::Flush(done) => flushes.push(done),
            }
            next = if lines.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let mut pause = Duration::from_millis(100);
        while let Err(e) = store.append_logs(&lines).await {
            tracing::warn!(
                "writing {} subtask log lines failed, retrying: {e}",
                lines.len()
            );
            if cancel.is_cancelled() {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
