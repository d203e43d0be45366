//! Audit lines: where they go (syslog or stderr) and how wire-supplied
//! values are made safe to put in them.
//!
//! Every line is `event key=value ...` with keys in a fixed order. Values that
//! came from the network are quoted, escaped and capped by [`quote`], so a
//! client cannot forge a line, a key or a field.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{self, MsgFlags};
use syslog::{Facility, Severity};

use crate::net::{self, Deadline};
use crate::request::Command;

/// At most this many bytes of a wire-supplied value reach the log.
pub const MAX_LOGGED_VALUE_LEN: usize = 256;
/// How long one log line may wait for the logger by default: long enough
/// for journald or rsyslogd to restart, short enough that a stuck logger
/// does not pile up handlers.
pub const DEFAULT_LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the local logger listens. On Linux that is `/dev/log` alone, as
/// for glibc's syslog(3): trying the BSD and macOS paths as well cost two
/// more sockets at every connection on a host without a logger.
#[cfg(target_os = "linux")]
const SYSLOG_PATHS: &[&str] = &["/dev/log"];
#[cfg(not(target_os = "linux"))]
const SYSLOG_PATHS: &[&str] = &["/dev/log", "/var/run/syslog", "/var/run/log"];

/// Where log lines go. Opened once per process, before the client is read.
///
/// No write waits longer than the log timeout: the sockets are written
/// without blocking and each wait is a bounded `poll`. After a line has
/// timed out, later lines are tried once without waiting until one gets
/// through, so a stuck logger costs a process one timeout, not one per
/// line.
pub struct Log {
    inner: Mutex<Inner>,
}

struct Inner {
    sink: Sink,
    timeout: Duration,
    /// A line timed out and none has been written since.
    stuck: bool,
}

enum Sink {
    /// The local syslog socket, connected when first needed and again
    /// after the logger has gone away (a restart makes a new socket).
    Syslog {
        facility: Facility,
        /// The pid the lines carry: the process's own, again after a fork.
        pid: u32,
        socket: Option<Socket>,
    },
    /// Standard error (`--log-stderr`), made non-blocking for us alone.
    Stderr(Stderr),
}

enum Socket {
    Datagram(UnixDatagram),
    /// Some syslog daemons listen on a stream socket; lines end in NUL.
    Stream(UnixStream),
}

enum Stderr {
    /// A pipe or FIFO, opened again through /proc with O_NONBLOCK, so that
    /// the flag does not change the file description others share.
    Pipe(OwnedFd),
    /// A socket: written with MSG_DONTWAIT.
    Socket,
    /// A file, a terminal or /dev/null: written as it is.
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// A line that could not be written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlogged(pub String);

impl std::fmt::Display for Unlogged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Log {
    /// Syslog with ident `socks4d`, the pid and `facility`; each line
    /// waits at most `timeout` for the logger.
    pub fn syslog(facility: Facility, timeout: Duration) -> Log {
        Log::with(
            Sink::Syslog {
                facility,
                pid: std::process::id(),
                socket: syslog_connect().ok(),
            },
            timeout,
        )
    }

    /// The same lines on stderr, prefixed `socks4d[PID]: `.
    pub fn stderr(timeout: Duration) -> Log {
        Log::with(Sink::Stderr(Stderr::open()), timeout)
    }

