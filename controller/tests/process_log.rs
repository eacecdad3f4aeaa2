//! `GET /compute/hosts/{hostId}/agent/processes/{agentProcessId}/log` and its gRPC twin
//! `TailProcessLog`, against a real controller and a real agent whose process's log
//! the test writes: the last lines, the bounds of `lines`, a process without a log file,
//! who may read it, and an agent that is gone.

mod gateway_support;

use std::io::Write;

use gateway_support::*;
use proto::ocp::v1 as pb;
use proto::ocp::v1::host_agent_service_client::HostAgentServiceClient;
use reqwest::{Method, StatusCode};

#[track_caller]
fn field_and_value(reply: &Reply) -> (String, String) {
    let e = &reply.json["error"]["subErrors"][0];
    (
        e["field"].as_str().unwrap_or_default().to_string(),
        e["rejectedValue"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_route_answers_the_last_lines_and_refuses_what_it_cannot_read() {
    let mut h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    let cleaner = h.process_id(host, "ob_cleaner").await;
    let no_log = h.process_id(host, "mgr_agent").await;
    // ob_cleaner runs `sleep`, which writes nothing: the log holds what the test writes.
    // The agent may not have created it yet; it appends to the file as found.
    let log = h.dir.path().join("agent/log/ob_cleaner.log");
    std::fs::create_dir_all(h.dir.path().join("agent/log")).expect("log dir");
    let lines: String = (1..=300).map(|i| format!("cleaned {i}\n")).collect();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .expect("write the log");
    let route = format!("/compute/hosts/{host}/agent/processes/{cleaner}/log");

    let r = h.get(&format!("/api/v2{route}?lines=3")).await;
    r.expect(StatusCode::OK).assert_envelope();
    assert_eq!(
        r.json["data"]["log"],
        "cleaned 298\ncleaned 299\ncleaned 300\n"
    );
    let r = h.get(&route).await;
    r.expect(StatusCode::OK);
    let default = r.json["data"]["log"].as_str().expect("log");
    assert_eq!(default.lines().count(), 200, "200 lines by default");
    assert!(default.starts_with("cleaned 101\n"), "{default:?}");
    let r = h.get(&format!("{route}?lines=10000")).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["data"]["log"], lines.as_str());

    for bad in ["0", "10001", "abc", "-1", "1.5", "99999999999999999999"] {
        let r = h.get(&format!("{route}?lines={bad}")).await;
        r.expect(StatusCode::BAD_REQUEST).assert_envelope();
        assert_eq!(r.code(), 10001, "lines={bad}: {}", r.text);
        assert_eq!(
            field_and_value(&r),
            ("lines".to_string(), bad.to_string()),
            "lines={bad}: {}",
            r.text
        );
    }
    let r = h.get(&format!("{route}?line=5")).await;
    r.expect(StatusCode::BAD_REQUEST);
    assert_eq!(field_and_value(&r).0, "line");

    let r = h
        .get(&format!(
            "/compute/hosts/{host}/agent/processes/{no_log}/log"
        ))
        .await;
    r.expect(StatusCode::NOT_FOUND).assert_envelope();
    assert_eq!(r.code(), 10002);
    let message = r.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("mgr_agent") && message.contains("no log file"),
        "{message}"
    );
    for missing in [
        format!("/compute/hosts/{host}/agent/processes/7777/log"),
        format!("/compute/hosts/4242/agent/processes/{cleaner}/log"),
    ] {
        let r = h.get(&missing).await;
        r.expect(StatusCode::NOT_FOUND).assert_envelope();
        assert_eq!(r.code(), 10002, "{missing}: {}", r.text);
    }

    // HOST_VIEWER is enough; TASK_VIEWER is not.
    let r = h
        .send(
            Method::GET,
            &format!("{route}?lines=1"),
            Some(HOST_VIEWER),
            None,
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["data"]["log"], "cleaned 300\n");
    let r = h.send(Method::GET, &route, Some(TASK_VIEWER), None).await;
    r.expect(StatusCode::FORBIDDEN);
    assert_eq!(r.code(), 30014);

    // A log that is another name of some other file (a hard link the process's user
    // made) is refused as a conflict, and nothing of that file is shown.
    let secret = h.dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET 42\n").expect("secret");
    let kept = h.dir.path().join("agent/log/ob_cleaner.log.kept");
    std::fs::rename(&log, &kept).expect("set the log aside");
    std::fs::hard_link(&secret, &log).expect("hard link");
    let r = h.get(&route).await;
    r.expect(StatusCode::CONFLICT).assert_envelope();
    let message = r.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("hard links") && !r.text.contains("TOP SECRET"),
        "{}",
        r.text
    );
    std::fs::remove_file(&log).expect("remove the link");
    std::fs::rename(&kept, &log).expect("put the log back");

    // The same over gRPC.
    let mut grpc = HostAgentServiceClient::connect(format!("http://{}", h.grpc_addr()))
        .await
        .expect("connect");
    let ask = |process: i64, lines: Option<u32>| {
        grpc_request(
            pb::TailProcessLogRequest {
                host_id: host,
                agent_process_id: process,
                lines,
            },
            Some(HOST_VIEWER),
            PASSWORD,
        )
    };
    let log = grpc
        .tail_process_log(ask(cleaner, Some(2)))
        .await
        .expect("TailProcessLog")
        .into_inner()
        .log;
    assert_eq!(log, "cleaned 299\ncleaned 300\n");
    let e = grpc
        .tail_process_log(ask(cleaner, Some(0)))
        .await
        .expect_err("lines 0");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("lines:"), "{e:?}");
    let e = grpc
        .tail_process_log(ask(no_log, None))
        .await
        .expect_err("no log file");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // An agent that is gone is answered as the other agent-calling routes answer it.
    h.stop_agent().await;
    let r = h.get(&route).await;
    r.expect(StatusCode::SERVICE_UNAVAILABLE).assert_envelope();
    assert_eq!(r.code(), 40000);
    h.stop().await;
}
