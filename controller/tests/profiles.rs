//! Who the caller is, on both faces, as the console reads it to disable what the user may
//! not do; and the 401 that a page's script gets without the challenge that would make
//! the browser open its own login dialog over the console.

mod gateway_support;

use controller::auth::basic_header;
use gateway_support::*;
use proto::ocp::v1 as pb;
use proto::ocp::v1::profile_service_client::ProfileServiceClient;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Each test user and what `/profiles/me` must list, implied permissions included.
const EXPECTED: [(&str, &[&str]); 6] = [
    (
        ADMIN,
        &["HOST_VIEWER", "HOST_MANAGER", "TASK_VIEWER", "TASK_MANAGER"],
    ),
    (HOST_VIEWER, &["HOST_VIEWER"]),
    (HOST_MANAGER, &["HOST_VIEWER", "HOST_MANAGER"]),
    (TASK_VIEWER, &["TASK_VIEWER"]),
    (TASK_MANAGER, &["TASK_VIEWER", "TASK_MANAGER"]),
    (NOBODY, &[]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_reads_who_they_are_on_both_faces() {
    let h = Harness::start(false).await;
    for (user, permissions) in EXPECTED {
        for path in ["/profiles/me", "/api/v2/profiles/me"] {
            let reply = h.send(Method::GET, path, Some(user), None).await;
            reply.expect(StatusCode::OK).assert_envelope();
            assert_eq!(
                reply.json["data"],
                json!({"username": user, "permissions": permissions}),
                "{path} as {user}"
            );
        }
    }
    let anonymous = h.send(Method::GET, "/profiles/me", None, None).await;
    anonymous.expect(StatusCode::UNAUTHORIZED).assert_envelope();
    assert_eq!(anonymous.code(), 30001);

    let mut client = ProfileServiceClient::connect(format!("http://{}", h.grpc_addr()))
        .await
        .expect("connect");
    for (user, permissions) in EXPECTED {
        let me = client
            .get_current_user(grpc_request(
                pb::GetCurrentUserRequest {},
                Some(user),
                PASSWORD,
            ))
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(me.username, user);
        assert_eq!(me.permissions, permissions, "{user}");
    }
    let refused = client
        .get_current_user(grpc_request(pb::GetCurrentUserRequest {}, None, PASSWORD))
        .await
        .expect_err("no credentials");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripts_401_asks_the_browser_for_no_login_dialog() {
    let h = Harness::start(false).await;
    let challenge = |reply: &Reply| {
        reply
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    for path in [
        "/api/v2/profiles/me",
        "/compute/hosts",
        "/tasks/instances/1",
    ] {
        for credentials in [None, Some(basic_header(ADMIN, "not the password"))] {
            let send = |scripted: Option<&str>| {
                let mut request = h.http.get(h.url(path));
                if let Some(c) = &credentials {
                    request = request.header("authorization", c);
                }
                if let Some(value) = scripted {
                    request = request.header("x-requested-with", value);
                }
                async move { Reply::read(request.send().await.expect("answer")).await }
            };
            let plain = send(None).await;
            plain.expect(StatusCode::UNAUTHORIZED).assert_envelope();
            assert_eq!(
                challenge(&plain).as_deref(),
                Some("Basic realm=\"ocp\", charset=\"UTF-8\""),
                "{path}: a plain client is asked for credentials"
            );
            for value in ["XMLHttpRequest", "xmlhttprequest"] {
                let scripted = send(Some(value)).await;
                scripted.expect(StatusCode::UNAUTHORIZED).assert_envelope();
                assert_eq!(
                    challenge(&scripted),
                    None,
                    "{path}, X-Requested-With: {value}"
                );
                assert_eq!(scripted.json["error"], plain.json["error"], "{path}");
            }
            let other = send(Some("fetch")).await;
            assert!(
                challenge(&other).is_some(),
                "{path}: only XMLHttpRequest counts"
            );
        }
    }
    // Signed in, the header changes nothing.
    let ok = h
        .http
        .get(h.url("/profiles/me"))
        .header("authorization", basic_header(HOST_VIEWER, PASSWORD))
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await
        .expect("answer");
    let ok = Reply::read(ok).await;
    ok.expect(StatusCode::OK);
    assert_eq!(ok.json["data"]["username"], HOST_VIEWER);
    h.stop().await;
}
