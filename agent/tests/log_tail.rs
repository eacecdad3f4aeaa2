//! TailLog against a real agent and a real process writing its log: the last lines,
//! lines appended while following, a truncated log, the refusals (a symlink and a file
//! of another user among them), the limit on calls at once, and a follow stream that
//! ends when the agent stops.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;
use proto::agent::v1::{LogChunk, TailLogRequest};
use tokio::time::{Instant, timeout};
use tonic::{Code, Streaming};

fn tail(alias: &str, lines: u32, follow: bool) -> TailLogRequest {
    TailLogRequest {
        alias: alias.to_string(),
        lines,
        follow,
    }
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open the log");
    file.write_all(text.as_bytes()).expect("append to the log");
}

/// The whole text of a stream that does not follow.
async fn read_all(client: &mut Client, request: TailLogRequest) -> Result<String, tonic::Status> {
    let mut stream = client.tail_log(request).await?.into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.message().await? {
        text.push_str(&chunk.text);
    }
    Ok(text)
}

/// Reads a following stream until its text so far ends with `wanted`.
async fn read_until(stream: &mut Streaming<LogChunk>, wanted: &str) -> (String, Vec<LogChunk>) {
    let deadline = Instant::now() + WAIT;
    let (mut text, mut chunks) = (String::new(), Vec::new());
    while !text.ends_with(wanted) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("{wanted:?} never came; got {text:?}"))
            .expect("a message")
            .expect("the stream goes on");
        text.push_str(&chunk.text);
        chunks.push(chunk);
    }
    (text, chunks)
}

/// A following stream of web's log, read until its last line, `last`, has come.
async fn follow_web(client: &mut Client, last: &str) -> Streaming<LogChunk> {
    let mut stream = client
        .tail_log(tail("web", 1, true))
        .await
        .expect("TailLog follow")
        .into_inner();
    let (first, _) = read_until(&mut stream, last).await;
    assert_eq!(first, last, "a follow of 1 line starts with the last line");
    stream
}

fn config() -> String {
    format!(
        "{}[[process]]\nalias = \"quiet\"\ncommand = {DEMO:?}\nmin_live = \"0s\"\n",
        demo_process("web", &[], "min_live = \"0s\"")
    )
}

