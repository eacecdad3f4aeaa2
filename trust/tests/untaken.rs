//! A call refused by a draining server's GOAWAY is told from a call the server took:
//! a server speaking HTTP/2 frame by frame answers a real tonic call's stream with a
//! GOAWAY that leaves it out, or one that includes it, and then closes.

use std::net::SocketAddr;

use proto::agent::v1::GetAgentInfoRequest;
use proto::agent::v1::agent_service_client::AgentServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("a small frame")
        .to_be_bytes();
    let mut bytes = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    bytes.extend_from_slice(payload);
    bytes
}

/// Serves one connection: settles the settings, waits for the call's HEADERS, answers
/// with a GOAWAY (NO_ERROR) whose last stream is `last`, and closes.
async fn drain_at(last: u32) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut preface = [0; PREFACE.len()];
        tcp.read_exact(&mut preface).await.expect("preface");
        assert_eq!(preface, PREFACE);
        tcp.write_all(&frame(SETTINGS, 0, &[]))
            .await
            .expect("settings");
        loop {
            let (kind, flags) = read_frame(&mut tcp).await;
            if kind == SETTINGS && flags & ACK == 0 {
                tcp.write_all(&frame(SETTINGS, ACK, &[]))
                    .await
                    .expect("ack");
            }
            if kind == HEADERS {
                break;
            }
        }
        let mut goaway = last.to_be_bytes().to_vec();
        goaway.extend_from_slice(&0u32.to_be_bytes());
        tcp.write_all(&frame(GOAWAY, 0, &goaway))
            .await
            .expect("goaway");
        tcp.shutdown().await.ok();
    });
    addr
}

/// The next frame's type and flags; its payload is read and dropped.
async fn read_frame(tcp: &mut TcpStream) -> (u8, u8) {
    let mut head = [0; 9];
    tcp.read_exact(&mut head).await.expect("a frame header");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload).await.expect("a frame payload");
    (head[3], head[4])
}

async fn call(addr: SocketAddr) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    AgentServiceClient::new(channel)
        .get_agent_info(GetAgentInfoRequest {})
        .await
        .expect_err("nothing answers the call")
}

#[tokio::test]
async fn a_stream_past_the_goaways_last_was_not_taken() {
    let status = call(drain_at(0).await).await;
    assert!(trust::untaken(&status), "{status:?}");
}

#[tokio::test]
async fn a_stream_the_goaway_includes_may_have_been_acted_on() {
    let status = call(drain_at(1).await).await;
    assert!(!trust::untaken(&status), "{status:?}");
}
