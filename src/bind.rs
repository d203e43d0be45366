//! BIND: a listening socket for one inbound call from the application
//! server, and the wait for it.
//!
//! The flow: [`listen_addr`] picks the local address (a route lookup towards
//! the application server, or `--bind-address`), [`listen`] opens the socket
//! on port 0 or the first free port of `--bind-ports`, and [`wait`] waits for
//! exactly one connection while watching the client. [`check`] then tells
//! whether the caller is the expected peer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, MsgFlags};

use crate::net::Deadline;
use crate::outcome::Refusal;
use crate::request::{REPLY_GRANTED, REPLY_REJECTED};

/// The local IPv4 address this host would use to reach `peer`: the source
/// address the kernel picks for a UDP socket connected to it. No packet is
/// sent. `port` only has to be non-zero.
pub fn route_source(peer: Ipv4Addr, port: u16) -> io::Result<Ipv4Addr> {
    let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    udp.connect((peer, port.max(1)))?;
    match udp.local_addr()? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(_) => Err(io::Error::other("route lookup gave an IPv6 address")),
    }
}

/// Where to listen for the call from `peer`: `configured` if given
/// (`--bind-address`, for NAT), else the route lookup's answer. The client
/// reached us on one side of a multi-homed host; the application server is
/// usually on the other, so the client's local address would be wrong.
pub fn listen_addr(configured: Option<Ipv4Addr>, peer: Ipv4Addr, port: u16) -> Result<Ipv4Addr, Refusal> {
    match configured {
        Some(a) => Ok(a),
        None => route_source(peer, port).map_err(|e| Refusal::BindFailed(format!("route lookup for {peer}: {e}"))),
    }
}

/// Opens a non-blocking listening socket on `ip`: on an ephemeral port when
/// `ports` is `None`, else on the first port of the range that is free.
/// Returns the socket and its address.
pub fn listen(ip: Ipv4Addr, ports: Option<RangeInclusive<u16>>) -> Result<(TcpListener, SocketAddrV4), Refusal> {
    let open = |port: u16| -> io::Result<(TcpListener, SocketAddrV4)> {
        let l = TcpListener::bind((ip, port))?;
        l.set_nonblocking(true)?;
        match l.local_addr()? {
            SocketAddr::V4(a) => Ok((l, a)),
            SocketAddr::V6(_) => Err(io::Error::other("listening socket is not IPv4")),
        }
    };
    let fail = |e: io::Error, port: u16| Refusal::BindFailed(format!("listen on {ip}:{port}: {e}"));
    let Some(range) = ports else {
        return open(0).map_err(|e| fail(e, 0));
    };
    let (lo, hi) = (*range.start(), *range.end());
    for port in range {
        match open(port) {
            Ok(found) => return Ok(found),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(fail(e, port)),
        }
    }
    Err(Refusal::BindFailed(format!("no free port in {lo}-{hi} on {ip}")))
}

/// How the wait for the inbound call ended.
#[derive(Debug)]
pub enum Wait {
    /// A connection arrived: the stream (non-blocking) and its source.
    Called(TcpStream, SocketAddr),
    /// The deadline passed with no call.
    Timeout,
    /// The client closed its connection.
    ClientClosed,
    /// The client sent data before the second reply.
    ClientData,
    /// The client's socket or the listener failed.
    Error(String),
}

impl Wait {
    /// The audit `reason=` keyword for a wait that ended without a call.
    pub fn reason(&self) -> &'static str {
        match self {
            Wait::Called(..) => "called",
            Wait::Timeout => "timeout",
            Wait::ClientClosed => "client-closed",
            Wait::ClientData => "client-data",
            Wait::Error(_) => "error",
        }
    }
}

/// Waits until `deadline` for exactly one connection on `listener`, while
/// watching `client`: if the client closes, fails or sends anything, the
/// wait gives up. `pending` is what the client sent after its request; if
/// it is not empty the client has already broken the protocol. The
/// listener is closed before returning, so no second call is taken and
/// the port is free again.
pub fn wait(listener: TcpListener, client: &TcpStream, pending: &[u8], deadline: Deadline) -> Wait {
    if !pending.is_empty() {
        return Wait::ClientData;
    }
    loop {
        let Some(left) = deadline.remaining() else {
            return Wait::Timeout;
        };
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Wait::Error(format!("poll: {e}")),
        }
        let client_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let listener_ready = fds[1].revents().unwrap_or(PollFlags::empty());
        // The client first: a call for a client that has gone is no use.
        if !client_ready.is_empty() {
            let mut probe = [0u8; 1];
            match socket::recv(client.as_raw_fd(), &mut probe, MsgFlags::MSG_PEEK) {
                Ok(0) => return Wait::ClientClosed,
                Ok(_) => return Wait::ClientData,
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => return Wait::Error(format!("client: {e}")),
            }
        }
        if !listener_ready.is_empty() {
            match listener.accept() {
                Ok((stream, from)) => {
                    return match stream.set_nonblocking(true) {
                        Ok(()) => Wait::Called(stream, crate::net::unmap(from)),
                        Err(e) => Wait::Error(format!("inbound: set non-blocking: {e}")),
                    };
                }
                // The caller gave up between poll and accept.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionAborted) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Wait::Error(format!("accept: {e}")),
            }
        }
    }
}

