//! A client that speaks plaintext to a TLS port, told so in its own protocol: an
//! `http://` request gets a 400 saying the port speaks HTTPS, an HTTP/2 client without
//! TLS (a controller without `--pki-dir`, `grpcurl -plaintext`) a GOAWAY saying the
//! same. Answered with TLS alert bytes instead, curl showed "Received HTTP/0.9" and an
//! HTTP/2 client a frame error.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::listener::{H2_PREFACE, HeadScan};

/// The content type of a TLS handshake record: every ClientHello starts with it.
const TLS_HANDSHAKE: u8 = 0x16;

/// A request head longer than this is not read further: the answer is the same.
const MAX_HEAD: usize = 16 << 10;

/// After answering, what the client still sends is read and dropped for this long, at
/// most [`MAX_DRAIN`] bytes: a socket closed with unread bytes resets the connection,
/// and the reset can reach the client before it read the answer.
const DRAIN: Duration = Duration::from_secs(1);
const MAX_DRAIN: usize = 64 << 10;

/// HTTP/2's INADEQUATE_SECURITY: the error code a GOAWAY to a plaintext client carries,
/// by which the controller tells an agent that speaks TLS from a broken one.
const INADEQUATE_SECURITY: u32 = 0xc;

/// What the 400 and the GOAWAY say.
const HTTPS_ONLY: &str = "this port speaks HTTPS (TLS): use https://, not http://";

/// Whether `first`, the first byte a client sent, opens a TLS handshake.
pub(crate) fn opens_tls(first: u8) -> bool {
    first == TLS_HANDSHAKE
}

/// The answer to a plaintext client whose request head (or HTTP/2 preface) is `head`.
fn answer(head: &[u8]) -> Vec<u8> {
    if head.starts_with(H2_PREFACE) {
        let mut frames = Vec::new();
        // A server's preface is a SETTINGS frame, before any other.
        frame(&mut frames, 0x4, &[]);
        let mut goaway = Vec::new();
        goaway.extend_from_slice(&0u32.to_be_bytes()); // last stream id: none served
        goaway.extend_from_slice(&INADEQUATE_SECURITY.to_be_bytes());
        goaway.extend_from_slice(HTTPS_ONLY.as_bytes());
        frame(&mut frames, 0x7, &goaway);
        return frames;
    }
    let body = format!("{HTTPS_ONLY}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An HTTP/2 frame of `kind` on stream 0, without flags.
fn frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Reads the plaintext client's request head until `deadline`, answers it, and closes
/// the connection. A client that sends no complete head in time is closed unanswered,
/// as any other slow client.
pub(crate) async fn refuse(mut tcp: TcpStream, deadline: Instant) {
    let mut head = Vec::new();
    let mut scan = HeadScan::default();
    let mut buf = [0u8; 4096];
    let complete = loop {
        let read = match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return,
        };
        if read == 0 {
            break !head.is_empty();
        }
        head.extend_from_slice(&buf[..read]);
        if scan.feed(&buf[..read]) || head.len() >= MAX_HEAD {
            break true;
        }
    };
    if !complete {
        return;
    }
    let written = tokio::time::timeout_at(deadline, async {
        tcp.write_all(&answer(&head)).await?;
        tcp.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let drain = async {
        let mut drained = 0;
        while drained < MAX_DRAIN {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_handshake_record_opens_tls() {
        assert!(opens_tls(0x16));
        for first in [b'G', b'P', b'\r', 0x15, 0x00] {
            assert!(!opens_tls(first), "{first:#x}");
        }
    }

    #[test]
    fn an_http1_request_gets_a_400_saying_https() {
        let answer = String::from_utf8(answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("Connection: close"), "{head}");
        assert!(
            body.contains("HTTPS") && body.contains("https://"),
            "{body}"
        );
    }

    #[test]
    fn an_http2_client_gets_settings_then_a_goaway_for_inadequate_security() {
        let bytes = answer(H2_PREFACE);
        // SETTINGS: empty, stream 0.
        assert_eq!(&bytes[..9], &[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        let goaway = &bytes[9..];
        let len = usize::from(goaway[1]) << 8 | usize::from(goaway[2]);
        assert_eq!(goaway[0], 0);
        assert_eq!(goaway[3], 0x7, "GOAWAY");
        assert_eq!(&goaway[5..9], &[0, 0, 0, 0], "stream 0");
        let payload = &goaway[9..];
        assert_eq!(payload.len(), len);
        assert_eq!(&payload[..4], &[0, 0, 0, 0], "no stream served");
        assert_eq!(&payload[4..8], &INADEQUATE_SECURITY.to_be_bytes());
        assert_eq!(&payload[8..], HTTPS_ONLY.as_bytes());
    }
}
