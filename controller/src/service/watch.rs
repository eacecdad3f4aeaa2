//! Watching tasks: how many watches a user may hold open, and one reader of the store
//! per watched task whose events every watch of that task shares.
//!
//! Each watch used to poll the store for itself, every second and at every event:
//! 60,000 watches from one user took 600 MB, filled the database pool and slowed a
//! plain read to 4 s. Now a user holds at most `max_per_user` watches across both faces
//! (the next is refused before any store read), and a task's live events are read once,
//! by its [`Feed`], into a window every watch of it reads from. A watch that starts
//! behind the window (a replay from `after`) or falls behind it (a slow client) reads
//! what it missed from the store itself, page by page as its client takes them, then
//! joins the window.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::Stream;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::broadcast::error::RecvError;

use super::CoreError;
use crate::model::{TaskEvent, TaskStatus};
use crate::store::Store;

/// How often a task's reader reads the store when no wake-up came: what another
/// controller sharing the store writes is seen this late at worst.
pub(super) const WATCH_POLL: Duration = Duration::from_secs(1);

/// Watches a user may hold open at once, by default (`--max-watches-per-user`).
pub const DEFAULT_MAX_WATCHES_PER_USER: usize = 64;

/// Events a feed keeps for watches that are a little behind; one further behind reads
/// the store.
const WINDOW: usize = 1024;

/// Events read from the store at once.
const PAGE: i64 = 500;

/// The watches of this controller.
pub(super) struct Watches {
    store: Store,
    max_per_user: usize,
    open: Mutex<HashMap<String, usize>>,
    feeds: Mutex<HashMap<i64, Weak<Feed>>>,
}