/// An agent running `web`, once its log file exists.
async fn web_with_its_log() -> (Setup, RunningAgent, std::path::PathBuf) {
    let setup = Setup::new(&config());
    let mut a = setup.start().await;
    wait_running(&mut a.client, "web").await;
    let log = setup.dir.path().join("log/web.log");
    assert!(eventually(|| log.exists()).await, "no log file");
    (setup, a, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_log_sends_the_last_lines_then_what_is_appended() {
    let setup = Setup::new(&config());
    let mut a = setup.start().await;
    wait_running(&mut a.client, "web").await;
    let log = setup.dir.path().join("log/web.log");
    // ocp-demo-proc's own line comes first; the test's lines after it.
    assert!(
        eventually(|| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("ready pid="))).await,
        "ocp-demo-proc never wrote its ready line"
    );
    let lines: String = (0..20).map(|i| format!("line {i}\n")).collect();
    append(&log, &lines);

    let last = read_all(&mut a.client, tail("web", 5, false))
        .await
        .expect("TailLog");
    assert_eq!(last, "line 15\nline 16\nline 17\nline 18\nline 19\n");
    let all = read_all(&mut a.client, tail("web", 10_000, false))
        .await
        .expect("TailLog");
    assert!(
        all.starts_with("ready pid=") && all.ends_with(&lines),
        "{all:?}"
    );

    let mut stream = follow_web(&mut a.client, "line 19\n").await;
    append(&log, "late 1\nlate 2\n");
    let (late, _) = read_until(&mut stream, "late 2\n").await;
    assert_eq!(late, "late 1\nlate 2\n");
    // A line written in two parts arrives whole.
    append(&log, "writ");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    append(&log, "ten in two parts\n");
    let (whole, chunks) = read_until(&mut stream, "parts\n").await;
    assert_eq!(whole, "written in two parts\n");
    assert_eq!(chunks.len(), 1, "{chunks:?}");

    // Truncated in place (copytruncate): followed again from the start.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(0))
        .expect("truncate the log");
    append(&log, "after rotation\n");
    let (rotated, chunks) = read_until(&mut stream, "after rotation\n").await;
    assert_eq!(rotated, "after rotation\n");
    assert!(chunks[0].rotated, "{chunks:?}");
    drop(stream);

    // Refusals: the number of lines, then what has no log to read.
    for lines in [0, 10_001] {
        let e = read_all(&mut a.client, tail("web", lines, false))
            .await
            .expect_err("lines out of range");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("lines"), "{e:?}");
    }
    let e = read_all(&mut a.client, tail("quiet", 5, false))
        .await
        .expect_err("no log_file");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("has no log file"), "{e:?}");
    let e = read_all(&mut a.client, tail("nobody", 5, false))
        .await
        .expect_err("unknown alias");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    std::fs::remove_file(&log).expect("remove the log");
    let e = read_all(&mut a.client, tail("web", 5, false))
        .await
        .expect_err("no file");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("no log file yet at"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_stream_ends_when_the_agent_stops() {
    let (_setup, mut a, log) = web_with_its_log().await;
    append(&log, "before the stop\n");
    let mut stream = follow_web(&mut a.client, "before the stop\n").await;

    a.agent.signal(nix::sys::signal::Signal::SIGTERM);
    let ended = timeout(WAIT, stream.message())
        .await
        .expect("the stream ended with the agent");
    // The agent's own word that it stops, not merely a connection that went: a
    // follower that missed the shutdown would end only with the connection.
    match ended {
        Err(e) => {
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            assert!(e.message().contains("shutting down"), "{e:?}");
        }
        Ok(None) => panic!("the stream ended without saying the agent is shutting down"),
        Ok(Some(chunk)) => panic!("a message after the stop: {chunk:?}"),
    }
    let status = a.agent.wait_exit().await;
    assert!(status.success(), "{status}: {:?}", a.agent.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_is_a_symlink_a_hard_link_or_another_users_file_is_never_read() {
    let (setup, mut a, log) = web_with_its_log().await;
    let secret = setup.dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET 42\n").expect("write the secret");
    let refused = |e: &tonic::Status, why: &str| {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains(why), "{e:?}");
        assert!(e.message().contains("refusing to read it"), "{e:?}");
        assert!(!e.message().contains("TOP SECRET"), "{e:?}");
    };

    // Followed while a regular file, then replaced by a symlink to the secret: the
    // old file's last words come, then the refusal.
    append(&log, "before the swap\n");
    let mut stream = follow_web(&mut a.client, "before the swap\n").await;
    append(&log, "last words\n");
    std::fs::rename(&log, setup.dir.path().join("log/web.log.1")).expect("rotate");
    std::os::unix::fs::symlink(&secret, &log).expect("symlink");
    let mut text = String::new();
    let e = loop {
        match timeout(WAIT, stream.message()).await.expect("an answer") {
            Ok(Some(chunk)) => text.push_str(&chunk.text),
            Ok(None) => panic!("the stream ended without a refusal; got {text:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(text, "last words\n");
    refused(&e, "is a symlink");

    // Asked for afresh, with or without following.
    for follow in [false, true] {
        let e = read_all(&mut a.client, tail("web", 10, follow))
            .await
            .expect_err("a symlink is refused");
        refused(&e, "is a symlink");
    }

    // A FIFO: refused at once, not a blocking thread waiting for a writer.
    std::fs::remove_file(&log).expect("remove the symlink");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let e = timeout(WAIT, read_all(&mut a.client, tail("web", 10, false)))
        .await
        .expect("the FIFO was answered")
        .expect_err("a FIFO is refused");
    refused(&e, "is a FIFO");

    // A second name of a file that is read only through it: the secret, hard-linked.
    std::fs::remove_file(&log).expect("remove the FIFO");
    std::fs::hard_link(&secret, &log).expect("hard link");
    for follow in [false, true] {
        let e = read_all(&mut a.client, tail("web", 10, follow))
            .await
            .expect_err("a file with two names is refused");
        refused(&e, "has 2 names (hard links)");
    }

    // A file of a user neither root, the agent's nor the process's.
    std::fs::remove_file(&log).expect("remove the hard link");
    std::fs::copy(&secret, &log).expect("copy the secret");
    match nix::unistd::User::from_name("nobody") {
        Ok(Some(nobody)) if nix::unistd::geteuid().is_root() => {
            std::os::unix::fs::chown(&log, Some(nobody.uid.as_raw()), None).expect("chown");
            let e = read_all(&mut a.client, tail("web", 10, false))
                .await
                .expect_err("another user's file is refused");
            refused(&e, "is owned by uid");
        }
        _ => eprintln!("skipped the owner check: it needs root and a user nobody"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_16_tails_run_at_once() {
    let (_setup, mut a, log) = web_with_its_log().await;
    append(&log, "a line\n");
    let mut streams = Vec::new();
    for _ in 0..16 {
        let stream = follow_web(&mut a.client, "a line\n").await;
        streams.push(stream);
    }
    let e = read_all(&mut a.client, tail("web", 1, false))
        .await
        .expect_err("the 17th is refused");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message()
            .contains("too many log tails at once (16); try again later"),
        "{e:?}"
    );
    // A stream that ends gives its place back.
    drop(streams.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        match read_all(&mut a.client, tail("web", 1, false)).await {
            Ok(text) => break assert_eq!(text, "a line\n"),
            Err(e) if e.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("the place was not given back: {e:?}"),
        }
    }
}
