//! Reading the end of a process's log file and following what is appended to it: the
//! file work of `TailLog`, all of it on the blocking pool, since the agent's runtime
//! has one thread that nothing may hold up.
//!
//! Cost: the last N lines are found from the end of the file, read backwards one
//! 64 KiB block at a time until they hold N lines, so tailing a 1 GB log costs what
//! tailing a 1 KB log with the same last lines costs; the whole file is never read.
//! What one call sends first is capped: at most [`MAX_LINES`] lines, and only the lines
//! within the file's last [`MAX_TAIL_BYTES`] (the first message then says `truncated`).
//! Memory: the blocks are copied once into a buffer of the tail's exact size, each
//! freed as it is copied, and the text becomes messages one at a time as they are sent,
//! so a call holds about its tail once, not twice; the service also bounds how many
//! calls run at once.
//!
//! Following polls the file every [`POLL`] rather than watching it with inotify: a
//! quarter of a second is soon enough for an operator reading a log, and a stat per
//! follower per poll costs nothing. A file that shrank was truncated in place
//! (copytruncate) and is read again from its start; a path that names another file
//! than the one open was replaced (rotated by rename): the old file is read to its end,
//! then the new one from its start. Either way the next message says `rotated`.
//!
//! Safety: the agent often runs as root, and the log's folder is often writable by the
//! process's user, who could put a link to `/etc/shadow` or a FIFO where the log was.
//! Every open, the first and each after a rotation, goes through [`open_log`]: it does
//! not follow a symlink, does not wait on a FIFO, and reads only a regular file owned
//! by root, the agent's user or the process's user, as judged on the file it opened.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use proto::agent::v1::LogChunk;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod open;

pub(crate) use open::Owners;
use open::open_log;

/// The most lines one call may ask for.
pub const MAX_LINES: u32 = 10_000;
/// The most bytes the first messages of a call carry, whatever `lines` asks: 10,000
/// lines of a log with very long lines must not cost the agent hundreds of MB, nor
/// sixteen calls at once more than 64 MiB.
pub const MAX_TAIL_BYTES: u64 = 4 << 20;
/// What one read from the end of the file takes.
const BLOCK: u64 = 64 << 10;
/// The most text per message, well below gRPC's usual 4 MiB limit on a message.
const CHUNK_BYTES: usize = 1 << 20;
/// While following, a line still being written is held back until its newline comes,
/// so that messages carry whole lines; one that grows this long without one is sent.
const MAX_PARTIAL: usize = 64 << 10;
/// How often a followed file is looked at.
pub const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("no log file yet at {}", .0.display())]
    NotYet(PathBuf),
    #[error("cannot read the log file {}: {error}", .path.display())]
    Unreadable { path: PathBuf, error: io::Error },
    #[error("the log file {} {why}: refusing to read it", .path.display())]
    Refused { path: PathBuf, why: String },
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// The messages of one `TailLog` call.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<LogChunk, TailError>> + Send>>;

/// The last `lines` lines of the log at `path` and, with `follow`, what is appended to
/// it until the receiver goes away or `shutdown` fires (the stream then ends with
/// [`TailError::ShuttingDown`]). `user` is the process's configured user, who may own
/// the file as well as root and the agent's user.
pub async fn tail(
    path: PathBuf,
    user: Option<String>,
    lines: u32,
    follow: bool,
    shutdown: CancellationToken,
) -> Result<ChunkStream, TailError> {
    let opened = path.clone();
    let (follower, first) = tokio::task::spawn_blocking(move || {
        let owners = Owners::of(user.as_deref());
        start(opened, &owners, lines, follow)
    })
    .await
    .map_err(|e| unreadable(&path, io::Error::other(e)))??;
    if !follow {
        return Ok(Box::pin(futures::stream::iter(first.map(Ok))));
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(follow_file(follower, first, tx, shutdown).in_current_span());
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })))
}

fn unreadable(path: &Path, error: io::Error) -> TailError {
    TailError::Unreadable {
        path: path.to_path_buf(),
        error,
    }
}

/// Opens the log and reads its last lines (blocking). While following, a last line
/// without its newline is held back, to come whole with the appended text.
fn start(
    path: PathBuf,
    owners: &Owners,
    lines: u32,
    follow: bool,
) -> Result<(Follower, Messages), TailError> {
    let fail = |e: io::Error| unreadable(&path, e);
    let (file, _) = open_log(&path, owners)?;
    let (meta, mut tail) = read_tail_of(&file, lines as usize).map_err(fail)?;
    tracing::debug!(
        bytes_read = tail.bytes_read,
        size = meta.len(),
        truncated = tail.truncated,
        "read the log's last lines"
    );
    if follow {
        let whole = whole_lines(&tail.text);
        tail.text.truncate(whole);
    }
    let follower = Follower {
        offset: tail.start + tail.text.len() as u64,
        id: (meta.dev(), meta.ino()),
        path,
        owners: owners.clone(),
        file,
        refused: None,
    };
    Ok((
        follower,
        Messages::new(tail.text, tail.truncated, false, true),
    ))
}

