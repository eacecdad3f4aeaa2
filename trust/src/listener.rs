//! The limits every listener of both binaries holds its clients to: one accept loop,
//! plaintext or TLS, that caps the connections open at once and closes a connection
//! that sends no complete request head in time, or that moves no bytes for too long.
//!
//! A descriptor is all a client needs to pin down a server that waits for it forever:
//! 200 sockets that sent half a header used to stay open 75 s and more, and with a low
//! descriptor limit real clients were turned away behind them ("Too many open files").

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_util::either::Either;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::transport::server::Connected;

use crate::incoming::{self, ConnInfo, TlsConn};
use crate::rate_log::Refusals;
use crate::server_tls::ServerTls;
use crate::waiting::{Ticket, Waiting};

/// How long a client may take, and how many may be connected at once, per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// From accept (TLS handshake included) to the end of the first request head, or of
    /// the HTTP/2 connection preface.
    pub header_timeout: Duration,
    /// No byte moved either way for this long closes the connection. Writes count so
    /// that a response still streaming (server-sent events) is not idle; a client that
    /// stops reading stops them too, since its socket buffer fills. On HTTP/2 the
    /// server's pings are answered by any live client, so there this closes dead or
    /// stalled peers only; the connection cap bounds the live ones.
    pub idle_timeout: Duration,
    /// Connections open at once, handshakes in progress included.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
        }
    }
}

impl ConnLimits {
    /// HTTP/2 streams one connection may have open at once, as advertised in its
    /// SETTINGS_MAX_CONCURRENT_STREAMS. hyper's server default, which the REST port
    /// keeps; tonic advertises no limit unless told, so its servers are told this.
    pub const MAX_STREAMS: u32 = 200;

    /// How often an HTTP/2 server pings, and how long it waits for the answer: well
    /// inside the idle timeout, so that the client's PING ACK, a read, keeps a long call
    /// or stream that sends nothing else from being taken for idle.
    pub fn keepalive_interval(&self) -> Duration {
        self.idle_timeout / 3
    }
}

/// A timeout flag's value: a humantime duration ("10s", "5m") longer than zero.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".to_string());
    }
    Ok(duration)
}

/// Which limit a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    Header,
    Idle,
}

/// When a connection is closed unless it moves bytes again, and for which limit.
pub(crate) fn deadline(
    limits: &ConnLimits,
    accepted: Instant,
    headed: bool,
    last_io: Instant,
) -> (Instant, Expiry) {
    let idle = (last_io + limits.idle_timeout, Expiry::Idle);
    let header = (accepted + limits.header_timeout, Expiry::Header);
    if headed || idle.0 < header.0 {
        idle
    } else {
        header
    }
}

/// Whether enough connections closed since the cap was hit that hitting it again is
/// worth a new log line: a tenth of the cap, so a flood that keeps the listener at its
/// cap logs once, not once per connection.
fn below_cap_again(available: usize, max: usize) -> bool {
    available >= (max / 10).max(1)
}

pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Spots the end of the first request head across reads split anywhere: an HTTP/1
/// blank line (a bare LF counts, as hyper accepts it), or the whole HTTP/2 preface,
/// whose first 18 bytes also hold a blank line.
#[derive(Debug, Default)]
pub(crate) struct HeadScan {
    /// Bytes of the HTTP/2 preface matched so far; `None` once the bytes diverged.
    preface: Option<usize>,
    newlines: u8,
    diverged: bool,
}

impl HeadScan {
    /// True once the bytes fed so far hold a complete head.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            if !self.diverged {
                let matched = self.preface.unwrap_or(0);
                if H2_PREFACE[matched] == byte {
                    self.preface = Some(matched + 1);
                    if matched + 1 == H2_PREFACE.len() {
                        return true;
                    }
                } else {
                    self.diverged = true;
                    self.preface = None;
                }
            }
            match byte {
                b'\n' => {
                    self.newlines = self.newlines.saturating_add(1);
                    if self.newlines >= 2 && self.diverged {
                        return true;
                    }
                }
                b'\r' => {}
                _ => self.newlines = 0,
            }
        }
        false
    }
}

/// Accepted connections, held to [`ConnLimits`], for tonic and axum.
pub struct Incoming {
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    local_addr: SocketAddr,
}

