//! Agent packages over the wire: the real `ocp-agent` binary uploaded on both faces and
//! read back, every refusal with its reason, the limit, a client that goes away
//! mid-body, permissions, two controllers on one PostgreSQL database, and the
//! controller's memory through a 100 MB upload.

mod common;
mod gateway_support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use controller::auth::basic_header;
use controller::model::Arch;
use controller::store::Store;
use futures::{Stream, StreamExt};
use gateway_support::*;
use proto::ocp::v1 as pb;
use proto::ocp::v1::agent_package_service_client::AgentPackageServiceClient;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use test_support::bins::workspace_bin;
use test_support::controller::Launch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

/// The architecture this machine's binaries are built for, as packages name it.
fn this_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64",
        _ => "x86_64",
    }
}

/// The first 64 bytes of an ELF64 little-endian file of `kind` for `machine`.
fn elf_header(class: u8, endian: u8, kind: u16, machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = endian;
    h[6] = 1;
    h[16..18].copy_from_slice(&kind.to_le_bytes());
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h
}

/// A made-up executable for x86_64: a valid header, then `filler`.
fn fake_agent(filler: &[u8]) -> Vec<u8> {
    let mut body = elf_header(2, 1, 2, 62);
    body.extend_from_slice(filler);
    body
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn file_sha256(path: &Path) -> (String, i64) {
    let mut file = tokio::fs::File::open(path).await.expect("open");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        size += n as i64;
        hasher.update(&buf[..n]);
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (hex, size)
}

/// A file's content as a stream of pieces of `piece` bytes, read as it is sent.
fn file_stream(
    path: &Path,
    piece: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let path = path.to_path_buf();
    futures::stream::unfold(None, move |file: Option<tokio::fs::File>| {
        let path = path.clone();
        async move {
            let mut file = match file {
                Some(f) => f,
                None => match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) => return Some((Err(e), None)),
                },
            };
            let mut buf = vec![0u8; piece];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(e), Some(file))),
            }
        }
    })
}

/// An x86_64 ELF header followed by `total` bytes in all, generated as they are sent.
fn generated(total: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let header = Bytes::from(fake_agent(&[]));
    let filler = Bytes::from(vec![0x5a_u8; MIB]);
    let mut left = total;
    let mut first = true;
    futures::stream::iter(std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let piece = if first {
            first = false;
            header.clone()
        } else {
            filler.slice(..left.min(MIB))
        };
        left -= piece.len().min(left);
        Some(Ok(piece))
    }))
}

/// POSTs `body` as a package of `query` (`version=...`) to `base` as `user`.
async fn upload(
    http: &reqwest::Client,
    base: &str,
    user: (&str, &str),
    query: &str,
    body: reqwest::Body,
) -> Reply {
    let response = http
        .post(format!("{base}/api/v2/agent/packages?{query}"))
        .header("authorization", basic_header(user.0, user.1))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    Reply::read(response).await
}

impl Harness {
    async fn upload(&self, user: &str, query: &str, body: impl Into<reqwest::Body>) -> Reply {
        upload(&self.http, &self.base, (user, PASSWORD), query, body.into()).await
    }

    /// (incomplete uploads, chunks of no complete package) in the store.
    async fn leftovers(&self) -> (i64, i64) {
        leftovers(&Store::sqlite_url(self.dir.path())).await
    }
}

async fn leftovers(url: &str) -> (i64, i64) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_packages WHERE complete = 0")
        .fetch_one(&mut conn)
        .await
        .expect("count uploads");
    let chunks: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM agent_package_chunks WHERE package_id NOT IN \
         (SELECT id FROM agent_packages WHERE complete = 1)",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count chunks");
    (pending, chunks)
}

/// Polls until the store holds nothing of unfinished uploads.
async fn wait_no_leftovers(url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = leftovers(url).await;
        if left == (0, 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "an upload left rows behind: {left:?} (incomplete rows, orphan chunks)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_refused(reply: &Reply, status: StatusCode, field: &str, words: &str) {
    reply.expect(status).assert_envelope();
    let message = reply.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("{field}: ")) && message.contains(words),
        "expected {field}: ...{words}..., got {}",
        reply.json
    );
    if status == StatusCode::BAD_REQUEST {
        assert_eq!(reply.code(), 10001, "{}", reply.json);
    }
}