/// The tail of the file as it is now. A file truncated between the stat and the read
/// makes the read come short: it is stat'ed again.
fn read_tail_of(file: &File, lines: usize) -> io::Result<(std::fs::Metadata, Tail)> {
    let mut attempts = 0;
    loop {
        let meta = file.metadata()?;
        match read_tail(file, meta.len(), lines, MAX_TAIL_BYTES) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && attempts < 3 => attempts += 1,
            outcome => return outcome.map(|tail| (meta, tail)),
        }
    }
}

/// The end of the last whole line of `text` (0 when it has none), or all of `text`
/// when a line has grown past [`MAX_PARTIAL`] without a newline.
fn whole_lines(text: &[u8]) -> usize {
    match text.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if text.len() < MAX_PARTIAL => 0,
        None => complete_utf8(text),
    }
}

/// The length of `text` without a UTF-8 sequence cut short at its end, so that a line
/// split between two messages is not split inside a character.
fn complete_utf8(text: &[u8]) -> usize {
    let tail_start = text.len().saturating_sub(3);
    for i in (tail_start..text.len()).rev() {
        let b = text[i];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let needed = match b {
            b if b >= 0xF0 => 4,
            b if b >= 0xE0 => 3,
            b if b >= 0xC0 => 2,
            _ => 1,
        };
        return if text.len() - i < needed && i > 0 {
            i
        } else {
            text.len()
        };
    }
    text.len()
}

/// The last lines of a file, where they begin, and what reading them cost.
#[derive(Debug)]
pub(crate) struct Tail {
    pub text: Vec<u8>,
    /// The file offset of `text`.
    pub start: u64,
    /// The lines asked for began before the `cap` bytes read: `text` starts at the
    /// first line within them.
    pub truncated: bool,
    /// The bytes read from the file to find them.
    pub bytes_read: u64,
}

/// The last `lines` lines of the first `end` bytes of `file`, read backwards one
/// [`BLOCK`] at a time, never more than `cap` bytes (blocking). Each byte is read
/// once, and copied once, into a buffer of the tail's size, each block freed as it is
/// copied. A newline at the very end closes the last line; it does not begin an empty
/// one.
pub(crate) fn read_tail(file: &File, end: u64, lines: usize, cap: u64) -> io::Result<Tail> {
    let floor = end.saturating_sub(cap);
    // The blocks read, newest first, and the offset of the oldest.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut from = end;
    let mut seen = 0;
    let mut found = (lines == 0).then_some(end);
    while found.is_none() && from > floor {
        let size = (from - floor).min(BLOCK);
        let mut block = vec![0; size as usize];
        file.read_exact_at(&mut block, from - size)?;
        from -= size;
        let newlines = block
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, b)| **b == b'\n' && from + *i as u64 + 1 != end);
        for (i, _) in newlines {
            seen += 1;
            if seen == lines {
                found = Some(from + i as u64 + 1);
                break;
            }
        }
        blocks.push(block);
    }
    let (start, truncated) = match found {
        Some(start) => (start, false),
        None if from == 0 => (0, false),
        // The cap is reached: keep the lines that begin within it, or, when one line
        // is longer than the cap, its end.
        None => {
            let mut offset = from;
            let first_newline = blocks.iter().rev().find_map(|block| {
                let at = block
                    .iter()
                    .position(|b| *b == b'\n')
                    .map(|i| offset + i as u64);
                offset += block.len() as u64;
                at
            });
            let start = first_newline
                .filter(|at| at + 1 != end)
                .map_or(from, |at| at + 1);
            (start, true)
        }
    };
    let mut text = Vec::with_capacity((end - start) as usize);
    let mut offset = from;
    while let Some(block) = blocks.pop() {
        let skip = start.saturating_sub(offset).min(block.len() as u64) as usize;
        text.extend_from_slice(&block[skip..]);
        offset += block.len() as u64;
    }
    Ok(Tail {
        text,
        start,
        truncated,
        bytes_read: end - from,
    })
}