impl Watches {
    pub(super) fn new(store: Store, max_per_user: usize) -> Arc<Watches> {
        Arc::new(Watches {
            store,
            max_per_user,
            open: Mutex::new(HashMap::new()),
            feeds: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more watch of `user`, or the refusal that names the limit.
    pub(super) fn admit(self: &Arc<Self>, user: &str) -> Result<Slot, CoreError> {
        let mut open = lock(&self.open);
        let held = open.entry(user.to_string()).or_default();
        if *held >= self.max_per_user {
            return Err(CoreError::TooManyWatches {
                user: user.to_string(),
                limit: self.max_per_user,
            });
        }
        *held += 1;
        Ok(Slot {
            watches: self.clone(),
            user: user.to_string(),
        })
    }

    /// The events of `task_id` after `after`, in order, until the task is no longer
    /// RUNNING and everything was delivered. `slot` is held as long as the stream is.
    pub(super) fn stream(
        self: &Arc<Self>,
        slot: Slot,
        task_id: i64,
        after: i64,
    ) -> impl Stream<Item = Result<TaskEvent, CoreError>> + use<> {
        let feed = self.feed(task_id);
        let watch = Watch {
            changes: feed.changes.subscribe(),
            feed,
            store: self.store.clone(),
            task_id,
            after,
            buffer: VecDeque::new(),
            ended: false,
            slot,
        };
        futures::stream::unfold(watch, |mut w| async move {
            let next = w.next().await;
            next.map(|item| (item, w))
        })
    }

    /// The task's live feed, started if no watch of it is open or its last one ended
    /// (a task reopened by a retry has news again).
    fn feed(&self, task_id: i64) -> Arc<Feed> {
        let mut feeds = lock(&self.feeds);
        if let Some(feed) = feeds.get(&task_id).and_then(Weak::upgrade)
            && !lock(&feed.window).ended
            && !lock(&feed.window).lost
        {
            return feed;
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let (changes, _) = tokio::sync::watch::channel(());
        let feed = Arc::new(Feed {
            window: Mutex::new(Window {
                from: i64::MAX,
                events: VecDeque::new(),
                ended: false,
                lost: false,
            }),
            changes,
        });
        feeds.insert(task_id, Arc::downgrade(&feed));
        tokio::spawn(read(self.store.clone(), task_id, Arc::downgrade(&feed)));
        feed
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock()
}

/// One open watch of a user; gives its place back when dropped.
pub(super) struct Slot {
    watches: Arc<Watches>,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.watches.open);
        if let Some(held) = open.get_mut(&self.user) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// A task's live events, read once for all its watches.
struct Feed {
    window: Mutex<Window>,
    /// Told whenever the window changed.
    changes: tokio::sync::watch::Sender<()>,
}

struct Window {
    /// Every event of the task after `from` that the reader has read is in `events`;
    /// `i64::MAX` until its first read.
    from: i64,
    events: VecDeque<TaskEvent>,
    /// The task is no longer RUNNING and its last events are in the window.
    ended: bool,
    /// The reader stopped before the end (it panicked): the watches must start over.
    lost: bool,
}

/// What a watch finds in the window.
enum Found {
    Events(Vec<TaskEvent>),
    /// It is behind the window: events after it may be missing, read them from the store.
    Behind {
        from: i64,
    },
    Ended,
    Lost,
    Nothing,
}

impl Window {
    fn after(&self, seq: i64) -> Found {
        if seq < self.from {
            return Found::Behind { from: self.from };
        }
        let start = self.events.partition_point(|e| e.seq <= seq);
        if start < self.events.len() {
            let end = self.events.len().min(start + PAGE as usize);
            return Found::Events(self.events.range(start..end).cloned().collect());
        }
        if self.ended {
            Found::Ended
        } else if self.lost {
            Found::Lost
        } else {
            Found::Nothing
        }
    }

    fn push(&mut self, events: Vec<TaskEvent>) {
        self.events.extend(events);
        while self.events.len() > WINDOW {
            if let Some(dropped) = self.events.pop_front() {
                self.from = dropped.seq;
            }
        }
    }
}

/// The task's reader: from its latest event on, reads what comes into the window when
/// the store says the task has news (or every WATCH_POLL), until the task is no longer
/// RUNNING, or no watch of it is left. A store that fails is tried again at the next
/// round; the watches wait meanwhile.
async fn read(store: Store, task_id: i64, feed: Weak<Feed>) {
    let _lost = Lost(feed.clone());
    let mut news = store.subscribe();
    let mut cursor = None;
    let mut failing = false;
    loop {
        let Some(live) = feed.upgrade() else { return };
        match read_once(&store, task_id, &mut cursor, &live).await {
            Ok(Round::Ended) => return,
            Ok(Round::More) => continue,
            Ok(Round::Idle) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(task_id, "reading the task's events for its watches: {e}");
                }
                failing = true;
            }
        }
        drop(live);
        let _ = tokio::time::timeout(WATCH_POLL, wait_for_news(&mut news, task_id)).await;
    }
}

/// Tells the watches when their reader stopped before the task's end (a panic).
struct Lost(Weak<Feed>);

impl Drop for Lost {
    fn drop(&mut self) {
        if let Some(feed) = self.0.upgrade() {
            let mut window = lock(&feed.window);
            if !window.ended {
                window.lost = true;
                drop(window);
                feed.changes.send_replace(());
            }
        }
    }
}

/// What one round of the reader came to.
enum Round {
    /// A full page came: there may be more at once.
    More,
    Idle,
    Ended,
}

async fn read_once(
    store: &Store,
    task_id: i64,
    cursor: &mut Option<i64>,
    feed: &Feed,
) -> Result<Round, CoreError> {
    let (after, first) = match *cursor {
        Some(after) => (after, false),
        None => {
            let latest = store.last_event_seq(task_id).await?;
            lock(&feed.window).from = latest;
            *cursor = Some(latest);
            (latest, true)
        }
    };
    // The status is read before the events, so a task that ends in between still has
    // its last events read on the next round.
    let status = store.task_status(task_id).await?;
    let events = store.events_after(task_id, after, PAGE).await?;
    if let Some(last) = events.last() {
        *cursor = Some(last.seq);
        let full = events.len() == PAGE as usize;
        lock(&feed.window).push(events);
        feed.changes.send_replace(());
        return Ok(if full { Round::More } else { Round::Idle });
    }
    if status == Some(TaskStatus::Running) {
        if first {
            // The watches waiting to learn where the window starts.
            feed.changes.send_replace(());
        }
        return Ok(Round::Idle);
    }
    lock(&feed.window).ended = true;
    feed.changes.send_replace(());
    Ok(Round::Ended)
}

async fn wait_for_news(news: &mut tokio::sync::broadcast::Receiver<i64>, task_id: i64) {
    loop {
        match news.recv().await {
            Ok(id) if id == task_id => return,
            Ok(_) => {}
            // Missed some: read the store to be sure.
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// One client's watch: what it has been sent up to, and what it is about to be.
struct Watch {
    feed: Arc<Feed>,
    changes: tokio::sync::watch::Receiver<()>,
    store: Store,
    task_id: i64,
    after: i64,
    buffer: VecDeque<TaskEvent>,
    ended: bool,
    /// This watch's place among its user's; also the way back to a new feed.
    slot: Slot,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<TaskEvent, CoreError>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event.seq;
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            // Marked seen before the look, so that a change after it wakes this watch.
            self.changes.borrow_and_update();
            let found = lock(&self.feed.window).after(self.after);
            match found {
                Found::Events(events) => self.buffer.extend(events),
                Found::Behind { from } => {
                    match self
                        .store
                        .events_after(self.task_id, self.after, PAGE)
                        .await
                    {
                        Ok(events) if events.is_empty() => {
                            // Nothing after it in the store now, so nothing up to the
                            // window's start either (those were read before `from` was).
                            if from != i64::MAX {
                                self.after = self.after.max(from);
                            } else if self.changes.changed().await.is_err() {
                                return None;
                            }
                        }
                        Ok(events) => self.buffer.extend(events),
                        Err(e) => return Some(Err(e.into())),
                    }
                }
                Found::Ended => {
                    // A retry may have reopened the task since its feed ended: then the
                    // watch goes on with a new feed.
                    match self.store.task_status(self.task_id).await {
                        Ok(Some(TaskStatus::Running)) => {
                            self.feed = self.slot.watches.feed(self.task_id);
                            self.changes = self.feed.changes.subscribe();
                        }
                        Ok(_) => self.ended = true,
                        Err(e) => return Some(Err(e.into())),
                    }
                }
                Found::Lost => {
                    self.ended = true;
                    return Some(Err(CoreError::WatchLost {
                        task_id: self.task_id,
                        after: self.after,
                    }));
                }
                Found::Nothing => {
                    if self.changes.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, Operation};

    fn event(seq: i64) -> TaskEvent {
        TaskEvent {
            seq,
            task_id: 1,
            change: Change::Task(TaskStatus::Running),
            operation: Operation::Execute,
            at: 0,
            message: String::new(),
            subtask: None,
        }
    }

    fn seqs(found: Found) -> Vec<i64> {
        match found {
            Found::Events(events) => events.iter().map(|e| e.seq).collect(),
            Found::Behind { from } => vec![-from],
            Found::Ended => vec![-1],
            Found::Lost => vec![-2],
            Found::Nothing => vec![],
        }
    }

    #[test]
    fn a_watch_reads_what_follows_its_last_event_and_is_told_when_it_is_behind() {
        let mut window = Window {
            from: 10,
            events: VecDeque::new(),
            ended: false,
            lost: false,
        };
        assert_eq!(seqs(window.after(10)), Vec::<i64>::new(), "nothing yet");
        assert_eq!(seqs(window.after(3)), vec![-10], "a replay reads the store");
        window.push(vec![event(12), event(15), event(16)]);
        assert_eq!(seqs(window.after(10)), vec![12, 15, 16]);
        assert_eq!(seqs(window.after(12)), vec![15, 16]);
        assert_eq!(seqs(window.after(16)), Vec::<i64>::new());
        window.ended = true;
        assert_eq!(seqs(window.after(16)), vec![-1], "all delivered: the end");
        assert_eq!(
            seqs(window.after(15)),
            vec![16],
            "the end only after the last"
        );
    }

    #[test]
    fn the_window_keeps_its_newest_events_and_moves_its_start() {
        let mut window = Window {
            from: 0,
            events: VecDeque::new(),
            ended: false,
            lost: false,
        };
        window.push((1..=WINDOW as i64 + 10).map(event).collect());
        assert_eq!(window.events.len(), WINDOW);
        assert_eq!(window.from, 10);
        assert_eq!(
            seqs(window.after(5)),
            vec![-10],
            "dropped: read from the store"
        );
        assert_eq!(
            seqs(window.after(10)).len(),
            PAGE as usize,
            "a page at a time"
        );
    }
}
