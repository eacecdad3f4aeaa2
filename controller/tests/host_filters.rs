//! The host list filtered by status and keyword and sorted, over the wire on both faces:
//! what a console's search box and column headers send, and the 400s for what they must
//! not. The store's side on SQLite and PostgreSQL is `store.rs`.

mod gateway_support;

use std::time::Duration;

use controller::service::MAX_KEYWORD_CHARS;
use gateway_support::*;
use proto::ocp::v1 as pb;
use proto::ocp::v1::host_agent_service_client::HostAgentServiceClient;
use reqwest::StatusCode;
use serde_json::json;

/// The names of the page's hosts and the filtered total.
fn names(reply: &Reply) -> (Vec<String>, i64) {
    reply.expect(StatusCode::OK).assert_envelope();
    let data = &reply.json["data"];
    let names = data["contents"]
        .as_array()
        .expect("contents")
        .iter()
        .map(|h| h["name"].as_str().expect("name").to_string())
        .collect();
    (
        names,
        data["page"]["totalElements"].as_i64().expect("total"),
    )
}

fn expected(names: &[&str], total: i64) -> (Vec<String>, i64) {
    (names.iter().map(|n| n.to_string()).collect(), total)
}

/// A query string value, percent-encoded.
fn q(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Hosts named as given, at unreachable addresses: they stay NEW for the heartbeat's
/// 30 s of grace, longer than the test.
async fn add_named(h: &Harness, hosts: &[(&str, &str)]) {
    for (name, address) in hosts {
        h.post(
            "/compute/hosts",
            json!({"innerIpAddress": address, "agentPort": 1, "name": name}),
        )
        .await
        .expect(StatusCode::OK);
    }
}

async fn wait_online(h: &Harness, host: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.get(&format!("/compute/hosts/{host}")).await.json["data"]["status"] != "ONLINE" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "host {host} never came ONLINE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_list_filters_and_sorts_on_rest() {
    let h = Harness::start(true).await;
    let agent_host = h.add_agent_host().await;
    add_named(
        &h,
        &[
            ("web_1", "127.0.0.21"),
            ("webx1", "127.0.0.22"),
            ("Web%2", "127.0.0.23"),
            ("db", "10.9.8.7"),
        ],
    )
    .await;
    wait_online(&h, agent_host).await;
    let list = |query: String| {
        let h = &h;
        async move { names(&h.get(&format!("/api/v2/compute/hosts?{query}")).await) }
    };

    assert_eq!(
        list(String::new()).await,
        expected(&["127.0.0.1", "web_1", "webx1", "Web%2", "db"], 5),
        "unfiltered, oldest first as before"
    );
    assert_eq!(
        list("status=ONLINE".into()).await,
        expected(&["127.0.0.1"], 1)
    );
    assert_eq!(
        list("status=NEW&size=2".into()).await,
        expected(&["web_1", "webx1"], 4),
        "the total counts the filtered hosts"
    );
    assert_eq!(
        list("status=ONLINE,OFFLINE".into()).await,
        expected(&["127.0.0.1"], 1)
    );
    assert_eq!(
        list("status=ONLINE&status=NEW&size=10".into()).await,
        list("status=NEW,ONLINE".into()).await,
        "repeated and comma-separated statuses are the same filter"
    );
    assert_eq!(list("status=OFFLINE".into()).await, expected(&[], 0));
    assert_eq!(
        list(format!("keyword={}", q("WEB_"))).await,
        expected(&["web_1"], 1),
        "`_` is itself, and letters match in either case"
    );
    assert_eq!(
        list(format!("keyword={}", q("%"))).await,
        expected(&["Web%2"], 1),
        "`%` is itself"
    );
    assert_eq!(
        list("keyword=127.0.0.2".into()).await,
        expected(&["web_1", "webx1", "Web%2"], 3),
        "the inner IP address is searched too"
    );
    assert_eq!(
        list("keyword=web&status=NEW&sort=name,desc".into()).await,
        expected(&["webx1", "web_1", "Web%2"], 3)
    );
    assert_eq!(
        list("sort=name,asc".into()).await,
        expected(&["127.0.0.1", "Web%2", "db", "web_1", "webx1"], 5)
    );
    assert_eq!(
        list("sort=innerIpAddress,asc&size=1".into()).await,
        expected(&["db"], 5),
        "addresses are ordered as text"
    );
    assert_eq!(
        list("sort=status,desc&size=1".into()).await,
        expected(&["127.0.0.1"], 5)
    );
    assert_eq!(
        list("sort=id,desc&page=2&size=2".into()).await,
        expected(&["webx1", "web_1"], 5)
    );
    assert_eq!(list("sort=updateTime,desc".into()).await.1, 5);
    assert_eq!(
        list("sort=createTime".into()).await,
        list(String::new()).await,
        "a bare key sorts in the list's default direction"
    );

    let over_long = "x".repeat(MAX_KEYWORD_CHARS + 1);
    for (query, field, rejected) in [
        ("status=BOGUS".to_string(), "status", json!("BOGUS")),
        (
            "status=ONLINE,online".to_string(),
            "status",
            json!("ONLINE,online"),
        ),
        ("sort=foo,asc".to_string(), "sort", json!("foo,asc")),
        (
            "sort=name,sideways".to_string(),
            "sort",
            json!("name,sideways"),
        ),
        (
            format!("keyword={over_long}"),
            "keyword",
            json!("257 characters"),
        ),
        ("keyword=a%00b".to_string(), "keyword", json!("a\\u{0}b")),
        ("order=name".to_string(), "order", json!("name")),
    ] {
        for prefix in ["", "/api/v2"] {
            let reply = h.get(&format!("{prefix}/compute/hosts?{query}")).await;
            reply.expect(StatusCode::BAD_REQUEST).assert_envelope();
            assert_eq!(reply.code(), 10001, "{query}: {}", reply.text);
            let sub = &reply.json["error"]["subErrors"][0];
            assert_eq!(sub["field"], field, "{query}: {}", reply.text);
            assert_eq!(sub["rejectedValue"], rejected, "{query}: {}", reply.text);
            let message = reply.json["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
        }
    }
    assert_eq!(
        list(format!("keyword={}", "x".repeat(MAX_KEYWORD_CHARS))).await,
        expected(&[], 0),
        "256 characters are still a keyword"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_list_filters_and_sorts_on_grpc() {
    let h = Harness::start(false).await;
    add_named(
        &h,
        &[
            ("web_1", "127.0.0.21"),
            ("webx1", "127.0.0.22"),
            ("Web%2", "127.0.0.23"),
        ],
    )
    .await;
    let mut client = HostAgentServiceClient::connect(format!("http://{}", h.grpc_addr()))
        .await
        .expect("connect");
    let mut list = async |request: pb::ListHostsRequest| {
        client
            .list_hosts(grpc_request(request, Some(HOST_VIEWER), PASSWORD))
            .await
            .map(|page| {
                let page = page.into_inner();
                let names: Vec<String> = page.contents.into_iter().map(|h| h.name).collect();
                (names, page.page.expect("page").total_elements)
            })
    };

    let found = list(pb::ListHostsRequest {
        keyword: "WEB_".into(),
        ..Default::default()
    })
    .await
    .expect("keyword");
    assert_eq!(found, expected(&["web_1"], 1));
    let found = list(pb::ListHostsRequest {
        status: vec!["NEW".into(), "ONLINE,OFFLINE".into()],
        sort: "name,asc".into(),
        size: 2,
        ..Default::default()
    })
    .await
    .expect("statuses");
    assert_eq!(found, expected(&["Web%2", "web_1"], 3));
    let found = list(pb::ListHostsRequest {
        status: vec!["OFFLINE".into()],
        ..Default::default()
    })
    .await
    .expect("none offline");
    assert_eq!(found, expected(&[], 0));

    for (request, field) in [
        (
            pb::ListHostsRequest {
                status: vec!["BOGUS".into()],
                ..Default::default()
            },
            "status",
        ),
        (
            pb::ListHostsRequest {
                sort: "name,sideways".into(),
                ..Default::default()
            },
            "sort",
        ),
        (
            pb::ListHostsRequest {
                sort: "foo,asc".into(),
                ..Default::default()
            },
            "sort",
        ),
        (
            pb::ListHostsRequest {
                keyword: "x".repeat(MAX_KEYWORD_CHARS + 1),
                ..Default::default()
            },
            "keyword",
        ),
    ] {
        let refused = list(request.clone()).await.expect_err("refused");
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{request:?}: {refused:?}"
        );
        assert!(
            refused.message().starts_with(&format!("{field}: ")),
            "{request:?}: {}",
            refused.message()
        );
    }
    h.stop().await;
}
