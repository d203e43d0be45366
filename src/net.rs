//! Socket plumbing shared by the phases: deadlines, waiting with `poll`,
//! non-blocking connect, and name resolution bounded in time.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrStorage};

/// The end of one phase. Every wait in that phase computes its timeout from
/// it, so the phase as a whole cannot take longer.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    /// Time left, or `None` once the deadline has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// The remaining time as a `poll` timeout, rounded up to whole
    /// milliseconds so a wait never ends just before the deadline.
    fn poll_timeout(&self) -> Option<PollTimeout> {
        let left = self.remaining()?;
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        Some(PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX))
    }
}

pub fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Waits until `fd` reports any of `events` (or an error or hang-up), or
/// until `deadline`. Retries on EINTR. Returns the reported events, or a
/// `TimedOut` error.
pub fn wait(fd: BorrowedFd<'_>, events: PollFlags, deadline: Deadline, what: &str) -> io::Result<PollFlags> {
    loop {
        let Some(timeout) = deadline.poll_timeout() else {
            return Err(timed_out(what));
        };
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => continue, // the loop checks the deadline again
            Ok(_) => return Ok(fds[0].revents().unwrap_or(PollFlags::empty())),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads what is available into `buf`, waiting up to `deadline` for
/// something to arrive. Returns 0 at end of stream.
pub fn read_some(stream: &TcpStream, buf: &mut [u8], deadline: Deadline, what: &str) -> io::Result<usize> {
    loop {
        match socket::recv(stream.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(n) => return Ok(n),
            Err(Errno::EAGAIN) => {
                wait(stream.as_fd(), PollFlags::POLLIN, deadline, what)?;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What an incremental parser makes of the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse<T> {
    /// A prefix of a message that may still be valid: read more.
    Incomplete,
    /// A whole message, and how many bytes of the input it took; any bytes
    /// after those come next.
    Complete(T, usize),
}

/// Why [`read_message`] has no message.
#[derive(Debug)]
pub enum Unread<E> {
    /// The bytes so far cannot begin a valid message; `len` bytes were
    /// read by then.
    Invalid(E, usize),
    /// The peer closed after `len` bytes, before a whole message.
    Closed(usize),
    /// Reading failed: the deadline passed (`TimedOut`), a reset...
    Io(io::Error),
}

/// Reads from `stream` into `buf`, whose first `have` bytes are there
/// already, until `parse` has a whole message, before `deadline`. The
/// parsers answer before `buf` fills: it must be longer than the longest
/// message they accept. Returns the message, the bytes it took, and all
/// the bytes read (those after the message follow it in `buf`).
pub fn read_message<T, E>(
    stream: &TcpStream,
    buf: &mut [u8],
    mut have: usize,
    deadline: Deadline,
    what: &str,
    parse: impl Fn(&[u8]) -> Result<Parse<T>, E>,
) -> Result<(T, usize, usize), Unread<E>> {
    loop {
        match parse(&buf[..have]) {
            Ok(Parse::Complete(message, used)) => return Ok((message, used, have)),
            Ok(Parse::Incomplete) => {}
            Err(invalid) => return Err(Unread::Invalid(invalid, have)),
        }
        match read_some(stream, &mut buf[have..], deadline, what) {
            Ok(0) => return Err(Unread::Closed(have)),
            Ok(n) => have += n,
            Err(e) => return Err(Unread::Io(e)),
        }
    }
}

/// Writes all of `buf` before `deadline`.
pub fn write_all(stream: &TcpStream, mut buf: &[u8], deadline: Deadline, what: &str) -> io::Result<()> {
    while !buf.is_empty() {
        match socket::send(stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EAGAIN) => {
                wait(stream.as_fd(), PollFlags::POLLOUT, deadline, what)?;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Opens a non-blocking TCP socket, binds it to `from` if given, and
/// connects it to `to` before `deadline`: connect, wait for POLLOUT, then
/// read `SO_ERROR`. The returned stream is non-blocking.
pub fn connect(to: SocketAddr, from: Option<SocketAddr>, deadline: Deadline) -> io::Result<TcpStream> {
    connect_from(to, from, deadline).map_err(ConnectError::into_io)
}

/// Why [`connect_from`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// No socket could be made (the descriptor limit, say).
    Socket(io::Error),
    /// The socket could not be bound to the source address (one that is
    /// not this host's, say).
    Bind(io::Error),
    /// The connection failed or timed out.
    Connect(io::Error),
}

impl ConnectError {
    pub fn into_io(self) -> io::Error {
        match self {
            ConnectError::Socket(e) | ConnectError::Bind(e) | ConnectError::Connect(e) => e,
        }
    }
}

/// As [`connect`], telling a failure to take the source address apart
/// from a failure to connect.
pub fn connect_from(to: SocketAddr, from: Option<SocketAddr>, deadline: Deadline) -> Result<TcpStream, ConnectError> {
    let family = match to {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| ConnectError::Socket(e.into()))?;
    if let Some(from) = from {
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(from)).map_err(|e| ConnectError::Bind(e.into()))?;
    }
    let failed = |e: io::Error| ConnectError::Connect(e);
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) | Err(Errno::EINTR) => {
            wait(fd.as_fd(), PollFlags::POLLOUT, deadline, "connect").map_err(failed)?;
            let err = socket::getsockopt(&fd, sockopt::SocketError).map_err(|e| failed(e.into()))?;
            if err != 0 {
                return Err(failed(io::Error::from_raw_os_error(err)));
            }
        }
        Err(e) => return Err(failed(e.into())),
    }
    Ok(TcpStream::from(fd))
}

/// Idle time before the first keepalive probe on a destination socket:
/// under the idle timeouts of common NAT gateways and stateful firewalls
/// (four to six minutes), so that an idle relay keeps its entry there.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
/// Time between unanswered probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Unanswered probes after which the peer is taken for dead: a relay
/// whose destination vanished ends about 4 minutes after its last data.
pub const KEEPALIVE_PROBES: u32 = 4;

/// Turns on TCP keepalive (`SO_KEEPALIVE`) with [`KEEPALIVE_IDLE`],
/// [`KEEPALIVE_INTERVAL`] and [`KEEPALIVE_PROBES`]. Best effort: a
/// failure leaves the socket as it was.
pub fn keepalive(stream: &TcpStream) {
    let _ = socket::setsockopt(stream, sockopt::KeepAlive, &true);
    let _ = socket::setsockopt(stream, sockopt::TcpKeepIdle, &(KEEPALIVE_IDLE.as_secs() as u32));
    let _ = socket::setsockopt(stream, sockopt::TcpKeepInterval, &(KEEPALIVE_INTERVAL.as_secs() as u32));
    let _ = socket::setsockopt(stream, sockopt::TcpKeepCount, &KEEPALIVE_PROBES);
}

/// Where the static (musl) build looks host names up, added to a failed
/// lookup: it has no NSS, so `/etc/nsswitch.conf` and its modules (mdns,
/// resolve, ldap, myhostname...) play no part. Empty in the glibc build.
pub const WITHOUT_NSS_HOSTS: &str = if cfg!(target_env = "musl") {
    " (this static build looks names up in /etc/hosts and DNS only, without NSS)"
} else {
    ""
};

/// As [`WITHOUT_NSS_HOSTS`], for user names (`--user`): musl reads
/// `/etc/passwd`, then asks nscd if one runs.
pub const WITHOUT_NSS_USERS: &str = if cfg!(target_env = "musl") {
    " (this static build looks users up in /etc/passwd only, without NSS; give --user UID:GID \
     or use the glibc build)"
} else {
    ""
};

/// Resolves `host` (A and AAAA, via getaddrinfo) before `deadline`. A
/// name that is not found says, in the static build, where it was looked
/// for ([`WITHOUT_NSS_HOSTS`]).
pub fn resolve(host: &str, port: u16, deadline: Deadline) -> io::Result<Vec<SocketAddr>> {
    let name = host.to_string();
    let lookup = move || (name.as_str(), port).to_socket_addrs().map(|it| it.collect::<Vec<_>>());
    match on_thread(lookup, deadline, "name resolution")? {
        Ok(addrs) if addrs.is_empty() => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no addresses{WITHOUT_NSS_HOSTS}"),
        )),
        Err(e) if !WITHOUT_NSS_HOSTS.is_empty() => Err(io::Error::new(e.kind(), format!("{e}{WITHOUT_NSS_HOSTS}"))),
        result => result,
    }
}

/// Runs a call that cannot be interrupted (getaddrinfo, getnameinfo) on a
/// thread of its own and waits for it until `deadline`. On a timeout the
/// thread is left behind; it ends with the process, which serves one
/// connection.
pub fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
    deadline: Deadline,
    what: &str,
) -> io::Result<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new().name(what.into()).spawn(move || {
        let _ = tx.send(f());
    })?;
    let left = deadline.remaining().ok_or_else(|| timed_out(what))?;
    rx.recv_timeout(left).map_err(|_| timed_out(what))
}

/// Whether `e` says the process (EMFILE) or the system (ENFILE) has no
/// descriptor left.
pub fn is_fd_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE))
}

