//! Where the client socket comes from: fd 3 under `LISTEN_FDS` (a systemd
//! socket unit with `Accept=yes`), or fd 0 (inetd `nowait`, xinetd,
//! `StandardInput=socket`). Or, when what was passed is a listening socket
//! (a socket unit with `Accept=no`, inetd `wait`), the listening sockets,
//! which [`crate::listen`] then serves as `--listen` does.
//!
//! Then, once the handler holds its connection and has confined itself,
//! [`arrive`] says who the client is: the TCP peer, or, when that peer is
//! a load balancer trusted with `--proxy-protocol`, the client its PROXY
//! header names. The session sees one client either way.

use std::fs::OpenOptions;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt, SockType};
use nix::sys::stat::{fstat, SFlag};

use crate::audit::{self, Line, Log};
use crate::config::Config;
use crate::net::{self, Deadline};
use crate::outcome::Refusal;
use crate::proxy::{self, Header, Parse};
use crate::session::Record;

/// A connected client socket and its two addresses.
pub struct Client {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// fd 2 was the client socket (plain inetd), so stderr may not be used
    /// for logging.
    pub stderr_was_client: bool,
}

/// What was found at start-up.
pub enum Found {
    Client(Client),
    /// Listening sockets, to accept connections from. The flag says
    /// whether stderr may carry log lines (it is not a passed socket).
    Listeners(Vec<TcpListener>, bool),
    /// A socket was passed but cannot be served; the text says why and how
    /// to fix the setup. The flag says whether stderr may carry it (it is
    /// not the passed socket).
    SetupError(String, bool),
    /// No socket: not started by inetd or a socket unit.
    Nothing,
}

/// Whether a passed socket may be there, so that diagnostics must not go
/// to stdout or stderr.
pub fn socket_passed() -> bool {
    std::env::var_os("LISTEN_FDS").is_some() || is_socket(0)
}

/// Looks for the client socket: the first `LISTEN_FDS` fd when that is
/// set for this process, else fd 0 if it is a socket.
pub fn find() -> Found {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 0 {
        let mut taken = Vec::new();
        for i in 0..fds.len() {
            match fds.take_raw_fd(i) {
                Ok(Some(raw)) => {
                    // SAFETY: systemd passed this fd to this process
                    // (listenfd checked LISTEN_PID) and nothing else owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    // systemd passes it without close-on-exec; a rule's
                    // command must not inherit a socket and hold it open.
                    let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
                    taken.push(fd);
                }
                _ => return Found::SetupError(format!("LISTEN_FDS is set but fd {} cannot be taken", 3 + i), true),
            }
        }
        let first = taken.remove(0);
        if listening(&first) {
            return listeners(std::iter::once(first).chain(taken).collect(), "LISTEN_FDS", true);
        }
        if !taken.is_empty() {
            return Found::SetupError(
                format!(
                    "LISTEN_FDS passes {} sockets and fd 3 is a connection: with Accept=yes the unit \
                     must have one ListenStream= only",
                    taken.len() + 1
                ),
                true,
            );
        }
        return check(first, "fd 3 (LISTEN_FDS)");
    }
    if is_socket(0) {
        // SAFETY: fd 0 is a socket handed to us by inetd; this is the only
        // place that takes ownership of it.
        let fd = unsafe { OwnedFd::from_raw_fd(0) };
        if listening(&fd) {
            let stderr_allowed = !same_file(&fd, 2);
            quiet_std_fds(&fd);
            let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
            return listeners(vec![fd], "stdin (inetd wait)", stderr_allowed);
        }
        return check(fd, "stdin");
    }
    Found::Nothing
}

fn listening(fd: &OwnedFd) -> bool {
    getsockopt(fd, sockopt::AcceptConn).unwrap_or(false)
}

/// Checks that each of `fds` is a listening TCP socket and takes them.
fn listeners(fds: Vec<OwnedFd>, what: &str, stderr_allowed: bool) -> Found {
    let mut out = Vec::with_capacity(fds.len());
    for (i, fd) in fds.into_iter().enumerate() {
        let ok = matches!(getsockopt(&fd, sockopt::SockType), Ok(SockType::Stream)) && listening(&fd);
        let l = TcpListener::from(fd);
        if !ok || l.local_addr().is_err() {
            return Found::SetupError(
                format!(
                    "{what}: socket {} is not a listening TCP socket (ListenStream= only)",
                    i + 1
                ),
                stderr_allowed,
            );
        }
        out.push(l);
    }
    Found::Listeners(out, stderr_allowed)
}

fn is_socket(fd: i32) -> bool {
    // SAFETY: the borrow lives only for this call, and fstat on a closed
    // fd just fails.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fstat(fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK)
        .unwrap_or(false)
}

