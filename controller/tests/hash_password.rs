//! `ocp-controller hash-password`, as an operator writes a users file with it: the hash
//! it prints opens the controller to that password and to no other, and an empty
//! password is refused with one line.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use reqwest::StatusCode;
use test_support::controller::Launch;

fn hash_password(stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocp-controller"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ocp-controller hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("password to stdin");
    child.wait_with_output().expect("hash-password ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_hash_opens_the_controller_to_that_password_only() {
    let out = hash_password(b"correct horse\n");
    assert!(out.status.success(), "{out:?}");
    let hash = String::from_utf8(out.stdout).expect("utf-8");
    let hash = hash.trim_end();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_eq!(hash.lines().count(), 1, "one line: {hash}");

    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[users]]\nname = \"ops\"\npassword_hash = {hash:?}\npermissions = [\"HOST_VIEWER\"]\n"
        ),
    )
    .expect("users file");
    let controller = Launch::new(
        env!("CARGO_BIN_EXE_ocp-controller"),
        &dir.path().join("data"),
        &dir.path().join("controller.log"),
    )
    .users(&users)
    .start()
    .await;
    let hosts = format!("{}/api/v2/compute/hosts", controller.base_url());
    let client = reqwest::Client::new();
    let as_ops =
        |password: &'static str| client.get(&hosts).basic_auth("ops", Some(password)).send();
    let right = as_ops("correct horse").await.expect("GET hosts");
    assert_eq!(right.status(), StatusCode::OK);
    let wrong = as_ops("correct horse ").await.expect("GET hosts");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn an_empty_password_is_refused_with_one_line() {
    for stdin in [&b""[..], b"\n"] {
        let out = hash_password(stdin);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("no password on stdin"), "{stderr}");
    }
}