    fn with(sink: Sink, timeout: Duration) -> Log {
        Log {
            inner: Mutex::new(Inner {
                sink,
                timeout,
                stuck: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether the logger can be reached: syslog's socket connects (a
    /// socket already connected counts), or stderr is the log. `Err` says
    /// why not.
    pub fn reachable(&self) -> Result<(), String> {
        let mut inner = self.lock();
        match &mut inner.sink {
            Sink::Syslog { socket: Some(_), .. } | Sink::Stderr(_) => Ok(()),
            Sink::Syslog { socket, .. } => {
                *socket = Some(syslog_connect().map_err(|e| e.to_string())?);
                Ok(())
            }
        }
    }

    /// Call in a forked child: syslog lines then carry the child's pid,
    /// and the child gets its own log timeout.
    pub fn after_fork(&self) {
        let mut inner = self.lock();
        inner.stuck = false;
        if let Sink::Syslog { pid, .. } = &mut inner.sink {
            *pid = std::process::id();
        }
    }

    /// Writes one line within the log timeout, or says why it could not.
    /// No logger at all (no socket to connect to) fails at once.
    pub fn write(&self, level: Level, line: &str) -> Result<(), Unlogged> {
        let mut inner = self.lock();
        let wait = if inner.stuck { Duration::ZERO } else { inner.timeout };
        let deadline = Deadline::after(wait);
        let result = match &mut inner.sink {
            Sink::Syslog { facility, pid, socket } => {
                let msg = syslog_line(*facility, *pid, level, line, std::time::SystemTime::now());
                syslog_write(socket, msg.into_bytes(), deadline)
            }
            Sink::Stderr(out) => {
                // One write(2) per line where it fits: other socks4d
                // processes may share stderr.
                let text = format!("socks4d[{}]: {}\n", std::process::id(), line);
                out.write(text.as_bytes(), deadline)
            }
        };
        match result {
            Ok(()) => {
                inner.stuck = false;
                Ok(())
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    let why = if inner.stuck {
                        "the logger is still taking no lines".to_string()
                    } else {
                        format!("the logger took no line within {} s", wait.as_secs())
                    };
                    inner.stuck = true;
                    Err(Unlogged(why))
                } else {
                    Err(Unlogged(e.to_string()))
                }
            }
        }
    }

    /// Writes a line on a best-effort basis: a line that cannot be written
    /// is dropped, since there is nowhere left to report it.
    pub fn info(&self, line: &str) {
        let _ = self.write(Level::Info, line);
    }

    pub fn warning(&self, line: &str) {
        let _ = self.write(Level::Warning, line);
    }

    pub fn error(&self, line: &str) {
        let _ = self.write(Level::Error, line);
    }
}

/// Connects to the first syslog socket that exists.
fn syslog_connect() -> io::Result<Socket> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no /dev/log");
    for path in SYSLOG_PATHS {
        let dgram = UnixDatagram::unbound()?;
        match dgram.connect(path) {
            Ok(()) => {
                dgram.set_nonblocking(true)?;
                return Ok(Socket::Datagram(dgram));
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EPROTOTYPE) => {
                let stream = UnixStream::connect(path)?;
                stream.set_nonblocking(true)?;
                return Ok(Socket::Stream(stream));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => last = io::Error::new(e.kind(), format!("{path}: {e}")),
        }
    }
    Err(last)
}

/// One line as syslog(3) writes it (RFC 3164): `<PRI>`, the time in the
/// host's time zone as `Mmm dd hh:mm:ss` (the day padded with a blank),
/// `socks4d[PID]: ` and the line. The syslog crate gives the facility and
/// severity values; its own formatter writes UTC, where syslog(3) and the
/// other daemons' lines in the same file write local time.
fn syslog_line(facility: Facility, pid: u32, level: Level, line: &str, at: std::time::SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let severity = match level {
        Level::Info => Severity::LOG_INFO,
        Level::Warning => Severity::LOG_WARNING,
        Level::Error => Severity::LOG_ERR,
    };
    let secs = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // musl's time_t is 64 bits already; the libc crate's deprecation
    // note is about its own definition changing to match.
    #[allow(deprecated)]
    let t = nix::libc::time_t::try_from(secs).unwrap_or(0);
    // SAFETY: `tm` is plain data that localtime_r fills in; `t` lives
    // for the call. No safe interface to the C library's time zone
    // (TZ, /etc/localtime) exists in std or nix.
    let tm = unsafe {
        let mut tm: nix::libc::tm = std::mem::zeroed();
        if nix::libc::localtime_r(&t, &mut tm).is_null() {
            nix::libc::gmtime_r(&t, &mut tm);
        }
        tm
    };
    let month = MONTHS.get(tm.tm_mon as usize).unwrap_or(&"Jan");
    format!(
        "<{}>{month} {:2} {:02}:{:02}:{:02} socks4d[{pid}]: {line}",
        facility as u8 | severity as u8,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Sends one syslog line before `deadline`. A socket the logger has
/// closed (it restarted) is replaced once.
fn syslog_write(socket: &mut Option<Socket>, mut msg: Vec<u8>, deadline: Deadline) -> io::Result<()> {
    let mut reconnected = false;
    loop {
        let sock = match socket {
            Some(s) => s,
            None => {
                reconnected = true;
                socket.insert(syslog_connect()?)
            }
        };
        let sent = match sock {
            Socket::Datagram(d) => send_within(d.as_fd(), &msg, deadline),
            Socket::Stream(s) => {
                msg.push(0);
                let r = send_within(s.as_fd(), &msg, deadline);
                msg.pop();
                r
            }
        };
        match sent {
            Ok(()) => return Ok(()),
            // The logger went away; a new one may be listening.
            Err(e) if is_gone(&e) && !reconnected => *socket = None,
            Err(e) => {
                // A stream cut in the middle of a line cannot be resumed.
                if matches!(sock, Socket::Stream(_)) || is_gone(&e) {
                    *socket = None;
                }
                return Err(e);
            }
        }
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ECONNREFUSED | nix::libc::ENOTCONN | nix::libc::EPIPE | nix::libc::ECONNRESET)
    )
}

/// Sends all of `buf` on a socket without blocking, waiting for room
/// until `deadline`.
fn send_within(fd: BorrowedFd<'_>, mut buf: &[u8], deadline: Deadline) -> io::Result<()> {
    while !buf.is_empty() {
        match socket::send(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            // ENOBUFS: the datagram queue of the sender is full.
            Err(Errno::EAGAIN) | Err(Errno::ENOBUFS) => {
                net::wait(fd, PollFlags::POLLOUT, deadline, "log")?;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Stderr {
    fn open() -> Stderr {
        let Ok(stat) = nix::sys::stat::fstat(io::stderr().as_fd()) else {
            return Stderr::Plain;
        };
        let kind = nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT;
        if kind == nix::sys::stat::SFlag::S_IFSOCK {
            return Stderr::Socket;
        }
        if kind == nix::sys::stat::SFlag::S_IFIFO {
            let own = OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
                .open("/proc/self/fd/2");
            if let Ok(f) = own {
                if f.metadata().map(|m| m.file_type().is_fifo()).unwrap_or(false) {
                    return Stderr::Pipe(OwnedFd::from(f));
                }
            }
        }
        Stderr::Plain
    }

    fn write(&self, mut buf: &[u8], deadline: Deadline) -> io::Result<()> {
        let stderr = io::stderr();
        let fd2 = stderr.as_fd();
        match self {
            Stderr::Socket => send_within(fd2, buf, deadline),
            Stderr::Pipe(fd) => {
                while !buf.is_empty() {
                    match nix::unistd::write(fd, buf) {
                        Ok(n) => buf = &buf[n..],
                        Err(Errno::EAGAIN) => {
                            net::wait(fd.as_fd(), PollFlags::POLLOUT, deadline, "log")?;
                        }
                        Err(Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
            Stderr::Plain => {
                use std::io::Write as _;
                io::stderr().lock().write_all(buf)
            }
        }
    }
}

/// Quotes a wire-supplied value for a log line: printable ASCII is kept,
/// `"` and `\` are backslash-escaped, every other byte becomes `\xHH`, and
/// input past [`MAX_LOGGED_VALUE_LEN`] bytes is cut and marked with `...`
/// after the closing quote. The result never holds a control byte or an
/// unescaped quote.
pub fn quote(value: &[u8]) -> String {
    crate::text::quote(value, MAX_LOGGED_VALUE_LEN)
}

/// Builds one audit line, `event key=value key=value ...`.
pub struct Line {
    text: String,
}

impl Line {
    pub fn new(event: &str) -> Line {
        Line {
            text: event.to_string(),
        }
    }

    /// A value the program made itself (an address, a number, a keyword).
    pub fn field(mut self, key: &str, value: impl std::fmt::Display) -> Line {
        let _ = write!(self.text, " {key}={value}");
        self
    }

    /// An optional value the program made; `-` when absent.
    pub fn opt(self, key: &str, value: Option<impl std::fmt::Display>) -> Line {
        match value {
            Some(v) => self.field(key, v),
            None => self.field(key, "-"),
        }
    }

    /// A value from the wire or from another program: quoted and escaped.
    pub fn quoted(self, key: &str, value: &[u8]) -> Line {
        let q = quote(value);
        self.field(key, q)
    }

    /// An optional wire value; `-` when absent.
    pub fn opt_quoted(self, key: &str, value: Option<&[u8]>) -> Line {
        match value {
            Some(v) => self.quoted(key, v),
            None => self.field(key, "-"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Formats an address as `ip:port`, or `[ip6]:port`, with an IPv4-mapped
/// IPv6 address shown as plain IPv4.
pub fn addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => a.to_string(),
        },
        SocketAddr::V4(_) => a.to_string(),
    }
}

/// What to tell an administrator whose logger cannot be reached (`why`).
pub fn logger_hint(why: &str) -> String {
    format!(
        "the logger cannot be reached ({why}): socks4d grants nothing it cannot log, so every request \
         gets 91 (0x5B) until a syslog daemon runs; to try socks4d without one, add --log-stderr"
    )
}

/// What the audit lines say about a connection, filled in as the exchange
/// goes.
#[derive(Debug)]
pub struct Record {
    /// When the connection was taken.
    pub started: Instant,
    pub client: Option<SocketAddr>,
    /// The load balancer the connection came through (`--proxy-protocol`).
    pub via: Option<SocketAddr>,
    /// The local address the destination connection left from (port 0
    /// when it failed), or BIND's listening address.
    pub src: Option<SocketAddr>,
    pub command: Option<Command>,
    pub user: Option<Vec<u8>>,
    /// The destination: the address connected to, or the one requested.
    pub dst: Option<SocketAddr>,
    /// The SOCKS4a hostname, as sent.
    pub host: Option<Vec<u8>>,
    /// The rule that decided.
    pub rule: Option<String>,
    /// The ident outcome: `off`, `ok`, `unreachable: ...`, `error: ...`,
    /// `mismatch: ...`.
    pub ident: Option<String>,
    pub ident_user: Option<Vec<u8>>,
    /// BIND: the listening address sent in the first reply.
    pub bind: Option<SocketAddr>,
    /// BIND: the address(es) the inbound connection must come from.
    pub expect: Option<String>,
    /// With a chain file (`--chain`): how the request left, `direct` or
    /// the parent (`socks5:192.0.2.1:1080`); `None` without one.
    pub hop: Option<String>,
}

impl Record {
    /// The record of a connection from `client`, taken now.
    pub fn new(client: SocketAddr) -> Record {
        Record {
            started: Instant::now(),
            client: Some(client),
            via: None,
            src: None,
            command: None,
            user: None,
            dst: None,
            host: None,
            rule: None,
            ident: None,
            ident_user: None,
            bind: None,
            expect: None,
            hop: None,
        }
    }

    /// The decision line: who asked for what, and the answer.
    pub fn decision_line(&self, reply: Option<u8>, reason: &str, detail: Option<&str>) -> Line {
        Line::new("decision")
            .opt("client", self.client.map(addr))
            .opt_quoted("user", self.user.as_deref())
            .opt("cmd", self.command.map(Command::name))
            .opt("dst", self.dst.map(addr))
            .opt_quoted("host", self.host.as_deref())
            .opt("rule", self.rule.as_deref())
            .opt_quoted("ident", self.ident.as_deref().map(str::as_bytes))
            .opt_quoted("ident_user", self.ident_user.as_deref())
            .opt("reply", reply.map(|c| format!("{c:02x}")))
            .field("reason", reason)
            .opt_quoted("detail", detail.map(str::as_bytes))
            .opt("bind", self.bind.map(addr))
            .opt("expect", self.expect.as_deref())
            .opt("src", self.src.map(addr))
            .opt("hop", self.hop.as_deref())
            .opt("via", self.via.map(addr))
    }

    /// BIND's second line: who called back, and the second reply.
    pub fn accept_line(&self, peer: Option<SocketAddr>, reply: Option<u8>, reason: &str, detail: Option<&str>) -> Line {
        Line::new("accept")
            .opt("client", self.client.map(addr))
            .opt("bind", self.bind.map(addr))
            .opt("expect", self.expect.as_deref())
            .opt("peer", peer.map(addr))
            .opt("reply", reply.map(|c| format!("{c:02x}")))
            .field("reason", reason)
            .opt_quoted("detail", detail.map(str::as_bytes))
            .opt("hop", self.hop.as_deref())
            .opt("via", self.via.map(addr))
    }

    /// The end line: bytes each way, time since the start, what ended
    /// it, and how the relay moved bytes (`relay`, `None` when there was
    /// no relay).
    pub fn end_line(&self, up: u64, down: u64, end: &str, relay: Option<&str>, detail: Option<&str>) -> Line {
        Line::new("end")
            .opt("client", self.client.map(addr))
            .opt("cmd", self.command.map(Command::name))
            .opt("dst", self.dst.map(addr))
            .field("up", up)
            .field("down", down)
            .field("secs", format!("{:.3}", self.started.elapsed().as_secs_f64()))
            .field("end", end)
            .opt("relay", relay)
            .opt_quoted("detail", detail.map(str::as_bytes))
            .opt("src", self.src.map(addr))
            .opt("hop", self.hop.as_deref())
            .opt("via", self.via.map(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_values_are_kept() {
        assert_eq!(quote(b"alice"), "\"alice\"");
        assert_eq!(quote(b""), "\"\"");
    }

    #[test]
    fn newline_quote_and_backslash_are_escaped() {
        assert_eq!(
            quote(b"bob\n1 decision reason=granted\"\\"),
            "\"bob\\x0a1 decision reason=granted\\\"\\\\\""
        );
    }

    #[test]
    fn control_and_high_bytes_become_hex() {
        assert_eq!(quote(&[0, 0x1b, 0x7f, 0xc3, 0xa9]), "\"\\x00\\x1b\\x7f\\xc3\\xa9\"");
    }

    #[test]
    fn long_values_are_cut_and_marked() {
        let q = quote(&[b'a'; 1000]);
        assert_eq!(q.len(), MAX_LOGGED_VALUE_LEN + 2 + 3);
        assert!(q.ends_with("\"..."));
    }

    #[test]
    fn quoted_output_has_no_control_bytes_or_bare_quotes() {
        let all: Vec<u8> = (0..=255).collect();
        let q = quote(&all);
        let inner = &q[1..q.len() - 1];
        assert!(q.bytes().all(|b| (0x20..0x7f).contains(&b)));
        // Every quote inside is preceded by a backslash that is not itself escaped.
        let bytes = inner.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\' {
                i += 2;
                continue;
            }
            assert_ne!(bytes[i], b'"', "bare quote in {q}");
            i += 1;
        }
    }

    #[test]
    fn line_keeps_field_order() {
        let l = Line::new("decision")
            .field("client", "127.0.0.1:5")
            .quoted("user", b"x y")
            .opt("dst", None::<&str>)
            .opt_quoted("host", Some(b"h"));
        assert_eq!(l.as_str(), "decision client=127.0.0.1:5 user=\"x y\" dst=- host=\"h\"");
    }

    #[test]
    fn mapped_addresses_print_as_ipv4() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(addr(a), "127.0.0.1:80");
        let b: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(addr(b), "[::1]:80");
    }
}