/// Whether a call from `from` is the one the client asked for: its source
/// address must be one of `expected` (DSTIP, or the addresses a SOCKS4a
/// name resolved to). Returns the second reply's code.
pub fn check(from: SocketAddr, expected: &[Ipv4Addr]) -> u8 {
    match from.ip() {
        IpAddr::V4(ip) if expected.contains(&ip) => REPLY_GRANTED,
        _ => REPLY_REJECTED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (c, s)
    }

    #[test]
    fn route_to_loopback_is_loopback() {
        assert!(route_source(Ipv4Addr::LOCALHOST, 21).unwrap().is_loopback());
    }

    #[test]
    fn listen_takes_the_first_free_port_of_the_range() {
        let (first, a) = listen(Ipv4Addr::LOCALHOST, None).unwrap();
        let p = a.port();
        if p == u16::MAX {
            return;
        }
        let (_second, b) = listen(Ipv4Addr::LOCALHOST, Some(p..=p + 1)).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(b.port(), p + 1);
        let err = listen(Ipv4Addr::LOCALHOST, Some(p..=p)).unwrap_err();
        assert_eq!(err.reason(), "bind-failed");
        assert!(err.detail().unwrap().contains("no free port"), "{err:?}");
        drop(first);
    }

    #[test]
    fn wait_gives_up_when_the_client_closes() {
        let (client_end, ours) = pair();
        let (l, _) = listen(Ipv4Addr::LOCALHOST, None).unwrap();
        drop(client_end);
        let w = wait(l, &ours, &[], Deadline::after(Duration::from_secs(10)));
        assert!(matches!(w, Wait::ClientClosed), "{w:?}");
    }

    #[test]
    fn wait_gives_up_when_the_client_sends() {
        let (mut client_end, ours) = pair();
        let (l, _) = listen(Ipv4Addr::LOCALHOST, None).unwrap();
        client_end.write_all(b"x").unwrap();
        let w = wait(l, &ours, &[], Deadline::after(Duration::from_secs(10)));
        assert!(matches!(w, Wait::ClientData), "{w:?}");
        let (_c, ours) = pair();
        let (l, _) = listen(Ipv4Addr::LOCALHOST, None).unwrap();
        let w = wait(l, &ours, b"early", Deadline::after(Duration::from_secs(10)));
        assert!(matches!(w, Wait::ClientData), "{w:?}");
    }

    #[test]
    fn wait_times_out() {
        let (_c, ours) = pair();
        let (l, _) = listen(Ipv4Addr::LOCALHOST, None).unwrap();
        let t = Instant::now();
        let w = wait(l, &ours, &[], Deadline::after(Duration::from_millis(300)));
        assert!(matches!(w, Wait::Timeout), "{w:?}");
        assert!(t.elapsed() >= Duration::from_millis(290));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn wait_takes_one_call_then_stops_listening() {
        let (_c, ours) = pair();
        let (l, a) = listen(Ipv4Addr::LOCALHOST, None).unwrap();
        let caller = TcpStream::connect(a).unwrap();
        let w = wait(l, &ours, &[], Deadline::after(Duration::from_secs(10)));
        let Wait::Called(_s, from) = w else { panic!("{w:?}") };
        assert_eq!(from, caller.local_addr().unwrap());
        assert!(TcpStream::connect(a).is_err(), "still listening on {a}");
        assert!(TcpListener::bind(a).is_ok(), "port {a} not released");
    }

    #[test]
    fn check_compares_the_source_address() {
        let from: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(check(from, &[Ipv4Addr::LOCALHOST]), REPLY_GRANTED);
        assert_eq!(check(from, &[Ipv4Addr::new(127, 0, 0, 2)]), REPLY_REJECTED);
        assert_eq!(check(from, &[]), REPLY_REJECTED);
    }
}