impl Incoming {
    /// Takes over `listener`, serving TLS with `tls` when given; the accept loop ends
    /// when this is dropped.
    pub fn new(
        listener: TcpListener,
        tls: Option<ServerTls>,
        limits: ConnLimits,
    ) -> io::Result<Incoming> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, tls, limits, tx));
        Ok(Incoming { ready, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection ready to serve; `None` once the loop ended.
    pub async fn accept(&mut self) -> Option<(Conn, SocketAddr)> {
        self.ready.recv().await
    }

    /// For `tonic::transport::Server::serve_with_incoming*`.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
        futures::stream::unfold(self, |mut incoming| async move {
            let (conn, _) = incoming.accept().await?;
            Some((Ok(conn), incoming))
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    limits: ConnLimits,
    ready: mpsc::Sender<(Conn, SocketAddr)>,
) {
    let local = listener.local_addr().ok();
    let max = limits.max_connections.max(1);
    let open = Arc::new(Semaphore::new(max));
    let waiting = Waiting::default();
    let handshaking = Waiting::default();
    let refusals = Arc::new(Refusals::default());
    let mut at_cap = false;
    loop {
        let accepted = tokio::select! {
            _ = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(n) = refusals.accept.hit() {
                    tracing::warn!(listener = ?local, "accept error ({n} since the last such line): {e}");
                }
                // Out of descriptors, most likely: give the clients a moment to leave.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let accepted_at = Instant::now();
        // Every handshake slot taken: the oldest unfinished handshake is closed for this
        // one, so connections that never finish theirs cannot keep real clients out.
        let handshake = tls.as_ref().map(|_| {
            let (ticket, evicted) = handshaking.enter_within(incoming::HANDSHAKES);
            if evicted && let Some(n) = refusals.evicted.hit() {
                tracing::warn!(
                    listener = ?local,
                    "{} TLS handshakes in progress: closed the oldest unfinished one to make \
                     room for a new connection ({n} since the last such line)",
                    incoming::HANDSHAKES
                );
            }
            ticket
        });
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => {
                if at_cap && below_cap_again(open.available_permits(), max) {
                    at_cap = false;
                }
                permit
            }
            Err(_) => {
                if !at_cap {
                    at_cap = true;
                    tracing::warn!(
                        listener = ?local,
                        "{max} connections open (--max-connections): each new one closes the \
                         oldest that has not sent a request yet, or waits for one to close"
                    );
                }
                waiting.evict_oldest();
                let permit = tokio::select! {
                    _ = ready.closed() => return,
                    permit = open.clone().acquire_owned() => permit,
                };
                match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                }
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("setting TCP_NODELAY: {e}");
        }
        let ticket = waiting.enter();
        let Some(tls) = &tls else {
            let conn = Conn::new(Either::Left(tcp), limits, accepted_at, ticket, permit);
            if ready.send((conn, peer)).await.is_err() {
                return;
            }
            continue;
        };
        let limit = incoming::HANDSHAKE_TIMEOUT.min(limits.header_timeout);
        let tls = tls.clone();
        let ready = ready.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            let evicted = ticket.token.clone();
            let crowded = handshake
                .as_ref()
                .map(|h| h.token.clone())
                .unwrap_or_default();
            let stream = tokio::select! {
                stream = incoming::handshake(tcp, peer, &tls, limit, &refusals) => stream,
                _ = evicted.cancelled() => {
                    tracing::debug!(%peer, "closed mid-handshake to make room under the connection cap");
                    None
                }
                _ = crowded.cancelled() => {
                    tracing::debug!(%peer, "closed mid-handshake to make room for a newer one");
                    None
                }
            };
            drop(handshake);
            if let Some(stream) = stream {
                let conn = Conn::new(
                    Either::Right(Box::new(stream)),
                    limits,
                    accepted_at,
                    ticket,
                    permit,
                );
                let _ = ready.send((conn, peer)).await;
            }
        });
    }
}

/// A plain or a TLS connection; `Either` reads and writes whichever it holds.
type Io = Either<TcpStream, Box<TlsConn>>;

/// A connection whose reads and writes fail once it ran into a limit, which makes the
/// server close it; it holds its place under the cap until dropped.
pub struct Conn {
    io: Io,
    limits: ConnLimits,
    accepted: Instant,
    last_io: Instant,
    /// Until the first head is complete.
    head: Option<Head>,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

struct Head {
    scan: HeadScan,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    _ticket: Ticket,
}

impl Conn {
    fn new(
        io: Io,
        limits: ConnLimits,
        accepted: Instant,
        ticket: Ticket,
        permit: OwnedSemaphorePermit,
    ) -> Conn {
        let (due, _) = deadline(&limits, accepted, false, accepted);
        Conn {
            io,
            limits,
            accepted,
            last_io: accepted,
            head: Some(Head {
                scan: HeadScan::default(),
                evicted: Box::pin(ticket.token.clone().cancelled_owned()),
                _ticket: ticket,
            }),
            timer: Box::pin(tokio::time::sleep_until(due)),
            _permit: permit,
        }
    }

    /// Fails once a limit ran out; otherwise makes sure the task wakes when it does.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(head) = &mut self.head
            && head.evicted.as_mut().poll(cx).is_ready()
        {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room under the connection cap: no request head sent yet",
            ));
        }
        // The timer is moved later only when it fires: activity never brings a deadline
        // closer, so resetting it on every read would be wasted work.
        while self.timer.as_mut().poll(cx).is_ready() {
            let (due, expiry) = deadline(
                &self.limits,
                self.accepted,
                self.head.is_none(),
                self.last_io,
            );
            if due <= Instant::now() {
                let message = match expiry {
                    Expiry::Header => format!(
                        "no complete request head within {:?}",
                        self.limits.header_timeout
                    ),
                    Expiry::Idle => format!("idle for {:?}", self.limits.idle_timeout),
                };
                return Err(io::Error::new(io::ErrorKind::TimedOut, message));
            }
            self.timer.as_mut().reset(due);
        }
        Ok(())
    }

    fn moved(&mut self) {
        self.last_io = Instant::now();
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match &self.io {
            Either::Left(tcp) => ConnInfo {
                tcp: tcp.connect_info(),
                client_role: None,
            },
            Either::Right(tls) => tls.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let headed = self.head.as_mut().is_some_and(|h| h.scan.feed(read));
            if headed {
                self.head = None;
            }
            self.moved();
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_deadline_runs_from_accept_and_the_idle_one_from_the_last_byte() {
        let limits = limits();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(7);
        assert_eq!(
            deadline(&limits, t0, false, later),
            (t0 + Duration::from_secs(10), Expiry::Header),
            "bytes before the head do not push its deadline back"
        );
        assert_eq!(
            deadline(&limits, t0, true, later),
            (later + Duration::from_secs(60), Expiry::Idle)
        );
        let short_idle = ConnLimits {
            idle_timeout: Duration::from_secs(2),
            ..limits
        };
        assert_eq!(
            deadline(&short_idle, t0, false, t0),
            (t0 + Duration::from_secs(2), Expiry::Idle),
            "an idle timeout shorter than the header one applies before the head too"
        );
    }

    #[test]
    fn the_end_of_a_head_is_found_across_split_reads() {
        let head = b"GET /compute/hosts HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 0..head.len() {
            let mut scan = HeadScan::default();
            let (a, b) = head.split_at(split);
            assert!(!scan.feed(a) || split == head.len(), "split at {split}");
            assert!(scan.feed(b), "split at {split}");
        }
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!scan.feed(b"\r"));
        assert!(scan.feed(b"\n"));
        assert!(HeadScan::default().feed(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(!HeadScan::default().feed(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    }

    #[test]
    fn the_http2_preface_is_a_head_only_when_whole() {
        for split in 1..H2_PREFACE.len() {
            let mut scan = HeadScan::default();
            assert!(
                !scan.feed(&H2_PREFACE[..split]),
                "{split} bytes of the preface"
            );
            assert!(scan.feed(&H2_PREFACE[split..]), "split at {split}");
        }
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"PRI * HTTP/2.0\r\n\r\nXM\r\n"));
        assert!(
            scan.feed(b"\r\n"),
            "garbage after a blank line ends at the next"
        );
        // A preface broken by newlines, newlines then: a head, and no counter overflow.
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"PRI * HTTP/2.0\r\n\r\n"));
        assert!(scan.feed(&[b'\n'; 1000]));
    }

    #[test]
    fn the_cap_logs_again_only_after_a_tenth_of_it_freed() {
        assert!(!below_cap_again(0, 4096));
        assert!(!below_cap_again(408, 4096));
        assert!(below_cap_again(409, 4096));
        assert!(below_cap_again(1, 5));
    }

    #[test]
    fn timeouts_must_be_positive_durations() {
        assert_eq!(parse_timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(
            parse_timeout("0s"),
            Err("must be longer than zero".to_string())
        );
        assert!(parse_timeout("soon").is_err());
    }
}