/// `text` as messages of at most [`CHUNK_BYTES`], split after a newline (or, for a
/// longer line, between characters), each made when it is asked for, so that only one
/// message's text exists beside `text`; the first carries the flags. With
/// `at_least_one`, an empty `text` is still one message, so that the caller sees the
/// flags.
pub(crate) struct Messages {
    text: Vec<u8>,
    made: usize,
    max: usize,
    first: bool,
    truncated: bool,
    rotated: bool,
    at_least_one: bool,
}

impl Messages {
    fn new(text: Vec<u8>, truncated: bool, rotated: bool, at_least_one: bool) -> Messages {
        Messages {
            text,
            made: 0,
            max: CHUNK_BYTES,
            first: true,
            truncated,
            rotated,
            at_least_one,
        }
    }
}

impl Iterator for Messages {
    type Item = LogChunk;

    fn next(&mut self) -> Option<LogChunk> {
        let rest = &self.text[self.made..];
        if rest.is_empty() && !(self.first && (self.at_least_one || self.rotated)) {
            return None;
        }
        let cut = if rest.len() > self.max {
            let window = &rest[..self.max];
            let cut = match window.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => complete_utf8(window),
            };
            cut.max(1)
        } else {
            rest.len()
        };
        let chunk = LogChunk {
            text: String::from_utf8_lossy(&rest[..cut]).into_owned(),
            truncated: self.first && self.truncated,
            rotated: self.first && self.rotated,
        };
        self.made += cut;
        self.first = false;
        Some(chunk)
    }
}

/// All the messages of `text` at once, for a poll's text of at most [`CHUNK_BYTES`].
fn messages(text: Vec<u8>, rotated: bool) -> Vec<LogChunk> {
    Messages::new(text, false, rotated, false).collect()
}

/// A log being followed: the file open now and how far it was sent.
struct Follower {
    path: PathBuf,
    owners: Owners,
    file: File,
    /// Device and inode of `file`, to tell when the path names another file.
    id: (u64, u64),
    offset: u64,
    /// The file that replaced `file` was refused: the stream ends with this once the
    /// old file's last words are sent.
    refused: Option<TailError>,
}

impl Follower {
    /// What was appended since the last poll (blocking), and whether all of it was
    /// read; a poll reads at most [`CHUNK_BYTES`], so a fast writer takes several.
    fn poll(&mut self) -> Result<(Vec<LogChunk>, bool), TailError> {
        if let Some(refused) = self.refused.take() {
            return Err(refused);
        }
        let fail = |e: io::Error| unreadable(&self.path, e);
        let len = self.file.metadata().map_err(fail)?.len();
        let replaced = std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) != self.id)
            .unwrap_or(false);
        let mut rotated = false;
        if len < self.offset {
            self.offset = 0;
            rotated = true;
        }
        let (text, caught_up) = self
            .read_appended(len, !replaced)
            .map_err(|e| unreadable(&self.path, e))?;
        let mut out = messages(text, rotated);
        if !(replaced && caught_up) {
            return Ok((out, caught_up));
        }
        // The old file was read to its end: on to the new one, from its start, if it
        // may be read.
        let (file, meta) = match open_log(&self.path, &self.owners) {
            Ok(opened) => opened,
            // Gone again before it could be opened: looked for at the next poll.
            Err(TailError::NotYet(_)) => return Ok((out, true)),
            Err(e) if out.is_empty() => return Err(e),
            Err(e) => {
                self.refused = Some(e);
                return Ok((out, true));
            }
        };
        self.file = file;
        self.id = (meta.dev(), meta.ino());
        self.offset = 0;
        let (text, caught_up) = self
            .read_appended(meta.len(), true)
            .map_err(|e| unreadable(&self.path, e))?;
        out.extend(messages(text, true));
        Ok((out, caught_up))
    }

    /// The bytes from `offset` up to `len`, at most [`CHUNK_BYTES`]; with
    /// `whole_only`, up to the last newline among them.
    fn read_appended(&mut self, len: u64, whole_only: bool) -> io::Result<(Vec<u8>, bool)> {
        let available = len.saturating_sub(self.offset);
        if available == 0 {
            return Ok((Vec::new(), true));
        }
        let asked = available.min(CHUNK_BYTES as u64) as usize;
        let mut buf = vec![0; asked];
        let got = read_at_most(&self.file, &mut buf, self.offset)?;
        buf.truncate(got);
        let more = got as u64 == asked as u64 && (asked as u64) < available;
        let cut = if whole_only {
            whole_lines(&buf)
        } else if more {
            complete_utf8(&buf)
        } else {
            buf.len()
        };
        buf.truncate(cut);
        self.offset += cut as u64;
        Ok((buf, !more))
    }
}