/// `"; RLIMIT_NOFILE is N"`, for a log line about running out of
/// descriptors.
pub fn nofile_note() -> String {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => format!("; RLIMIT_NOFILE is {soft}"),
        Err(_) => String::new(),
    }
}

/// The most a closing connection's input is drained: enough for any
/// request and what a client pipelines after it.
const DRAIN_MAX_BYTES: usize = 256 * 1024;

/// Lets what was just sent reach the peer before the socket is closed.
/// Closing a socket that still holds unread input sends a reset, and a
/// reset can make the peer's kernel drop what it has not read yet. So
/// this sends FIN, then reads and discards what the peer still sends,
/// until it closes, `linger` has passed (zero: only what is there already)
/// or [`DRAIN_MAX_BYTES`] have come.
pub fn close_after(stream: &TcpStream, linger: Duration) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Deadline::after(linger);
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < DRAIN_MAX_BYTES {
        let n = match socket::recv(stream.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EAGAIN) if !linger.is_zero() => {
                match wait(stream.as_fd(), PollFlags::POLLIN, deadline, "drain") {
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        drained += n;
    }
}

/// Sets `SO_LINGER` to zero so that dropping the socket sends a reset:
/// a peer whose other side failed learns that the stream is cut short
/// rather than complete.
pub fn reset_on_close(stream: &TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = socket::setsockopt(stream, sockopt::Linger, &linger);
}

/// Turns `SO_LINGER` off again, so that closing the socket after a
/// finished exchange sends the usual FIN.
pub fn close_cleanly(stream: &TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let _ = socket::setsockopt(stream, sockopt::Linger, &linger);
}

/// Addresses as the socket API returns them, with an IPv4-mapped IPv6
/// address turned back into IPv4 (a dual-stack listener reports those).
pub fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connect_refused_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let err = connect(addr, None, Deadline::after(Duration::from_secs(5))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn connect_binds_the_source_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let from: SocketAddr = "127.0.0.3:0".parse().unwrap();
        let s = connect(
            l.local_addr().unwrap(),
            Some(from),
            Deadline::after(Duration::from_secs(5)),
        )
        .unwrap();
        assert_eq!(s.local_addr().unwrap().ip(), from.ip());
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), from.ip());
    }

    #[test]
    fn a_source_that_is_not_ours_is_a_bind_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // TEST-NET-1: never an address of this host.
        let from: SocketAddr = "192.0.2.1:0".parse().unwrap();
        match connect_from(
            l.local_addr().unwrap(),
            Some(from),
            Deadline::after(Duration::from_secs(5)),
        ) {
            Err(ConnectError::Bind(e)) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable),
            other => panic!("{other:?}"),
        }
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(
            connect_from(addr, None, Deadline::after(Duration::from_secs(5))),
            Err(ConnectError::Connect(_))
        ));
    }

    #[test]
    fn keepalive_is_set() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = connect(l.local_addr().unwrap(), None, Deadline::after(Duration::from_secs(5))).unwrap();
        assert!(!socket::getsockopt(&c, sockopt::KeepAlive).unwrap());
        keepalive(&c);
        assert!(socket::getsockopt(&c, sockopt::KeepAlive).unwrap());
        assert_eq!(socket::getsockopt(&c, sockopt::TcpKeepIdle).unwrap(), 120);
        assert_eq!(socket::getsockopt(&c, sockopt::TcpKeepInterval).unwrap(), 30);
        assert_eq!(socket::getsockopt(&c, sockopt::TcpKeepCount).unwrap(), 4);
    }

    #[test]
    fn read_some_honours_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = connect(l.local_addr().unwrap(), None, Deadline::after(Duration::from_secs(5))).unwrap();
        let t = Instant::now();
        let err = read_some(&c, &mut [0; 8], Deadline::after(Duration::from_millis(200)), "read").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(190));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn resolves_localhost() {
        let addrs = resolve("localhost", 80, Deadline::after(Duration::from_secs(10))).unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    }

    /// Not in the static build: libfaketime is preloaded by the dynamic
    /// loader, which a static binary does not have.
    #[cfg(not(target_env = "musl"))]
    mod clock_steps {
        use super::*;

        /// libfaketime, which makes a process see a wall clock of a file's
        /// choosing (package faketime); the multi-threaded build.
        const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

        /// Clock steps: the wall clock of this test's own child process jumps
        /// three hours forward, then back, while it waits on a deadline and
        /// while a relay sits idle. Both end on time, as they must when they
        /// run on the monotonic clock; on the wall clock the first would end at
        /// once and the second hang for hours. The child is this test binary
        /// again, under libfaketime (LD_PRELOAD), which fakes CLOCK_REALTIME
        /// only (DONT_FAKE_MONOTONIC).
        #[test]
        fn deadlines_and_the_idle_timer_hold_across_wall_clock_steps() {
            if let Some(file) = std::env::var_os("SOCKS4D_CLOCK_STEP_FILE") {
                return clock_step_child(std::path::Path::new(&file));
            }
            if !std::path::Path::new(FAKETIME).exists() {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "{FAKETIME} missing; .ci/run should install faketime"
                );
                eprintln!("SKIPPED: {FAKETIME} missing (package faketime)");
                return;
            }
            let file = std::env::temp_dir().join(format!("socks4d-clock-{}", std::process::id()));
            std::fs::write(&file, "+0\n").unwrap();
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "net::tests::clock_steps::deadlines_and_the_idle_timer_hold_across_wall_clock_steps",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("SOCKS4D_CLOCK_STEP_FILE", &file)
                .env("LD_PRELOAD", FAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", &file)
                .env("FAKETIME_NO_CACHE", "1")
                .env("DONT_FAKE_MONOTONIC", "1")
                .output()
                .unwrap();
            let _ = std::fs::remove_file(&file);
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            assert!(
                text.contains("stepped forward and back"),
                "the child did not run:\n{text}"
            );
        }

        /// Steps the wall clock by writing `file` after `after`.
        fn step_later(file: &std::path::Path, after: Duration, offset: &'static str) -> std::thread::JoinHandle<()> {
            let file = file.to_path_buf();
            std::thread::spawn(move || {
                std::thread::sleep(after);
                std::fs::write(file, format!("{offset}\n")).unwrap();
            })
        }

        fn clock_step_child(file: &std::path::Path) {
            use std::time::SystemTime;
            let wall = |since: SystemTime| {
                SystemTime::now()
                    .duration_since(since)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or_else(|e| -e.duration().as_secs_f64())
            };
            let limit = Duration::from_secs(2);
            let on_time = |d: Duration| d >= limit - Duration::from_millis(50) && d < limit * 3;
            let l = TcpListener::bind("127.0.0.1:0").unwrap();

            // A deadline, the wall clock stepping 3 h forward meanwhile.
            let c = connect(l.local_addr().unwrap(), None, Deadline::after(Duration::from_secs(5))).unwrap();
            let (t, w) = (Instant::now(), SystemTime::now());
            let step = step_later(file, Duration::from_millis(500), "+3h");
            let err = read_some(&c, &mut [0; 8], Deadline::after(limit), "read").unwrap_err();
            step.join().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            assert!(on_time(t.elapsed()), "deadline after a forward step: {:?}", t.elapsed());
            assert!(
                wall(w) > 3.0 * 3600.0 - 60.0,
                "the wall clock did not step: {}",
                wall(w)
            );

            // An idle relay, the wall clock stepping back 3 h meanwhile.
            let (a, _a_peer) = (c, l.accept().unwrap());
            let b = connect(l.local_addr().unwrap(), None, Deadline::after(Duration::from_secs(5))).unwrap();
            let _b_peer = l.accept().unwrap();
            let (t, w) = (Instant::now(), SystemTime::now());
            let step = step_later(file, Duration::from_millis(500), "+0");
            let summary = crate::relay::run_with(crate::relay::Mode::Copy, a, b, &[], Some(limit));
            step.join().unwrap();
            assert_eq!(summary.end, crate::relay::End::IdleTimeout);
            assert!(
                on_time(t.elapsed()),
                "idle timer after a backward step: {:?}",
                t.elapsed()
            );
            assert!(
                wall(w) < -3.0 * 3600.0 + 60.0,
                "the wall clock did not step back: {}",
                wall(w)
            );
            println!("stepped forward and back");
        }
    }

    #[test]
    fn unmap_turns_mapped_v6_into_v4() {
        let a: SocketAddr = "[::ffff:10.1.2.3]:9".parse().unwrap();
        assert_eq!(unmap(a), "10.1.2.3:9".parse::<SocketAddr>().unwrap());
    }
}
