//! Who the caller is, on both faces, as the console reads it to disable what the user may
//! not do.

mod gateway_support;

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
