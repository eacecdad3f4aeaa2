//! Malformed bodies, paths, ids, queries and credentials thrown at a live gateway: the
//! answer is always a 4xx (or a 2xx) in the envelope, never a 5xx, never a dropped
//! connection.

mod gateway_support;

use gateway_support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("hostIds".to_string()),
                    Just("hostids".to_string()),
                    Just("innerIpAddress".to_string()),
                    Just("agentPort".to_string()),
                    Just("name".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        json_value().prop_map(|v| Some(v.to_string().into_bytes())),
        // Truncated or corrupted JSON.
        (json_value(), any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let text = format!(r#"{{"hostIds": {v}}}"#);
            let cut = at.index(text.len() + 1);
            Some(text.as_bytes()[..cut].to_vec())
        }),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(|ids| Some(
            serde_json::json!({ "hostIds": ids })
                .to_string()
                .into_bytes()
        )),
    ]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0i64..4).prop_map(|n| n.to_string()),
        Just("99999999999999999999999".to_string()),
        Just("1e3".to_string()),
        Just("0x10".to_string()),
        Just("%00".to_string()),
        Just("%FF%FE".to_string()),
        Just("..".to_string()),
        Just("".to_string()),
        "[a-zA-Z0-9._~-]{1,10}",
        "\\PC{1,6}".prop_map(|s| percent(&s)),
    ]
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn path() -> impl Strategy<Value = String> {
    let templates = prop_oneof![
        Just("/compute/hosts/batchRestartAgents"),
        Just("/compute/hosts/batchStopAgents"),
        Just("/compute/hosts/batchStartAgents"),
        Just("/compute/hosts/{}/agent/restart"),
        Just("/compute/hosts/{}/agent/stop"),
        Just("/compute/hosts/{}/agent/start"),
        Just("/compute/hosts/{}/agent/processes/{}/restart"),
        Just("/compute/hosts/{}/agent/processes/{}/stop"),
        Just("/compute/hosts/{}/agent/processes/{}/start"),
        Just("/compute/hosts/{}/agent/processes/{}/log"),
        Just("/compute/hosts/{}/agent"),
        Just("/compute/hosts/{}/agent/processes"),
        Just("/compute/hosts"),
        Just("/compute/hosts/{}"),
        Just("/tasks/instances"),
        Just("/tasks/instances/{}"),
        Just("/tasks/instances/{}/{}"),
        Just("/{}"),
        Just("/{}/{}/{}"),
    ];
    let query = prop_oneof![
        Just(String::new()),
        (id(), id()).prop_map(|(p, s)| format!("?page={p}&size={s}")),
        id().prop_map(|n| format!("?lines={n}")),
        (id(), id()).prop_map(|(s, h)| format!("?status={s}&hostId={h}&name={s}")),
        (id(), id()).prop_map(|(k, s)| format!("?keyword={k}&status={s}&sort={k}&status={k}")),
        "[a-z=&%0-9]{0,16}".prop_map(|q| format!("?{q}")),
    ];
    (templates, id(), id(), any::<bool>(), query).prop_map(|(t, a, b, v2, q)| {
        let path = t.replacen("{}", &a, 1).replacen("{}", &b, 1);
        format!("{}{path}{q}", if v2 { "/api/v2" } else { "" })
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        3 => Just(Method::GET),
        4 => Just(Method::POST),
        1 => Just(Method::DELETE),
        1 => Just(Method::PUT),
        1 => Just(Method::PATCH),
        1 => Just(Method::OPTIONS),
    ]
}

fn credentials() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(Some(controller::auth::basic_header(ADMIN, PASSWORD))),
        1 => Just(None),
        1 => Just(Some("Basic".to_string())),
        1 => Just(Some("Basic %%%".to_string())),
        1 => "[ -~]{0,20}".prop_map(Some),
        1 => Just(Some(controller::auth::basic_header(NOBODY, PASSWORD))),
    ]
}

#[test]
fn malformed_requests_never_get_a_5xx_or_a_dropped_connection() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let h = rt.block_on(async {
        let h = Harness::start(false).await;
        // Host 1 exists (its agent does not answer); other ids mostly do not.
        h.add_host("127.0.0.9", 1).await;
        h
    });
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &(method(), path(), body(), credentials()),
        |(method, path, body, credentials)| {
            let reply = rt.block_on(async {
                let mut request = h.http.request(method.clone(), h.url(&path));
                if let Some(c) = &credentials {
                    request = request.header("authorization", c.as_str());
                }
                if let Some(b) = &body {
                    request = request.body(b.clone());
                }
                match request.send().await {
                    Ok(response) => Ok(Reply::read(response).await),
                    Err(e) => Err(e),
                }
            });
            let reply = match reply {
                Ok(reply) => reply,
                // A URL the client itself refuses to build never reached the server.
                Err(e) if e.is_builder() => return Ok(()),
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "{method} {path}: connection failed: {e}"
                    )));
                }
            };
            prop_assert!(
                !reply.status.is_server_error(),
                "{method} {path} {:?}: {}",
                body.as_deref().map(String::from_utf8_lossy),
                reply.text
            );
            prop_assert!(
                reply.json["traceId"].is_string(),
                "{method} {path}: not an envelope: {}",
                reply.text
            );
            Ok(())
        },
    );
    rt.block_on(h.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}
