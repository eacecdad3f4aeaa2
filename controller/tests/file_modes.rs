//! What the controller writes is its user's alone, whatever the umask it was started
//! with: the data dir 0700, the database with its WAL and shared-memory files and the
//! admin password 0600.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::{Instant, sleep};

/// Generous, so a slow machine does not fail the test; conditions are polled.
const WAIT: Duration = Duration::from_secs(30);

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// In octal, as `ls` and `chmod` write it.
fn mode(path: &Path) -> String {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:04o}", mode & 0o7777)
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with umask 000 and waits until it serves gRPC.
async fn start_under_umask_000(data_dir: &Path) -> Controller {
    let grpc = free_addr();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ocp-controller"));
    command
        .arg("--grpc-addr")
        .arg(grpc.to_string())
        .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = Controller(command.spawn().expect("spawn ocp-controller"));
    let deadline = Instant::now() + WAIT;
    while tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .connect()
        .await
        .is_err()
    {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("ocp-controller exited with {status}");
        }
        assert!(Instant::now() < deadline, "controller never served");
        sleep(Duration::from_millis(20)).await;
    }
    child
}

fn modes(data_dir: &Path) -> Vec<(String, String)> {
    let db = data_dir.join("controller.db");
    [
        data_dir.to_path_buf(),
        data_dir.join("admin-password"),
        db.clone(),
        sibling(&db, "-wal"),
        sibling(&db, "-shm"),
    ]
    .iter()
    .map(|p| (p.display().to_string(), mode(p)))
    .collect()
}

fn expected(data_dir: &Path) -> Vec<(String, String)> {
    let db = data_dir.join("controller.db");
    [
        (data_dir.to_path_buf(), "0700"),
        (data_dir.join("admin-password"), "0600"),
        (db.clone(), "0600"),
        (sibling(&db, "-wal"), "0600"),
        (sibling(&db, "-shm"), "0600"),
    ]
    .into_iter()
    .map(|(p, mode)| (p.display().to_string(), mode.to_string()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_database_are_private_under_umask_000() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let controller = start_under_umask_000(&data_dir).await;
    assert_eq!(modes(&data_dir), expected(&data_dir), "modes as created");

    // What an older version left readable by others, and a WAL left by a kill -9,
    // are narrowed at the next start.
    drop(controller);
    let db = data_dir.join("controller.db");
    for path in [db.clone(), sibling(&db, "-wal"), sibling(&db, "-shm")] {
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        }
    }
    let _controller = start_under_umask_000(&data_dir).await;
    assert_eq!(
        modes(&data_dir),
        expected(&data_dir),
        "modes after a restart"
    );
}
