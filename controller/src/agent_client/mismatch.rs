//! A controller dialling in plaintext an agent that serves TLS, found exactly and said in
//! plain words: the agent answers an HTTP/2 client without TLS with a GOAWAY for
//! INADEQUATE_SECURITY, and any other TLS server with a TLS record, which the plaintext
//! connection spots in the first bytes it reads. Without this the host's reason was
//! "h2 protocol error: http2 error".

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The words of the read error a plaintext connection fails with on a TLS record. HTTP/2
/// keeps only the kind and the words of an I/O error it passes on, so these words,
/// this module's own, are what [`speaks_tls`] finds again.
const TLS_RECORD: &str = "the peer answered with a TLS record";

/// Whether `first`, the first bytes a server sent, open a TLS record: an alert (0x15)
/// or a handshake (0x16), then major version 3. No HTTP/2 server starts so: its first
/// frame's length would be over a megabyte. One byte alone is judged by itself.
pub(super) fn tls_record(first: &[u8]) -> bool {
    matches!(first, [0x15 | 0x16] | [0x15 | 0x16, 0x03, ..])
}

/// Whether `error`, a call's failure on a plaintext connection, says that the agent
/// speaks TLS: its GOAWAY, or the TLS record this side read.
pub(super) fn speaks_tls(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(h2) = error.downcast_ref::<h2::Error>()
            && h2.is_go_away()
            && h2.is_remote()
            && h2.reason() == Some(h2::Reason::INADEQUATE_SECURITY)
        {
            return true;
        }
        if let Some(io) = error.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::InvalidData
            && io.to_string() == TLS_RECORD
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// The host's reason when the agent at `host` speaks TLS and this controller does not.
pub(super) fn words(host: &str) -> String {
    format!("the agent at {host} speaks TLS; start the controller with --pki-dir")
}

/// The error a call fails with when [`speaks_tls`]: found again by `classify` as a
/// mismatch no retry mends.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpeaksTls(pub String);

/// A plaintext connection that fails its first read when the agent's first bytes are a
/// TLS record, instead of handing them to HTTP/2 as a malformed frame.
pub struct Plain {
    tcp: TcpStream,
    /// Whether the first bytes were looked at.
    checked: bool,
}

impl Plain {
    pub fn new(tcp: TcpStream) -> Plain {
        Plain {
            tcp,
            checked: false,
        }
    }
}

impl AsyncRead for Plain {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if !self.checked && matches!(polled, Poll::Ready(Ok(()))) {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                self.checked = true;
                if tls_record(&read[..read.len().min(2)]) {
                    buf.set_filled(before);
                    let error = io::Error::new(io::ErrorKind::InvalidData, TLS_RECORD);
                    return Poll::Ready(Err(error));
                }
            }
        }
        polled
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_http2_frames() {
        assert!(tls_record(&[0x15, 0x03]), "an alert");
        assert!(tls_record(&[0x16, 0x03]), "a ServerHello");
        assert!(tls_record(&[0x15]), "one byte of an alert");
        assert!(!tls_record(&[0x00, 0x00]), "a SETTINGS frame's length");
        assert!(!tls_record(&[0x16, 0x00]));
        assert!(!tls_record(&[]));
        assert!(!tls_record(b"HT"));
    }

    #[test]
    fn the_read_error_is_found_again_through_http2s_copy_of_it() {
        // HTTP/2 passes an I/O error on as its kind and its words.
        let copied = io::Error::new(io::ErrorKind::InvalidData, TLS_RECORD.to_string());
        assert!(speaks_tls(&copied));
        let other = io::Error::new(io::ErrorKind::InvalidData, "frame too large");
        assert!(!speaks_tls(&other));
    }
}
