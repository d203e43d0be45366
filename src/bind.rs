//! BIND: listen for the one connection an application server makes back
//! to the client (active FTP and other call-back protocols).
//!
//! The functions take already-made sockets and addresses so tests can
//! drive them; the flow (first reply, wait, check, second reply) is in
//! `session`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{self, MsgFlags};

use crate::net::{self, Deadline};

/// The local address this host would use to reach `peer`: a route lookup
/// through a connected UDP socket, which sends nothing. On a multi-homed
/// proxy this is the side the application server is on, which is not the
/// address the client used to reach us.
pub fn route_source(peer: IpAddr) -> io::Result<IpAddr> {
    let any: IpAddr = match peer {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let probe = UdpSocket::bind((any, 0))?;
    // The port is irrelevant: connect on UDP only picks a route.
    probe.connect((peer, 9))?;
    Ok(probe.local_addr()?.ip())
}

/// How many ports of a `--bind-ports` range one BIND tries, each a
/// different one, before it gives up: all of a range up to this size.
pub const MAX_PORT_TRIES: u32 = 256;

/// Opens a non-blocking listening socket on `ip`: any port when `ports` is
/// `None`, else a port of the inclusive range chosen at random, so that no
/// one can tell beforehand which it will be. Ports in use are passed over
/// for others, at most [`MAX_PORT_TRIES`] different ones; a range where
/// none was free is an `AddrInUse` error naming the range.
pub fn listen(ip: IpAddr, ports: Option<(u16, u16)>) -> io::Result<TcpListener> {
    let listener = match ports {
        None => TcpListener::bind((ip, 0))?,
        Some((lo, hi)) => {
            let mut found = None;
            for port in spread(lo, hi, random()).take(MAX_PORT_TRIES as usize) {
                match TcpListener::bind((ip, port)) {
                    Ok(l) => {
                        found = Some(l);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                    Err(e) => return Err(e),
                }
            }
            found
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, format!("no free port in {lo}-{hi} on {ip}")))?
        }
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Every port from `lo` to `hi` once, in an order `seed` picks: from a
/// starting port, by a step that shares no factor with the range's size.
fn spread(lo: u16, hi: u16, seed: u64) -> impl Iterator<Item = u16> {
    let size = u64::from(hi.saturating_sub(lo)) + 1;
    let start = seed % size;
    let mut step = (seed >> 32) % size + 1;
    while gcd(step, size) != 1 {
        step += 1;
    }
    (0..size).map(move |i| lo + ((start + i * step) % size) as u16)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// 64 bits no one outside this process can predict: the standard
/// library's hash keys come from the kernel's random source (getrandom).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// How the wait for the inbound connection ended.
#[derive(Debug)]
pub enum Inbound {
    /// A connection from an expected address arrived; the listener has
    /// accepted it.
    Call(TcpStream, SocketAddr),
    /// The deadline passed with no connection.
    Timeout,
    /// The client closed, failed, or sent data while it should have been
    /// waiting for the second reply. The text says which.
    ClientGone(String),
}

/// Waits until `deadline` for a connection on `listener` from one of
/// `expect`, while watching `client`: if the client closes or sends
/// anything, the wait is over. A connection from anywhere else is closed
/// at once and handed to `stranger` (its address), and the wait goes on.
/// The returned stream is non-blocking.
pub fn wait(
    listener: &TcpListener,
    client: &TcpStream,
    deadline: Deadline,
    expect: &[IpAddr],
    mut stranger: impl FnMut(SocketAddr),
) -> io::Result<Inbound> {
    loop {
        let Some(left) = deadline.remaining() else {
            return Ok(Inbound::Timeout);
        };
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        ) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            let mut byte = [0u8; 1];
            match socket::recv(client.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK) {
                Ok(0) => return Ok(Inbound::ClientGone("client closed".into())),
                Ok(_) => return Ok(Inbound::ClientGone("client sent data before the second reply".into())),
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => return Ok(Inbound::ClientGone(format!("client error: {e}"))),
            }
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let peer = net::unmap(peer);
                    if !expect.contains(&peer.ip()) {
                        drop(stream);
                        stranger(peer);
                        continue;
                    }
                    stream.set_nonblocking(true)?;
                    return Ok(Inbound::Call(stream, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                // The caller gave up between poll and accept.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn route_to_loopback_is_loopback() {
        assert!(route_source(Ipv4Addr::LOCALHOST.into()).unwrap().is_loopback());
    }

    #[test]
    fn port_range_finds_its_free_port_and_reports_exhaustion() {
        let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
        // Find two adjacent free ports by trying a few.
        let base = (20000..60000)
            .step_by(97)
            .find(|&p| TcpListener::bind((ip, p)).is_ok() && TcpListener::bind((ip, p + 1)).is_ok())
            .unwrap();
        let hold = TcpListener::bind((ip, base)).unwrap();
        for _ in 0..8 {
            let l = listen(ip, Some((base, base + 1))).unwrap();
            assert_eq!(l.local_addr().unwrap().port(), base + 1);
        }
        let l = listen(ip, Some((base, base + 1))).unwrap();
        let err = listen(ip, Some((base, base + 1))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&format!("{base}-{}", base + 1)));
        drop((hold, l));
    }

    #[test]
    fn spread_visits_every_port_once_in_an_order_the_seed_picks() {
        for (lo, hi) in [(1000, 1000), (1000, 1001), (1000, 1011), (65000, 65535), (0, 65535)] {
            for seed in [0, 1, 7 << 32 | 5, u64::MAX, 0x1234_5678_9abc_def0] {
                let mut ports: Vec<u16> = spread(lo, hi, seed).collect();
                assert_eq!(ports.len(), usize::from(hi - lo) + 1);
                ports.sort_unstable();
                ports.dedup();
                assert_eq!(ports.len(), usize::from(hi - lo) + 1, "{lo}-{hi} seed {seed:#x}");
                assert!(ports.iter().all(|p| (lo..=hi).contains(p)));
            }
        }
        let firsts: std::collections::BTreeSet<u16> = (0..64u64)
            .map(|s| {
                spread(1000, 1999, s.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                    .next()
                    .unwrap()
            })
            .collect();
        assert!(firsts.len() > 32, "{firsts:?}");
    }

    #[test]
    fn wait_times_out_and_sees_the_client_leave() {
        let l = listen(Ipv4Addr::LOCALHOST.into(), None).unwrap();
        let side = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(side.local_addr().unwrap()).unwrap();
        let (server_side, _) = side.accept().unwrap();
        let t = Instant::now();
        let lo: &[IpAddr] = &[Ipv4Addr::LOCALHOST.into()];
        let r = wait(
            &l,
            &server_side,
            Deadline::after(Duration::from_millis(200)),
            lo,
            |_| (),
        )
        .unwrap();
        assert!(matches!(r, Inbound::Timeout));
        assert!(t.elapsed() >= Duration::from_millis(190));
        drop(c);
        let r = wait(&l, &server_side, Deadline::after(Duration::from_secs(5)), lo, |_| ()).unwrap();
        assert!(matches!(r, Inbound::ClientGone(ref w) if w == "client closed"), "{r:?}");
    }

    #[test]
    fn wait_accepts_a_call() {
        let l = listen(Ipv4Addr::LOCALHOST.into(), None).unwrap();
        let side = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(side.local_addr().unwrap()).unwrap();
        let (server_side, _) = side.accept().unwrap();
        let caller = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let lo: &[IpAddr] = &[Ipv4Addr::LOCALHOST.into()];
        match wait(&l, &server_side, Deadline::after(Duration::from_secs(5)), lo, |_| ()).unwrap() {
            Inbound::Call(_, peer) => assert_eq!(peer, caller.local_addr().unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wait_turns_strangers_away_and_goes_on() {
        let l = listen(Ipv4Addr::LOCALHOST.into(), None).unwrap();
        let side = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(side.local_addr().unwrap()).unwrap();
        let (server_side, _) = side.accept().unwrap();
        let stranger = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let expect: &[IpAddr] = &[Ipv4Addr::new(127, 0, 0, 2).into()];
        let mut seen = Vec::new();
        let r = wait(
            &l,
            &server_side,
            Deadline::after(Duration::from_millis(300)),
            expect,
            |p| seen.push(p),
        )
        .unwrap();
        assert!(matches!(r, Inbound::Timeout), "{r:?}");
        assert_eq!(seen, [stranger.local_addr().unwrap()]);
        let caller = net::connect(
            l.local_addr().unwrap(),
            Some(SocketAddr::new(expect[0], 0)),
            Deadline::after(Duration::from_secs(5)),
        )
        .unwrap();
        match wait(&l, &server_side, Deadline::after(Duration::from_secs(5)), expect, |p| {
            seen.push(p)
        })
        .unwrap()
        {
            Inbound::Call(_, peer) => assert_eq!(peer, caller.local_addr().unwrap()),
            other => panic!("{other:?}"),
        }
        assert_eq!(seen.len(), 1);
    }
}
