//! Watches of tasks are bounded per user, across both faces, and share their store
//! reads: against the real binary, one user holds at most `--max-watches-per-user`
//! (64) watches of a running task over server-sent events and WatchTask together, the
//! next one is refused (429 with code 30003, RESOURCE_EXHAUSTED) before any store read,
//! another user is not concerned, and every watch that was let in is sent the task's
//! transitions to its end.

mod common;

use std::net::SocketAddr;

use futures::StreamExt;
use std::time::Duration;

use common::binary::SpawnedController;
use common::fleet::{WAIT, free_port, workspace_bin};
use common::proc_agent::{ProcAgent, unique_tag};
use controller::auth::BasicAuth;
use proto::ocp::v1::WatchTaskRequest;
use proto::ocp::v1::task_service_client::TaskServiceClient;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::users::{self, User};
use tokio::time::Instant;

const PASSWORD: &str = "watch me";
const LIMIT: usize = 64;

/// A users file: an operator, and two users who may only read tasks.
fn users_file(dir: &std::path::Path) -> std::path::PathBuf {
    let user = |name, permissions| User {
        name,
        password: PASSWORD,
        permissions,
    };
    users::write(
        dir,
        &[
            user("operator", users::ALL),
            user("viewer", &["TASK_VIEWER"]),
            user("another", &["TASK_VIEWER"]),
        ],
    )
}

struct Rest {
    client: reqwest::Client,
    base: String,
}

impl Rest {
    fn of(controller: &SpawnedController) -> Rest {
        Rest {
            client: reqwest::Client::builder()
                .timeout(WAIT * 3)
                .build()
                .expect("client"),
            base: format!("http://{}", controller.http),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(user, Some(PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the controller answers")
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        body: Option<Value>,
    ) -> Value {
        let response = self.send(method, path, user, body).await;
        let status = response.status();
        let json: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{path}: {json}");
        json
    }
}

async fn grpc(
    addr: SocketAddr,
    user: &str,
) -> TaskServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BasicAuth>,
> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    TaskServiceClient::with_interceptor(channel, BasicAuth::new(user, PASSWORD).expect("auth"))
}

/// A rolling task over a real agent's host and an unreachable one, held RUNNING by
/// its canary pause after the first batch.
async fn held_task(rest: &Rest, agent: SocketAddr) -> i64 {
    let add = |address: &'static str, port: u16| async move {
        rest.json(
            reqwest::Method::POST,
            "/api/v2/compute/hosts",
            "operator",
            Some(json!({"innerIpAddress": address, "agentPort": port})),
        )
        .await["data"]["id"]
            .as_i64()
            .expect("host id")
    };
    let real = add("127.0.0.1", agent.port()).await;
    let gone = add("127.0.0.9", 1).await;
    let task = rest
        .json(
            reqwest::Method::POST,
            "/api/v2/compute/hosts/batchRestartAgents",
            "operator",
            Some(json!({"hostIds": [real, gone], "rollout": {"batchSize": 1, "pauseAfterFirstBatch": true}})),
        )
        .await;
    let id = task["data"]["id"].as_i64().expect("task id");
    let deadline = Instant::now() + WAIT;
    loop {
        let t = rest
            .json(
                reqwest::Method::GET,
                &format!("/api/v2/tasks/instances/{id}"),
                "operator",
                None,
            )
            .await;
        let barrier_ready = t["data"]["subtasks"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "Wait node" && s["status"] == "READY")
        });
        if barrier_ready {
            assert_eq!(t["data"]["status"], "RUNNING", "{t}");
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "the task never held at its canary pause: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_64_watches_across_both_faces_and_each_sees_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = users_file(dir.path());
    let controller = SpawnedController::start(&["--users", users.to_str().expect("path")]).await;
    let tag = unique_tag();
    let demo = workspace_bin("ocp-demo-proc");
    let agent_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let _agent = ProcAgent::start(
        agent_addr,
        &[],
        tag.clone(),
        &format!("[[process]]\nalias = \"sleeper\"\ncommand = {demo:?}\nargs = [\"--tag\", \"{tag}\"]\nmin_live = \"0s\"\n"),
    )
    .await;
    let rest = Rest::of(&controller);
    let id = held_task(&rest, agent_addr).await;
    let events = format!("/api/v2/tasks/instances/{id}/events");

    // Half over server-sent events, half over WatchTask: one count for both.
    let mut sse = Vec::new();
    for _ in 0..LIMIT / 2 {
        let response = rest
            .send(reqwest::Method::GET, &events, "viewer", None)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        sse.push(response);
    }
    let mut viewer = grpc(controller.grpc, "viewer").await;
    let mut streams = Vec::new();
    for _ in 0..LIMIT / 2 {
        let stream = viewer
            .watch_task(WatchTaskRequest { id, after_seq: 0 })
            .await
            .expect("a watch within the limit")
            .into_inner();
        streams.push(stream);
    }

    // One more, on either face, is refused and says why.
    let refused = rest
        .send(reqwest::Method::GET, &events, "viewer", None)
        .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], 30003, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"viewer\" already has 64 watches")
            && message.contains("--max-watches-per-user"),
        "{message}"
    );
    let status = viewer
        .watch_task(WatchTaskRequest { id, after_seq: 0 })
        .await
        .expect_err("the 65th watch");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    // Another user is not concerned.
    let other = rest
        .send(reqwest::Method::GET, &events, "another", None)
        .await;
    assert_eq!(other.status(), StatusCode::OK);

    // Resumed, the task goes on to the unreachable host and fails there: every watch
    // is sent every transition, and ends with the task's own.
    rest.json(
        reqwest::Method::POST,
        &format!("/api/v2/tasks/instances/{id}/resume"),
        "operator",
        None,
    )
    .await;
    let grpc_seen = futures::future::join_all(streams.into_iter().map(|mut stream| async move {
        let mut seqs = Vec::new();
        let mut last = None;
        while let Some(event) = stream.message().await.expect("an event") {
            seqs.push(event.seq);
            last = Some((event.subtask_id, event.status));
        }
        (seqs, last)
    }))
    .await;
    let sse_seen = futures::future::join_all(sse.into_iter().map(|r| r.text())).await;
    let (all, _) = &grpc_seen[0];
    assert!(all.windows(2).all(|w| w[0] < w[1]), "in order: {all:?}");
    for (seqs, last) in &grpc_seen {
        assert_eq!(seqs, all, "every WatchTask saw the same transitions");
        assert_eq!(
            last,
            &Some((0, "FAILED".to_string())),
            "ended with the task's end"
        );
    }
    for text in sse_seen {
        let text = text.expect("the whole stream");
        let ids: Vec<i64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id:"))
            .map(|v| v.trim().parse().expect("seq"))
            .collect();
        assert_eq!(&ids, all, "every SSE watch saw the same transitions");
    }

    // Their places are free again.
    let again = rest
        .send(reqwest::Method::GET, &events, "viewer", None)
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        again
            .text()
            .await
            .expect("stream")
            .lines()
            .filter(|l| l.starts_with("id:"))
            .count(),
        all.len(),
        "a finished task is replayed whole, and the stream ends"
    );
}