/// Fills `buf` from `offset` as far as the file goes.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Sends `first`, then polls the file and sends what is appended, until the receiver
/// is dropped (the client went away) or `shutdown` fires.
async fn follow_file(
    mut follower: Follower,
    first: Messages,
    tx: mpsc::Sender<Result<LogChunk, TailError>>,
    shutdown: CancellationToken,
) {
    for chunk in first {
        if !send(&tx, Ok(chunk), &shutdown).await {
            return;
        }
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.try_send(Err(TailError::ShuttingDown));
                return;
            }
            _ = tx.closed() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        loop {
            let path = follower.path.clone();
            let polled = tokio::task::spawn_blocking(move || {
                let outcome = follower.poll();
                (follower, outcome)
            })
            .await;
            let (back, outcome) = match polled {
                Ok(polled) => polled,
                Err(e) => {
                    let _ = tx.try_send(Err(unreadable(&path, io::Error::other(e))));
                    return;
                }
            };
            follower = back;
            let (chunks, caught_up) = match outcome {
                Ok(polled) => polled,
                Err(e) => {
                    send(&tx, Err(e), &shutdown).await;
                    return;
                }
            };
            for chunk in chunks {
                if !send(&tx, Ok(chunk), &shutdown).await {
                    return;
                }
            }
            if caught_up {
                break;
            }
        }
    }
}

