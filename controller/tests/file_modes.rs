//! What the controller writes is its user's alone, whatever the umask it was started
//! with: the data dir 0700, the database with its WAL and shared-memory files and the
//! admin password 0600. What it reads must be as private: a users file or a TLS file
//! someone else could write stops the start, and so does a store another controller
//! holds, by whatever name (a hard link too).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use test_support::controller::{Launch, Launched};
use test_support::pki::TestPki;

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

/// Starts the binary with umask 000 and waits until it serves. Its log goes beside the
/// data dir, whose files this test inspects.
async fn start_under_umask_000(data_dir: &Path) -> Launched {
    Launch::new(
        env!("CARGO_BIN_EXE_ocp-controller"),
        data_dir,
        &data_dir.with_extension("log"),
    )
    .umask(0)
    .start()
    .await
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
/// without serving. Its log shares stderr, so only errors are logged.
fn refused(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ocp-controller"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "error")
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
    let pki = TestPki::new();
    let cert = pki.controller_file(trust::pki::CONTROLLER_CERT);
    let key = pki.controller_file(trust::pki::CONTROLLER_KEY);
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
    chmod(pki.path(), 0o777);
    let line = tls(());
    assert!(
        line.contains(&format!(
            "its folder {} may be written by others (mode 0777",
            pki.path().display()
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
