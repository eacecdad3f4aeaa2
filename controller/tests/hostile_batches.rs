//! Batches as a hostile client sends them, against the real controller binary: too many
//! hosts, unknown hosts by the hundred thousand, and a million ids over gRPC. A batch is
//! capped on both faces, looked up in one query, and refused in a few lines.

mod common;

use std::time::{Duration, Instant};

use common::binary::SpawnedController;
use common::stores::test_stores;
use controller::model::NewHost;
use controller::service::MAX_BATCH_HOSTS;
use proto::ocp::v1::{BatchRestartAgentsRequest, BatchStopAgentsRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A REST batch stop of `ids`: the status, the answer's size in bytes, and the answer.
async fn rest_batch(c: &SpawnedController, ids: &[i64]) -> (StatusCode, usize, Value) {
    let response = reqwest::Client::new()
        .post(c.url("/api/v2/compute/hosts/batchStopAgents"))
        .basic_auth("admin", Some(&c.password))
        .json(&json!({ "hostIds": ids }))
        .send()
        .await
        .expect("the controller answers");
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, bytes.len(), json)
}

/// Ids no host has: a fresh controller has none.
fn unknown(n: usize) -> Vec<i64> {
    (1..=n as i64).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_cap_is_refused_on_both_faces() {
    let c = SpawnedController::start(&[]).await;
    let over = unknown(MAX_BATCH_HOSTS + 1);

    let (status, size, body) = rest_batch(&c, &over).await;
    eprintln!("REST, {} ids: {status}, {size} bytes", over.len());
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], 10001, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("10,001") && message.contains("10,000"),
        "{message}"
    );

    let refused = c
        .hosts_client()
        .await
        .batch_stop_agents(BatchStopAgentsRequest {
            host_ids: over.clone(),
            rollout: None,
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("10,000"), "{refused:?}");

    let doc: Value = reqwest::get(c.url("/api/v2/openapi.json"))
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert_eq!(
        doc["components"]["schemas"]["BatchHostsRequest"]["properties"]["hostIds"]["maxItems"],
        MAX_BATCH_HOSTS,
        "the OpenAPI document states the cap"
    );

    // The cap itself is allowed: those hosts are merely unknown.
    let (status, _, body) = rest_batch(&c, &unknown(MAX_BATCH_HOSTS)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_are_named_a_few_and_counted() {
    let c = SpawnedController::start(&[]).await;

    let (status, size, body) = rest_batch(&c, &unknown(100_000)).await;
    eprintln!("REST, 100,000 unknown ids: {status}, {size} bytes");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(size < 2_000, "{size} bytes answer 100,000 ids");

    let (status, size, body) = rest_batch(&c, &unknown(MAX_BATCH_HOSTS)).await;
    eprintln!("REST, 10,000 unknown ids: {status}, {size} bytes");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(size < 2_000, "{size} bytes answer 10,000 unknown ids");
    assert_eq!(
        body["error"]["message"], "hosts 1, 2, 3, 4, 5 and 9,995 more do not exist",
        "{body}"
    );
    let subs = body["error"]["subErrors"].as_array().expect("subErrors");
    assert_eq!(subs.len(), 6, "{body}");
    assert_eq!(subs[0]["rejectedValue"], 1, "{body}");
    assert_eq!(
        subs[5]["message"], "9,995 more hosts do not exist",
        "{body}"
    );

    let refused = c
        .hosts_client()
        .await
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: unknown(MAX_BATCH_HOSTS),
            rollout: None,
        })
        .await
        .expect_err("unknown hosts");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert_eq!(
        refused.message(),
        "hosts 1, 2, 3, 4, 5 and 9,995 more do not exist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_ids_over_grpc_are_refused_at_once() {
    let c = SpawnedController::start(&[]).await;
    let mut client = c.hosts_client().await;
    let cpu_before = c.cpu_time();
    let started = Instant::now();
    let refused = client
        .batch_stop_agents(BatchStopAgentsRequest {
            host_ids: unknown(1_000_000),
            rollout: None,
        })
        .await
        .expect_err("refused");
    let (wall, cpu) = (started.elapsed(), c.cpu_time() - cpu_before);
    eprintln!(
        "gRPC, 1,000,000 ids: {:?} after {wall:?}, controller CPU {cpu:?}",
        refused.code()
    );
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // Decoding ~3 MB of ids is all the work left; per-id lookups took 40 s of CPU.
    assert!(cpu < Duration::from_secs(5), "controller CPU {cpu:?}");
}

/// Statements the controller sent that look hosts up by id, as the database driver
/// itself logs every statement it executes (`sqlx::query` at debug).
fn host_lookups(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("sqlx::query") && l.contains("FROM hosts WHERE id"))
        .count()
}

async fn lookups_of_a_full_batch(extra: &[&str]) -> usize {
    let c = SpawnedController::start_logging(extra, "warn,sqlx::query=debug").await;
    let (status, _, body) = rest_batch(&c, &unknown(MAX_BATCH_HOSTS)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    host_lookups(&c.stop())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_is_looked_up_in_one_query() {
    let sqlite = lookups_of_a_full_batch(&[]).await;
    eprintln!("SQLite: {sqlite} host look-ups for 10,000 ids");
    assert_eq!(sqlite, 1);

    match FreshPostgres::create().await {
        Ok(db) => {
            let postgres = lookups_of_a_full_batch(&["--database-url", &db.url]).await;
            eprintln!("PostgreSQL: {postgres} host look-ups for 10,000 ids");
            assert_eq!(postgres, 1);
            db.drop().await;
        }
        Err(e) if std::env::var("OCP_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("PostgreSQL is required (OCP_REQUIRE_POSTGRES=1) but unusable: {e}")
        }
        Err(e) => eprintln!("skipping PostgreSQL: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_host_ids_answers_for_ten_thousand_ids_on_both_stores() {
    for t in test_stores().await {
        let mut real = Vec::new();
        for i in 0..3 {
            let host = t
                .store
                .insert_host(&NewHost {
                    name: format!("h{i}"),
                    inner_ip_address: format!("10.0.0.{i}"),
                    agent_port: 62888,
                })
                .await
                .expect("insert");
            real.push(host.id);
        }
        let mut ids: Vec<i64> = (1_000_000..1_000_000 + MAX_BATCH_HOSTS as i64 - 3).collect();
        ids.extend(&real);
        let found = t.store.existing_host_ids(&ids).await.expect("look-up");
        let mut found: Vec<i64> = found.into_iter().collect();
        found.sort();
        assert_eq!(found, real, "{}", t.name);
        assert!(
            t.store
                .existing_host_ids(&[])
                .await
                .expect("empty")
                .is_empty()
        );
    }
}

/// A PostgreSQL database made for one test and dropped after it.
struct FreshPostgres {
    admin: String,
    name: String,
    url: String,
}

impl FreshPostgres {
    async fn create() -> Result<FreshPostgres, String> {
        use sqlx::Connection;
        let admin = std::env::var("OCP_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .map_err(|e| format!("{admin}: {e}"))?;
        let name = format!("ocp_test_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("creating {name}: {e}"))?;
        let url = match admin.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{name}"),
            None => return Err(format!("cannot derive a database url from {admin}")),
        };
        Ok(FreshPostgres { admin, name, url })
    }

    async fn drop(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::AnyConnection::connect(&self.admin).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}