/// Whether `item` was sent: not when the receiver is gone, nor when the agent began
/// shutting down while a slow reader kept the channel full (the stream then ends, with
/// [`TailError::ShuttingDown`] when the channel has room for it).
async fn send(
    tx: &mpsc::Sender<Result<LogChunk, TailError>>,
    item: Result<LogChunk, TailError>,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        _ = shutdown.cancelled() => {
            let _ = tx.try_send(Err(TailError::ShuttingDown));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut named = tempfile::NamedTempFile::new().expect("temp file");
        named.write_all(content).expect("write");
        let file = File::open(named.path()).expect("open");
        (named, file)
    }

    fn tail_of(content: &[u8], lines: usize, cap: u64) -> Tail {
        let (_named, file) = file_with(content);
        read_tail(&file, content.len() as u64, lines, cap).expect("tail")
    }

    #[test]
    fn the_last_lines_start_after_the_newline_before_them() {
        let start = |text: &[u8], lines| tail_of(text, lines, MAX_TAIL_BYTES).start;
        let text = b"a\nbb\nccc\n";
        assert_eq!(start(text, 1), 5);
        assert_eq!(start(text, 2), 2);
        assert_eq!(start(text, 3), 0, "a starts the file");
        assert_eq!(start(text, 4), 0, "fewer lines than asked");
        assert_eq!(start(b"a\nbb\nccc", 1), 5, "an unfinished line");
        assert_eq!(start(b"a\nbb\nccc", 2), 2);
        assert_eq!(start(b"a\n\n\n", 2), 2, "empty lines count");
        assert_eq!(start(b"", 1), 0);
        assert_eq!(start(b"\n", 1), 0);
        assert_eq!(start(text, 0), text.len() as u64);
        let tail = tail_of(text, 2, MAX_TAIL_BYTES);
        assert_eq!(tail.text, b"bb\nccc\n");
    }

    #[test]
    fn a_tail_reads_back_across_windows_and_stops_at_the_start_of_the_file() {
        let content: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        let tail = tail_of(content.as_bytes(), 3, MAX_TAIL_BYTES);
        assert_eq!(tail.text, b"line 49997\nline 49998\nline 49999\n");
        assert!(!tail.truncated);
        assert_eq!(tail.bytes_read, BLOCK);
        // 20,000 lines of 11 bytes need a window of 256 KiB.
        let tail = tail_of(content.as_bytes(), 20_000, MAX_TAIL_BYTES);
        assert!(
            tail.text.starts_with(b"line 30000\n"),
            "{:?}",
            &tail.text[..20]
        );
        assert_eq!(tail.bytes_read, 4 * BLOCK);
        assert_eq!(tail.text.capacity(), tail.text.len(), "sized once");
        let tail = tail_of(b"one\ntwo", 5, MAX_TAIL_BYTES);
        assert_eq!((tail.text.as_slice(), tail.start), (&b"one\ntwo"[..], 0));
    }

    #[test]
    fn a_tail_past_the_byte_cap_keeps_the_whole_lines_within_it() {
        let content: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        let tail = tail_of(content.as_bytes(), 1000, 100);
        assert!(tail.truncated);
        assert_eq!(tail.bytes_read, 100);
        // The first line of the 100 bytes read may have begun before them: 9 are sent.
        assert_eq!(tail.text, content.as_bytes()[content.len() - 90..].to_vec());
        let long = vec![b'x'; 300];
        let tail = tail_of(&long, 1, 100);
        assert_eq!((tail.text.len(), tail.truncated), (100, true));
    }

    #[test]
    fn tailing_a_1_gib_file_reads_one_block() {
        let mut named = tempfile::NamedTempFile::new().expect("temp file");
        named.as_file().set_len(1 << 30).expect("sparse 1 GiB");
        named
            .as_file_mut()
            .write_all_at(b"\nfirst\nsecond\nthird\n", 1 << 30)
            .expect("write at the end");
        let file = File::open(named.path()).expect("open");
        let len = file.metadata().expect("stat").len();
        assert!(len > 1 << 30);
        let tail = read_tail(&file, len, 2, MAX_TAIL_BYTES).expect("tail");
        assert_eq!(tail.text, b"second\nthird\n");
        assert_eq!(tail.bytes_read, BLOCK, "reads one block whatever the size");
    }

    #[test]
    fn messages_split_after_newlines_and_never_inside_a_character() {
        let split = |text: &[u8], max| -> Vec<(String, bool)> {
            let mut messages = Messages::new(text.to_vec(), true, false, true);
            messages.max = max;
            messages.map(|m| (m.text, m.truncated)).collect()
        };
        let parts = split(b"ab\ncd\nef\n", 7);
        assert_eq!(
            parts,
            vec![("ab\ncd\n".into(), true), ("ef\n".into(), false)]
        );
        let parts = split("ééé".as_bytes(), 3);
        let e = ("é".to_string(), false);
        assert_eq!(parts, vec![("é".to_string(), true), e.clone(), e]);
        let first = split(b"", 7);
        assert_eq!(first, vec![(String::new(), true)], "the flags come alone");
        assert!(messages(Vec::new(), false).is_empty());
        assert_eq!(messages(Vec::new(), true).len(), 1);
    }

    #[test]
    fn a_follower_sends_whole_lines_and_starts_over_after_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.log");
        std::fs::write(&path, "old 1\nold 2\npart").expect("write");
        let (mut follower, first) = start(path.clone(), &Owners::of(None), 5, true).expect("start");
        assert_eq!(
            first.collect::<Vec<_>>()[0].text,
            "old 1\nold 2\n",
            "the unfinished line waits"
        );
        let append = |text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            f.write_all(text.as_bytes()).expect("append");
        };
        let texts = |polled: (Vec<LogChunk>, bool)| -> Vec<(String, bool)> {
            assert!(polled.1, "caught up");
            polled.0.into_iter().map(|c| (c.text, c.rotated)).collect()
        };
        append("ial\nnew 3\n");
        let polled = follower.poll().expect("poll");
        assert_eq!(texts(polled), vec![("partial\nnew 3\n".to_string(), false)]);
        assert!(texts(follower.poll().expect("poll")).is_empty());

        // Truncated in place (copytruncate), then written again.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        append("after truncate\n");
        let polled = follower.poll().expect("poll");
        assert_eq!(texts(polled), vec![("after truncate\n".to_string(), true)]);

        // Replaced (rotated by rename): the old file's last words, then the new file.
        append("last old\n");
        std::fs::rename(&path, dir.path().join("p.log.1")).expect("rename");
        std::fs::write(&path, "fresh 1\n").expect("new file");
        let polled = follower.poll().expect("poll");
        assert_eq!(
            texts(polled),
            vec![
                ("last old\n".to_string(), false),
                ("fresh 1\n".to_string(), true)
            ]
        );
        append("fresh 2\n");
        let polled = follower.poll().expect("poll");
        assert_eq!(texts(polled), vec![("fresh 2\n".to_string(), false)]);
    }

    #[test]
    fn a_missing_file_is_not_yet_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.log");
        assert!(matches!(
            start(path, &Owners::of(None), 5, false),
            Err(TailError::NotYet(_))
        ));
    }

    #[test]
    fn a_follower_refuses_a_symlink_that_replaced_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.log");
        std::fs::write(&path, "one\n").expect("write");
        let (mut follower, _) = start(path.clone(), &Owners::of(None), 5, true).expect("start");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root's secret\n").expect("write");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"last words\n"))
            .expect("append");
        std::fs::rename(&path, dir.path().join("p.log.1")).expect("rename");
        std::os::unix::fs::symlink(&secret, &path).expect("symlink");
        let (chunks, _) = follower.poll().expect("the old file's last words");
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, vec!["last words\n"]);
        let e = follower.poll().expect_err("the symlink is refused");
        assert!(e.to_string().contains("is a symlink"), "{e}");
    }
}