/// Checks that `fd` is a connected TCP socket and takes it.
fn check(fd: OwnedFd, what: &str) -> Found {
    let stderr_was_client = same_file(&fd, 2);
    let fail = |why: String| Found::SetupError(why, !stderr_was_client);
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(other) => return fail(format!("{what} is a {other:?} socket, not a TCP stream")),
        Err(e) => return fail(format!("{what} is not a socket: {e}")),
    }
    let stream = TcpStream::from(fd);
    let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(p), Ok(l)) => (p, l),
        (Err(e), _) | (_, Err(e)) => return fail(format!("{what} is not a connected TCP socket: {e}")),
    };
    quiet_std_fds(&stream);
    Found::Client(Client {
        stream,
        peer,
        local,
        stderr_was_client,
    })
}

/// inetd may put the socket on fds 1 and 2 too. Point them at /dev/null
/// so that nothing written there can reach the client, and so that the
/// socket is really closed when its owner is dropped.
fn quiet_std_fds(socket: &impl AsFd) {
    for other in [1, 2] {
        if same_file(socket, other) {
            if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
                // SAFETY: fds 1 and 2 are the process's own standard fds;
                // dup2 replaces them atomically.
                unsafe {
                    nix::libc::dup2(null.as_raw_fd(), other);
                }
            }
        }
    }
}

fn same_file(a: &impl AsFd, b: i32) -> bool {
    // SAFETY: as in is_socket.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(b) };
    match (fstat(a.as_fd()), fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// A client connection as the session sees it.
#[derive(Debug)]
pub struct Arrival {
    /// Non-blocking.
    pub stream: TcpStream,
    /// The client: the TCP peer, or the source a trusted balancer's PROXY
    /// header names.
    pub client: SocketAddr,
    /// The address and port the client connected to: this host's end of
    /// the connection, or the header's destination (on the balancer).
    pub local: SocketAddr,
    /// This host's end of the TCP connection (`local` without a balancer).
    pub own: SocketAddr,
    /// The balancer the connection came through, if any.
    pub via: Option<SocketAddr>,
    /// Bytes that came after the header: the start of the request.
    pub early: Vec<u8>,
    /// The end of the request phase, which the header shares.
    pub deadline: Deadline,
    pub started: Instant,
}

/// Takes the connection from `peer` to `local`, which has just been
/// accepted: makes it non-blocking and, when `peer` is in
/// `--proxy-protocol`'s networks, reads the PROXY header within the
/// request timeout and at most [`proxy::MAX_HEADER_LEN`] bytes. `None`
/// when there is no client to serve: a health check (one `health` line
/// logged), or a missing, malformed, partial or late header (a decision
/// line and an end line logged, no reply sent); the connection is closed
/// then.
pub fn arrive(stream: TcpStream, peer: SocketAddr, local: SocketAddr, cfg: &Config, log: &Log) -> Option<Arrival> {
    let started = Instant::now();
    let deadline = Deadline::after(cfg.request_timeout);
    let (peer, own) = (net::unmap(peer), net::unmap(local));
    let trusted = cfg.proxy_protocol.iter().any(|n| n.contains(peer.ip()));
    let rec = Record {
        client: (!trusted).then_some(peer),
        via: trusted.then_some(peer),
        ..Record::default()
    };
    if let Err(e) = stream.set_nonblocking(true) {
        let why = format!("set non-blocking: {e}");
        log.error(rec.decision_line(None, "client-error", Some(&why)).as_str());
        log.info(rec.end_line(0, 0, started, "client-error", None, Some(&why)).as_str());
        return None;
    }
    let (client, local, early) = if !trusted {
        (peer, own, Vec::new())
    } else {
        match read_header(&stream, deadline) {
            Ok((Header::Proxied { src, dst, .. }, early)) => (net::unmap(src), net::unmap(dst), early),
            Ok((Header::Local(kind), _)) => {
                log.info(
                    Line::new("health")
                        .field("via", audit::addr(peer))
                        .field("proxy", kind.keyword())
                        .as_str(),
                );
                return None;
            }
            Err(refusal) => {
                let line = rec.decision_line(None, refusal.reason(), refusal.detail().as_deref());
                log.warning(line.as_str());
                log.info(rec.end_line(0, 0, started, "refused", None, None).as_str());
                return None;
            }
        }
    };
    Some(Arrival {
        stream,
        client,
        local,
        own,
        via: rec.via,
        early,
        deadline,
        started,
    })
}

/// Reads until [`proxy::parse`] has a whole header, before `deadline`.
/// Returns it and the bytes that followed it.
fn read_header(stream: &TcpStream, deadline: Deadline) -> Result<(Header, Vec<u8>), Refusal> {
    let mut buf = [0u8; proxy::MAX_HEADER_LEN];
    let mut len = 0;
    loop {
        match proxy::parse(&buf[..len]) {
            Ok(Parse::Complete(header, used)) => return Ok((header, buf[used..len].to_vec())),
            Ok(Parse::Incomplete) => {}
            Err(invalid) => return Err(Refusal::ProxyInvalid(invalid)),
        }
        // The parser answers by MAX_HEADER_LEN bytes, so the buffer never
        // fills while it still says incomplete.
        let n = net::read_some(stream, &mut buf[len..], deadline, "PROXY header").map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => Refusal::ProxyTimeout,
            _ => Refusal::ClientError(e.to_string()),
        })?;
        if n == 0 {
            return Err(Refusal::ProxyClosed);
        }
        len += n;
    }
}