/// The content the store keeps for `package`, hashed chunk by chunk as it is read.
async fn stored_sha256(store: &Store, version: &str) -> (String, i64, usize) {
    let arch: Arch = this_arch().parse().expect("arch");
    let package = store
        .package_by_version(version, arch)
        .await
        .expect("read")
        .expect("the package is stored");
    let mut content = std::pin::pin!(store.package_content(&package));
    let mut hasher = Sha256::new();
    let (mut size, mut chunks) = (0, 0);
    while let Some(chunk) = content.next().await {
        let chunk = chunk.expect("chunk");
        assert!(chunk.len() <= controller::store::CHUNK_BYTES);
        size += chunk.len() as i64;
        chunks += 1;
        hasher.update(&chunk);
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (hex, size, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_is_uploaded_listed_read_back_and_deleted() {
    let h = Harness::start(false).await;
    let agent = workspace_bin("ocp-agent");
    let (sha, size) = file_sha256(&agent).await;

    let first = h
        .upload(
            HOST_MANAGER,
            &format!("version=4.3.0&sha256={}", sha.to_uppercase()),
            reqwest::Body::wrap_stream(file_stream(&agent, 64 * 1024)),
        )
        .await;
    first.expect(StatusCode::OK).assert_envelope();
    let package = first.json["data"].clone();
    assert_eq!(package["version"], "4.3.0");
    assert_eq!(package["arch"], this_arch());
    assert_eq!(package["sha256"], sha.as_str());
    assert_eq!(package["size"], size);
    assert_eq!(package["uploadedBy"], HOST_MANAGER);
    assert!(
        package["uploadTime"]
            .as_str()
            .is_some_and(|t| t.len() >= 24)
    );
    let id = package["id"].as_i64().expect("id");

    let again = h
        .upload(
            ADMIN,
            "version=4.3.0",
            reqwest::Body::wrap_stream(file_stream(&agent, 1000)),
        )
        .await;
    again.expect(StatusCode::OK);
    assert_eq!(again.json["data"], package, "the same record");

    let other = h.upload(ADMIN, "version=4.3.0", fake_agent(b"other")).await;
    other.expect(StatusCode::CONFLICT).assert_envelope();
    let message = other.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("4.3.0") && message.contains(&sha),
        "{message}"
    );

    let (stored, stored_size, chunks) = stored_sha256(&h.store().await, "4.3.0").await;
    assert_eq!((stored, stored_size), (sha.clone(), size));
    assert_eq!(
        chunks,
        (size as usize).div_ceil(controller::store::CHUNK_BYTES)
    );

    // The gRPC upload of the same binary, streamed in chunks, is the same package.
    let mut client = AgentPackageServiceClient::connect(format!("http://{}", h.grpc_addr()))
        .await
        .expect("connect");
    let header = pb::UploadPackageRequest {
        part: Some(pb::upload_package_request::Part::Header(
            pb::UploadPackageHeader {
                version: "4.3.0".into(),
                sha256: sha.clone(),
            },
        )),
    };
    let chunks = file_stream(&agent, MIB).map(|piece| pb::UploadPackageRequest {
        part: Some(pb::upload_package_request::Part::Chunk(
            piece.expect("read").to_vec(),
        )),
    });
    let messages = futures::stream::iter([header]).chain(chunks);
    let by_grpc = client
        .upload_package(grpc_request(messages, Some(HOST_MANAGER), PASSWORD))
        .await
        .expect("uploaded over gRPC")
        .into_inner();
    assert_eq!(
        (
            by_grpc.id,
            by_grpc.sha256.as_str(),
            by_grpc.size,
            by_grpc.arch.as_str()
        ),
        (id, sha.as_str(), size, this_arch())
    );

    // A second version over gRPC, a new package; a viewer is refused.
    let small = fake_agent(b"4.3.1");
    let header = |version: &str| pb::UploadPackageRequest {
        part: Some(pb::upload_package_request::Part::Header(
            pb::UploadPackageHeader {
                version: version.into(),
                sha256: String::new(),
            },
        )),
    };
    let chunk = |bytes: &[u8]| pb::UploadPackageRequest {
        part: Some(pb::upload_package_request::Part::Chunk(bytes.to_vec())),
    };
    let newer = client
        .upload_package(grpc_request(
            futures::stream::iter([header("4.3.1"), chunk(&small[..10]), chunk(&small[10..])]),
            Some(ADMIN),
            PASSWORD,
        ))
        .await
        .expect("uploaded")
        .into_inner();
    assert_ne!(newer.id, id);
    assert_eq!(newer.sha256, sha256_hex(&small));
    let denied = client
        .upload_package(grpc_request(
            futures::stream::iter([header("4.3.2"), chunk(&small)]),
            Some(HOST_VIEWER),
            PASSWORD,
        ))
        .await
        .expect_err("a viewer may not upload");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let not_elf = client
        .upload_package(grpc_request(
            futures::stream::iter([header("4.3.2"), chunk(b"#!/bin/sh\necho hi\n")]),
            Some(ADMIN),
            PASSWORD,
        ))
        .await
        .expect_err("a script is no agent");
    assert_eq!(not_elf.code(), tonic::Code::InvalidArgument);
    assert!(
        not_elf.message().contains("not an ELF executable"),
        "{not_elf:?}"
    );
    let headless = client
        .upload_package(grpc_request(
            futures::stream::iter([chunk(&small)]),
            Some(ADMIN),
            PASSWORD,
        ))
        .await
        .expect_err("no header");
    assert_eq!(headless.code(), tonic::Code::InvalidArgument);
    let listed = client
        .list_packages(grpc_request(
            pb::ListPackagesRequest { page: 0, size: 0 },
            Some(HOST_VIEWER),
            PASSWORD,
        ))
        .await
        .expect("listed")
        .into_inner();
    let versions: Vec<&str> = listed.contents.iter().map(|p| p.version.as_str()).collect();
    assert_eq!(versions, ["4.3.1", "4.3.0"], "newest first");

    // REST: list (a viewer may), permissions, delete, 404.
    let list = h
        .send(
            Method::GET,
            "/api/v2/agent/packages",
            Some(HOST_VIEWER),
            None,
        )
        .await;
    list.expect(StatusCode::OK).assert_envelope();
    assert_eq!(list.json["data"]["page"]["totalElements"], 2);
    assert_eq!(list.json["data"]["contents"][1], package);
    let viewer_upload = h.upload(HOST_VIEWER, "version=9", fake_agent(b"x")).await;
    viewer_upload
        .expect(StatusCode::FORBIDDEN)
        .assert_envelope();
    assert_eq!(viewer_upload.code(), 30014);
    h.send(Method::GET, "/agent/packages", Some(TASK_MANAGER), None)
        .await
        .expect(StatusCode::FORBIDDEN);
    let path = format!("/api/v2/agent/packages/{id}");
    h.send(Method::DELETE, &path, Some(HOST_VIEWER), None)
        .await
        .expect(StatusCode::FORBIDDEN);
    let deleted = h
        .send(Method::DELETE, &path, Some(HOST_MANAGER), None)
        .await;
    deleted.expect(StatusCode::OK).assert_envelope();
    assert_eq!(deleted.json["data"], package);
    let gone = h
        .send(Method::DELETE, &path, Some(HOST_MANAGER), None)
        .await;
    gone.expect(StatusCode::NOT_FOUND).assert_envelope();
    assert_eq!(gone.code(), 10002);
    h.send(Method::DELETE, "/agent/packages/abc", Some(ADMIN), None)
        .await
        .expect(StatusCode::BAD_REQUEST);
    let list = h.get("/agent/packages").await;
    assert_eq!(list.json["data"]["page"]["totalElements"], 1);
    assert_eq!(list.json["data"]["contents"][0]["version"], "4.3.1");
    let unknown = client
        .delete_package(grpc_request(
            pb::DeletePackageRequest { id },
            Some(ADMIN),
            PASSWORD,
        ))
        .await
        .expect_err("deleted already");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(h.leftovers().await, (0, 0));
    let chunks: i64 = {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&Store::sqlite_url(h.dir.path()))
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT COUNT(*) FROM agent_package_chunks")
            .fetch_one(&mut conn)
            .await
            .expect("count")
    };
    assert_eq!(chunks, 1, "the deleted package's content went with it");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_no_agent_binary_is_refused_naming_why() {
    let h = Harness::start(false).await;
    let body = fake_agent(b"payload");
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "version=1.0",
            b"#!/bin/sh\necho hi\n".to_vec(),
            "body",
            "not an ELF executable",
        ),
        ("version=1.0", Vec::new(), "body", "is empty"),
        (
            "version=1.0",
            b"\x7fELF\x02\x01".to_vec(),
            "body",
            "shorter than an ELF header",
        ),
        ("version=1.0", elf_header(1, 1, 2, 3), "body", "32-bit"),
        ("version=1.0", elf_header(2, 2, 2, 62), "body", "big-endian"),
        (
            "version=1.0",
            elf_header(2, 1, 1, 62),
            "body",
            "not an executable",
        ),
        (
            "version=1.0",
            elf_header(2, 1, 2, 40),
            "body",
            "unknown architecture",
        ),
        (
            "version=1.0&sha256=",
            body.clone(),
            "sha256",
            "64 hexadecimal digits",
        ),
        (
            "version=1.0&sha256=zz",
            body.clone(),
            "sha256",
            "64 hexadecimal digits",
        ),
        ("", body.clone(), "version", "is missing"),
        ("version=", body.clone(), "version", "is missing"),
        (
            "version=..%2Fetc",
            body.clone(),
            "version",
            "must start with",
        ),
        ("version=4.2%2F1", body.clone(), "version", "not '/'"),
        (
            "version=1.0&channel=beta",
            body.clone(),
            "channel",
            "unknown query parameter",
        ),
    ];
    for (query, content, field, words) in cases {
        let reply = h.upload(ADMIN, query, content).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, field, words);
    }
    let wrong = "0".repeat(64);
    let reply = h
        .upload(ADMIN, &format!("version=1.0&sha256={wrong}"), body.clone())
        .await;
    assert_refused(
        &reply,
        StatusCode::BAD_REQUEST,
        "sha256",
        &sha256_hex(&body),
    );

    let as_json = h
        .http
        .post(h.url("/api/v2/agent/packages?version=1.0"))
        .header("authorization", basic_header(ADMIN, PASSWORD))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("answered");
    let as_json = Reply::read(as_json).await;
    as_json
        .expect(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .assert_envelope();

    assert_eq!(
        h.leftovers().await,
        (0, 0),
        "a refused upload leaves nothing"
    );
    let list = h.get("/agent/packages").await;
    assert_eq!(list.json["data"]["page"]["totalElements"], 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_is_refused_and_leaves_nothing() {
    let h = Harness::start(false).await;
    let limit = controller::service::DEFAULT_MAX_PACKAGE_BYTES as usize;

    // Announced: refused before a byte is read.
    let declared = h
        .http
        .post(h.url("/api/v2/agent/packages?version=big"))
        .header("authorization", basic_header(ADMIN, PASSWORD))
        .header("content-type", "application/octet-stream")
        .header("content-length", (limit + 1).to_string())
        .body(reqwest::Body::wrap_stream(generated(limit + 1)))
        .send()
        .await;
    if let Ok(response) = declared {
        let reply = Reply::read(response).await;
        reply
            .expect(StatusCode::PAYLOAD_TOO_LARGE)
            .assert_envelope();
    }

    // Streamed without a length: read, and stored, up to the limit, then refused.
    let started = std::time::Instant::now();
    let streamed = h
        .upload(
            ADMIN,
            "version=big",
            reqwest::Body::wrap_stream(generated(limit + MIB)),
        )
        .await;
    streamed
        .expect(StatusCode::PAYLOAD_TOO_LARGE)
        .assert_envelope();
    assert_eq!(
        streamed.json["error"]["message"],
        format!("the package is larger than {limit} bytes (--max-package-bytes)")
    );
    eprintln!(
        "a {} MiB upload refused in {:?}",
        limit / MIB + 1,
        started.elapsed()
    );
    assert_eq!(h.leftovers().await, (0, 0));

    // Exactly at the limit is taken.
    let at_limit = h
        .upload(
            ADMIN,
            "version=big",
            reqwest::Body::wrap_stream(generated(limit)),
        )
        .await;
    at_limit.expect(StatusCode::OK);
    assert_eq!(at_limit.json["data"]["size"], limit as i64);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_body_leaves_no_package_and_no_chunks() {
    let h = Harness::start(false).await;
    let url = Store::sqlite_url(h.dir.path());
    let addr = h.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v2/agent/packages?version=cut HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: {}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {}\r\n\r\n",
        basic_header(ADMIN, PASSWORD),
        50 * MIB
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(&fake_agent(&[])).await.expect("header");
    let filler = vec![7u8; MIB];
    for _ in 0..5 {
        conn.write_all(&filler).await.expect("body");
    }
    // The upload is under way in the store before the client goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (pending, chunks) = leftovers(&url).await;
        if pending == 1 && chunks >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no chunk was written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(conn);
    wait_no_leftovers(&url).await;
    let list = h.get("/agent/packages").await;
    assert_eq!(list.json["data"]["page"]["totalElements"], 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_uploaded_to_one_controller_is_the_others_too() {
    let _serial = common::controllers::serial().await;
    let Some(cluster) =
        common::controllers::Cluster::start("a_package_uploaded_to_one_controller", 2, &[]).await
    else {
        return;
    };
    let agent = workspace_bin("ocp-agent");
    let (sha, size) = file_sha256(&agent).await;
    let http = reqwest::Client::new();
    let admin = ("admin", common::fleet::ADMIN_PASSWORD);
    let base = |i: usize| format!("http://{}", cluster.nodes[i].http);
    let uploaded = upload(
        &http,
        &base(0),
        admin,
        "version=5.0.0",
        reqwest::Body::wrap_stream(file_stream(&agent, 256 * 1024)),
    )
    .await;
    uploaded.expect(StatusCode::OK);
    let package = uploaded.json["data"].clone();
    assert_eq!(
        (package["sha256"].as_str(), package["size"].as_i64()),
        (Some(sha.as_str()), Some(size))
    );

    let (status, listed) = common::controllers::Rest::new()
        .get(&cluster.nodes[1].url("/agent/packages"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed["data"]["contents"],
        Value::Array(vec![package.clone()])
    );

    // The same upload through the other controller is the same package; other content
    // under the version is refused there too.
    let again = upload(
        &http,
        &base(1),
        admin,
        "version=5.0.0",
        reqwest::Body::wrap_stream(file_stream(&agent, MIB)),
    )
    .await;
    again.expect(StatusCode::OK);
    assert_eq!(again.json["data"], package);
    upload(
        &http,
        &base(1),
        admin,
        "version=5.0.0",
        fake_agent(b"x").into(),
    )
    .await
    .expect(StatusCode::CONFLICT);

    let store = Store::connect(&cluster.db.url).await.expect("the store");
    let (stored, stored_size, _) = stored_sha256(&store, "5.0.0").await;
    assert_eq!((stored, stored_size), (sha, size));
    store.close().await;
    wait_no_leftovers(&cluster.db.url).await;
}

/// A memory figure of /proc/PID/status (`VmHWM`, the peak resident set, or `VmRSS`),
/// in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_upload_does_not_grow_the_controller_by_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Launch::new(
        workspace_bin("ocp-controller"),
        &dir.path().join("data"),
        &dir.path().join("controller.log"),
    )
    .start()
    .await;
    let password = controller.admin_password().expect("bootstrap admin");
    let http = reqwest::Client::new();
    let base = controller.base_url();
    // A first small upload, so that what any upload needs once is in place before.
    upload(
        &http,
        &base,
        ("admin", &password),
        "version=warm",
        fake_agent(b"w").into(),
    )
    .await
    .expect(StatusCode::OK);
    let before = memory(controller.pid(), "VmHWM");
    let total = 100_000_000;
    let started = std::time::Instant::now();
    let reply = upload(
        &http,
        &base,
        ("admin", &password),
        "version=big",
        reqwest::Body::wrap_stream(generated(total)),
    )
    .await;
    reply.expect(StatusCode::OK);
    assert_eq!(reply.json["data"]["size"], total as i64);
    let after = memory(controller.pid(), "VmHWM");
    let grown = after.saturating_sub(before);
    eprintln!(
        "100 MB upload in {:?}: controller VmHWM {} MiB -> {} MiB (+{} MiB), VmRSS now {} MiB",
        started.elapsed(),
        before >> 20,
        after >> 20,
        grown >> 20,
        memory(controller.pid(), "VmRSS") >> 20
    );
    assert!(
        grown < 40 << 20,
        "a 100 MB upload grew the controller's peak RSS by {} MiB",
        grown >> 20
    );
}
