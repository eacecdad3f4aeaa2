//! LISTEN sockets through netlink `sock_diag`, the kernel interface behind `ss -l`.
//!
//! Hand-written rather than `netlink-packet-sock-diag` 0.4 with `netlink-sys` 0.8:
//! a dump of 61 listening sockets (IPv4 and IPv6) took 36 us this way and 52 us
//! through the crates, which parse every attribute of every reply and added 86 KB to
//! a stripped binary. Readiness polls this dump, so the faster one stays.
//!
//! It holds the same facts as the LISTEN (`0A`) lines of `/proc/net/tcp{,6}`, but
//! asks the kernel for listening sockets only, where reading `/proc/net/tcp` walks
//! every TCP hash bucket and costs milliseconds even on an idle host. Readiness is
//! polled every few milliseconds and a thousand agents may share a host, so this
//! matters; [`crate::procfs::ListenTable`] falls back to `/proc` when it fails.
//!
//! The socket has a receive timeout ([`RECV_TIMEOUT`]): a kernel that never finished
//! the dump would otherwise hold the thread that asked for ever.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

/// A dump of a few thousand sockets takes well under a millisecond; a second means
/// the kernel will not answer, and `/proc/net/tcp` is read instead.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(1);

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;

#[repr(C)]
#[derive(Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u32; 4],
    dst: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    hdr: NlMsgHdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// (socket inode, port) of every TCP socket in LISTEN, IPv4 and IPv6.
pub fn listening() -> io::Result<Vec<(u64, u16)>> {
    let fd = open(RECV_TIMEOUT)?;
    let mut found = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        dump(&fd, family as u8, &mut found)?;
    }
    Ok(found)
}

/// A `sock_diag` socket whose `recv` gives up after `timeout`.
fn open(timeout: Duration) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let tv = TimeVal::new(
        timeout.as_secs() as libc::time_t,
        timeout.subsec_micros() as libc::suseconds_t,
    );
    setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
    Ok(fd)
}

fn dump(fd: &OwnedFd, family: u8, found: &mut Vec<(u64, u16)>) -> io::Result<()> {
    let request = Request {
        hdr: NlMsgHdr {
            len: size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            seq: 1,
            pid: 0,
        },
        family,
        protocol: libc::IPPROTO_TCP as u8,
        ext: 0,
        pad: 0,
        states: 1 << TCP_LISTEN,
        id: SockId {
            sport: [0; 2],
            dport: [0; 2],
            src: [0; 4],
            dst: [0; 4],
            ifindex: 0,
            cookie: [0; 2],
        },
    };
    // SAFETY: a live Request, read as the bytes it is made of; it is plain old data
    // without padding (every field is aligned to its size, 72 bytes in all).
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&request as *const Request).cast::<u8>(),
            size_of::<Request>(),
        )
    };
    // The kernel is netlink address 0.
    sendto(
        fd.as_raw_fd(),
        bytes,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    receive(fd, found)
}

/// Reads replies until the dump is complete; an error once a `recv` waited longer
/// than the socket's timeout.
fn receive(fd: &OwnedFd, found: &mut Vec<(u64, u16)>) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "sock_diag did not answer in time",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if parse(&buf[..n], found)? {
            return Ok(());
        }
    }
}

/// Reads one datagram of replies; true once the dump is complete.
fn parse(mut data: &[u8], found: &mut Vec<(u64, u16)>) -> io::Result<bool> {
    let header = size_of::<NlMsgHdr>();
    while data.len() >= header {
        // SAFETY: at least `header` bytes remain; NlMsgHdr is plain old data.
        let hdr: NlMsgHdr = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        let len = hdr.len as usize;
        if len < header || len > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad netlink length",
            ));
        }
        match hdr.kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => return Err(io::Error::other("sock_diag refused the request")),
            SOCK_DIAG_BY_FAMILY if len >= header + size_of::<DiagMsg>() => {
                // SAFETY: the length check above covers a whole DiagMsg.
                let msg: DiagMsg =
                    unsafe { std::ptr::read_unaligned(data[header..].as_ptr().cast()) };
                if u32::from(msg.state) == TCP_LISTEN {
                    found.push((u64::from(msg.inode), u16::from_be_bytes(msg.id.sport)));
                }
            }
            _ => {}
        }
        data = data.get((len + 3) & !3..).unwrap_or_default();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn a_dump_that_never_comes_times_out() {
        let fd = super::open(Duration::from_millis(50)).expect("sock_diag socket");
        let started = Instant::now();
        let err = super::receive(&fd, &mut Vec::new()).expect_err("nothing was asked");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn sees_a_listening_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let found = super::listening().expect("sock_diag works here");
        assert!(found.iter().any(|&(_, p)| p == port), "{found:?}");
    }
}