/// The seqs a WatchTask stream sends, until it ends.
async fn seqs(mut stream: tonic::Streaming<proto::ocp::v1::TaskEvent>) -> Vec<i64> {
    let mut seqs = Vec::new();
    while let Some(event) = stream.message().await.expect("an event") {
        seqs.push(event.seq);
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_live_behind_or_late_all_see_every_transition_once_in_order() {
    let controller = SpawnedController::start(&[]).await;
    let rest = Rest::of(&controller);
    // Hosts nobody answers for: each step fails at once, and the task makes far more
    // transitions than a feed keeps in its window.
    let started = Instant::now();
    let add = |i: u32| {
        let request = rest
            .client
            .post(format!("{}/api/v2/compute/hosts", rest.base))
            .basic_auth("admin", Some(&controller.password))
            .json(&json!({"innerIpAddress": format!("127.0.{}.{}", 1 + i / 200, 1 + i % 200), "agentPort": 1}));
        async move {
            let host: Value = request
                .send()
                .await
                .expect("add host")
                .json()
                .await
                .expect("json");
            host["data"]["id"].as_i64().expect("host id")
        }
    };
    // Many at once: each addition wakes a heartbeat round over every host.
    let hosts: Vec<i64> = futures::stream::iter((0..800).map(add))
        .buffer_unordered(64)
        .collect()
        .await;
    let task = rest
        .client
        .post(format!(
            "{}/api/v2/compute/hosts/batchRestartAgents",
            rest.base
        ))
        .basic_auth("admin", Some(&controller.password))
        .json(&json!({"hostIds": hosts}))
        .send()
        .await
        .expect("batch")
        .json::<Value>()
        .await
        .expect("json");
    let id = task["data"]["id"].as_i64().expect("task id");
    eprintln!(
        "800 hosts added and the task made in {:?}",
        started.elapsed()
    );

    let connect = |window: Option<u32>| {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", controller.grpc))
                .expect("uri")
                .initial_stream_window_size(window);
        let auth = controller.auth();
        async move {
            let channel = endpoint.connect().await.expect("connect");
            TaskServiceClient::with_interceptor(channel, auth)
        }
    };
    let client = connect(None).await;
    // A client that reads nothing takes 4 KiB: the controller soon stops sending to it.
    let mut stalled = connect(Some(4096)).await;
    let watch = || {
        let mut client = client.clone();
        async move {
            client
                .watch_task(WatchTaskRequest { id, after_seq: 0 })
                .await
                .expect("watch")
                .into_inner()
        }
    };
    // Read as it comes; opened at once but not read until the task ended (its client
    // stops reading, so it falls behind the feed's window); opened after the end.
    let eager = tokio::spawn(seqs(watch().await));
    let idle = stalled
        .watch_task(WatchTaskRequest { id, after_seq: 0 })
        .await
        .expect("watch")
        .into_inner();
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let t = rest
            .client
            .get(format!("{}/api/v2/tasks/instances/{id}", rest.base))
            .basic_auth("admin", Some(&controller.password))
            .send()
            .await
            .expect("task")
            .json::<Value>()
            .await
            .expect("json");
        if t["data"]["status"] != "RUNNING" {
            break;
        }
        assert!(Instant::now() < deadline, "the task never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the task ended {:?} after the start", started.elapsed());
    let late = seqs(watch().await).await;
    let idle = seqs(idle).await;
    let eager = eager.await.expect("eager watch");
    eprintln!(
        "{} transitions: eager {}, idle {}, late {}",
        late.len(),
        eager.len(),
        idle.len(),
        late.len()
    );
    assert!(
        late.len() > 1024,
        "more than a window's worth: {}",
        late.len()
    );
    assert!(late.windows(2).all(|w| w[0] < w[1]), "in order, once each");
    assert_eq!(eager, late, "the watch read as the events came");
    assert_eq!(idle, late, "the watch that fell behind");
}
