//! What the controller writes is its user's alone, whatever the umask it was started
//! with: the data dir 0700, the database with its WAL and shared-memory files and the
//! admin password 0600. What it reads must be as private: a users file or a TLS file
//! someone else could write stops the start, and so does a store another controller
//! holds, by whatever name (a hard link too).

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

/// Runs the controller with `args` and returns its one line of stderr; it must exit 1
/// without serving.
fn refused(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ocp-controller"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run ocp-controller");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_string()
}

#[test]
fn a_users_file_or_a_tls_file_someone_else_could_write_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        "[[users]]\nname = \"admin\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA\"\npermissions = [\"HOST_MANAGER\"]\n",
    )
    .expect("users");
    let chmod = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    chmod(&users, 0o666);
    let line = refused(&[
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--users".as_ref(),
        users.as_os_str(),
    ]);
    assert!(
        line.contains(&format!(
            "{} is not trusted: it may be written by others (mode 0666",
            users.display()
        )),
        "{line}"
    );

    // A PKI whose key someone else owns, then whose folder anyone may write.
    let pki = dir.path().join("pki");
    let days = trust::pki::Validity::days(30).expect("days");
    trust::pki::init(&pki, &["127.0.0.1".to_string()], days, days, false).expect("pki init");
    let cert = pki.join(trust::pki::CONTROLLER_CERT);
    let key = pki.join(trust::pki::CONTROLLER_KEY);
    let tls = |_: ()| {
        refused(&[
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ])
    };
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&key, Some(65534), None).expect("chown");
        let line = tls(());
        assert!(
            line.contains(&format!(
                "{} is not trusted: it is owned by another user",
                key.display()
            )),
            "{line}"
        );
        std::os::unix::fs::chown(&key, Some(0), None).expect("chown back");
    } else {
        eprintln!("skipped the owner check: it needs root");
    }
    chmod(&pki, 0o777);
    let line = tls(());
    assert!(
        line.contains(&format!(
            "its folder {} may be written by others (mode 0777",
            pki.display()
        )),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_controller_on_a_hard_link_to_the_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first");
    let _running = start_under_umask_000(&first).await;
    let second = dir.path().join("second");
    std::fs::create_dir(&second).expect("second data dir");
    std::fs::set_permissions(&second, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::hard_link(first.join("controller.db"), second.join("controller.db"))
        .expect("hard link");
    let line = refused(&["--data-dir".as_ref(), second.as_os_str()]);
    assert!(
        line.contains("already uses the SQLite store")
            && line.contains("through another name of the same file"),
        "{line}"
    );
}
