//! A parent proxy, asked for a destination over a connection already made
//! to it: SOCKS4 and SOCKS4a, SOCKS5 (RFC 1928, with RFC 1929's user and
//! password) and HTTP CONNECT (RFC 9110, 9.3.6).
//!
//! Each of the parent's answers is read by a pure incremental parser
//! ([`socks4_reply`], [`socks5_choice`], [`socks5_auth_status`],
//! [`socks5_reply`], [`http_response`]): fed everything received so far,
//! it answers incomplete, a whole answer and the bytes it took, or
//! [`Garbled`], and it never needs more than its answer's cap to decide.
//! The I/O functions ([`connect`], [`bind`], [`await_call`] and one per
//! protocol) write the request and read the answer on a non-blocking
//! stream within one [`Deadline`]; what the parent sent after its answer
//! (the destination's first bytes, or the start of BIND's second reply)
//! is handed back, never dropped.
//!
//! Every failure is a [`ParentError`] that says whether the parent
//! answered no ([`ParentError::Refused`], with its answer for the audit
//! line's `detail=`), could not be asked ([`ParentError::Unusable`]),
//! broke the protocol or the connection ([`ParentError::Broken`]: the
//! next parent of a list is worth a try), or ran out of time.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, MsgFlags};

use crate::addr::is_host_name;
use crate::net::{self, Deadline, Parse, Unread};
use crate::request::{self, Command, Request};
use crate::text::show;

/// The port a SOCKS parent listens on when the chain file names none.
pub const SOCKS_PORT: u16 = 1080;
/// The port an HTTP parent listens on when the chain file names none:
/// Squid's, the usual one for an HTTP proxy.
pub const HTTP_PORT: u16 = 3128;
/// The longest SOCKS5 reply: 4 bytes, a name of 255 bytes with its length
/// byte, and the port.
pub const MAX_SOCKS5_REPLY_LEN: usize = 4 + 1 + 255 + 2;
/// The longest HTTP response head accepted (status line and headers, up
/// to the blank line).
pub const MAX_HTTP_HEAD_LEN: usize = 8192;
/// The most of an HTTP status line a message quotes.
const MAX_STATUS_SHOWN: usize = 128;
/// RFC 1929 and RFC 1928 carry a user, a password and a name with a
/// length byte.
pub const MAX_FIELD_LEN: usize = 255;
/// Why a BIND cannot go through an HTTP parent.
const HTTP_NO_BIND: &str =
    "an HTTP parent cannot BIND (CONNECT is all it does); route BIND through a SOCKS parent or direct";
/// Reading buffer: longer than the longest answer, so that a parser
/// answers before it fills.
const BUFFER_LEN: usize = MAX_HTTP_HEAD_LEN + 1;
const _: () = assert!(BUFFER_LEN > MAX_SOCKS5_REPLY_LEN);

/// The protocol a parent speaks, as the chain file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SOCKS4 (`sockd` in the chain file): addresses only, IPv4 only.
    Socks4,
    /// SOCKS4a: SOCKS4, with a name passed to the parent unresolved.
    Socks4a,
    /// SOCKS5, without authentication or with a user and password.
    Socks5,
    /// An HTTP proxy's CONNECT.
    Http,
}

impl Protocol {
    /// The word of the chain file and of the audit line's `hop=`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Socks4 => "sockd",
            Protocol::Socks4a => "socks4a",
            Protocol::Socks5 => "socks5",
            Protocol::Http => "http",
        }
    }

    /// The port of a parent written without one.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Http => HTTP_PORT,
            _ => SOCKS_PORT,
        }
    }

    /// Whether a BIND can go through a parent of this protocol: HTTP has
    /// no way to ask for one.
    pub fn can_bind(self) -> bool {
        self != Protocol::Http
    }

    /// Whether the parent can be given a name to resolve itself.
    pub fn takes_names(self) -> bool {
        self != Protocol::Socks4
    }
}

/// `hop=` of the audit line for a parent: `socks5:192.0.2.1:1080`.
pub fn hop(protocol: Protocol, parent: SocketAddr) -> String {
    format!("{}:{}", protocol.name(), crate::audit::addr(parent))
}

/// What the parent is asked to reach (CONNECT) or to expect a call from
/// (BIND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Addr(SocketAddr),
    /// A name the parent resolves, and the port.
    Name(&'a str, u16),
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => f.write_str(&crate::audit::addr(*a)),
            Target::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// A user and password for a SOCKS5 parent (RFC 1929), each 1 to 255
/// bytes. Never shown: `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &show(&self.user))
            .field("password", &"(hidden)")
            .finish()
    }
}

/// A parent's yes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The address the parent reports: the address it connected from
    /// (CONNECT), where it listens (BIND's first reply), or who called
    /// (BIND's second reply). `None` when it reports none (HTTP), or a
    /// name.
    pub bound: Option<SocketAddr>,
    /// What the parent sent after its answer: the destination's first
    /// bytes, due to the client before anything else (CONNECT), or the
    /// start of the second reply (BIND's first).
    pub early: Vec<u8>,
}

/// Why a parent did not give what was asked.
#[derive(Debug)]
pub enum ParentError {
    /// The parent answered no. Its answer: `SOCKS4 reply 0x5b (...)`,
    /// `SOCKS5 reply 0x02 (...)`, `HTTP/1.1 403 Forbidden`. Final: the
    /// other parents of the list are not asked.
    Refused(String),
    /// The request cannot be put in the parent's protocol (an IPv6
    /// destination for SOCKS4, a name for plain SOCKS4, a name the
    /// resolver would not take). Nothing was sent. Final.
    Unusable(String),
    /// The parent's answer is not its protocol, or it closed or failed
    /// before a whole answer: worth trying the next parent.
    Broken(String),
    /// The deadline passed.
    Timeout,
}

impl ParentError {
    /// Whether the next parent of a list is worth a try after this.
    pub fn tries_next(&self) -> bool {
        matches!(self, ParentError::Broken(_))
    }

    /// One word for the audit line's `reason=`.
    pub fn reason(&self) -> &'static str {
        match self {
            ParentError::Refused(_) => "parent-refused",
            ParentError::Unusable(_) => "parent-unusable",
            ParentError::Broken(_) => "parent-failed",
            ParentError::Timeout => "connect-timeout",
        }
    }
}

impl fmt::Display for ParentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParentError::Refused(s) => write!(f, "refused: {s}"),
            ParentError::Unusable(s) => write!(f, "cannot ask: {s}"),
            ParentError::Broken(s) => f.write_str(s),
            ParentError::Timeout => f.write_str("timed out"),
        }
    }
}

/// Bytes that are not the answer a parser expected: what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbled(pub String);

// ---------------------------------------------------------------------
// The answers, pure.

/// A SOCKS4 reply: `00 CD DSTPORT DSTIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socks4Reply {
    pub code: u8,
    pub addr: SocketAddrV4,
}

/// The SOCKS4 reply at the start of `buf`: its version byte must be 0 and
/// its code one of the four the protocol has.
pub fn socks4_reply(buf: &[u8]) -> Result<Parse<Socks4Reply>, Garbled> {
    version(buf, &[0], "a SOCKS4 reply")?;
    if let Some(&cd) = buf.get(1) {
        if !(0x5a..=0x5d).contains(&cd) {
            return Err(Garbled(format!("not a SOCKS4 reply: code 0x{cd:02x}")));
        }
    }
    let Some(b) = buf.get(..8) else {
        return Ok(Parse::Incomplete);
    };
    let addr = SocketAddrV4::new(Ipv4Addr::new(b[4], b[5], b[6], b[7]), u16::from_be_bytes([b[2], b[3]]));
    Ok(Parse::Complete(Socks4Reply { code: b[1], addr }, 8))
}

/// What a SOCKS4 reply code means, for a message.
pub fn socks4_meaning(code: u8) -> &'static str {
    match code {
        0x5a => "granted",
        0x5b => "rejected or failed",
        0x5c => "the parent's identd check could not reach this host's identd",
        0x5d => "the parent's identd check found another user-id",
        _ => "unknown",
    }
}

/// SOCKS5's "no acceptable method".
pub const SOCKS5_NO_METHOD: u8 = 0xff;
/// SOCKS5 methods: none, and user and password.
const METHOD_NONE: u8 = 0;
const METHOD_PASSWORD: u8 = 2;

/// The SOCKS5 server's method choice, `05 METHOD`.
pub fn socks5_choice(buf: &[u8]) -> Result<Parse<u8>, Garbled> {
    version(buf, &[5], "a SOCKS5 method choice")?;
    Ok(second_byte(buf))
}

/// The RFC 1929 status, `01 STATUS`: 0 is success. (Some servers answer
/// with version 5, the SOCKS version, rather than the sub-negotiation's
/// 1; that is taken too.)
pub fn socks5_auth_status(buf: &[u8]) -> Result<Parse<u8>, Garbled> {
    version(buf, &[1, 5], "a user/password status (RFC 1929)")?;
    Ok(second_byte(buf))
}

/// An answer's first byte, once there is one, must be one of `allowed`;
/// `what` names the answer in the error.
fn version(buf: &[u8], allowed: &[u8], what: &str) -> Result<(), Garbled> {
    match buf.first() {
        Some(v) if !allowed.contains(v) => Err(Garbled(format!("not {what}: version byte 0x{v:02x}"))),
        _ => Ok(()),
    }
}

/// The second byte of a two-byte answer, the whole answer.
fn second_byte(buf: &[u8]) -> Parse<u8> {
    match buf.get(1) {
        None => Parse::Incomplete,
        Some(&b) => Parse::Complete(b, 2),
    }
}

/// The address in a SOCKS5 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Addr(SocketAddr),
    /// A name (ATYP 3), as sent, and the port.
    Name(Vec<u8>, u16),
}

/// A SOCKS5 reply: `05 REP RSV ATYP BND.ADDR BND.PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socks5Reply {
    pub code: u8,
    pub bound: Bound,
}

/// The SOCKS5 reply at the start of `buf`, at most
/// [`MAX_SOCKS5_REPLY_LEN`] bytes. The reserved byte is not looked at.
pub fn socks5_reply(buf: &[u8]) -> Result<Parse<Socks5Reply>, Garbled> {
    version(buf, &[5], "a SOCKS5 reply")?;
    let Some(&atyp) = buf.get(3) else {
        return Ok(Parse::Incomplete);
    };
    let (addr_len, start) = match atyp {
        1 => (4, 4),
        4 => (16, 4),
        3 => match buf.get(4) {
            None => return Ok(Parse::Incomplete),
            Some(&n) => (usize::from(n), 5),
        },
        other => return Err(Garbled(format!("SOCKS5 reply with address type 0x{other:02x}"))),
    };
    let end = start + addr_len + 2;
    let Some(b) = buf.get(..end) else {
        return Ok(Parse::Incomplete);
    };
    let a = &b[start..start + addr_len];
    let port = u16::from_be_bytes([b[end - 2], b[end - 1]]);
    let bound = match atyp {
        1 => Bound::Addr(SocketAddr::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]).into(), port)),
        4 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            Bound::Addr(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => Bound::Name(a.to_vec(), port),
    };
    Ok(Parse::Complete(Socks5Reply { code: b[1], bound }, end))
}

/// What a SOCKS5 reply code means (RFC 1928, 6), for a message.
pub fn socks5_meaning(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned",
    }
}

/// An HTTP response's head: its status code and status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line without its line end, printable ASCII, at most
    /// 128 bytes of it (longer ones are cut and marked `...`).
    pub line: String,
}

/// The HTTP/1.x response head at the start of `buf`: the status line
/// (`HTTP/1.x NNN reason`) and the header lines up to the blank line,
/// lines ending in LF with or without a CR before it. At most
/// [`MAX_HTTP_HEAD_LEN`] bytes; the bytes after the blank line are not
/// part of it.
pub fn http_response(buf: &[u8]) -> Result<Parse<HttpResponse>, Garbled> {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(Garbled(format!(
            "not an HTTP response: {}",
            show(&buf[..buf.len().min(16)])
        )));
    }
    let window = &buf[..buf.len().min(MAX_HTTP_HEAD_LEN)];
    let Some(eol) = window.iter().position(|&b| b == b'\n') else {
        return incomplete_head(buf);
    };
    let line = window[..eol].strip_suffix(b"\r").unwrap_or(&window[..eol]);
    let status = status_of(line).ok_or_else(|| Garbled(format!("not an HTTP status line: {}", show(line))))?;
    // The head ends at the first empty line after the status line.
    let mut at = eol + 1;
    loop {
        let Some(len) = window[at..].iter().position(|&b| b == b'\n') else {
            return incomplete_head(buf);
        };
        let header = &window[at..at + len];
        at += len + 1;
        if header.is_empty() || header == b"\r" {
            break;
        }
    }
    Ok(Parse::Complete(
        HttpResponse {
            status,
            line: shown_status(line),
        },
        at,
    ))
}

/// Incomplete, unless the cap is reached.
fn incomplete_head<T>(buf: &[u8]) -> Result<Parse<T>, Garbled> {
    if buf.len() >= MAX_HTTP_HEAD_LEN {
        return Err(Garbled(format!(
            "HTTP response head longer than {MAX_HTTP_HEAD_LEN} bytes"
        )));
    }
    Ok(Parse::Incomplete)
}

/// The status code of `HTTP/1.x NNN[ reason]`.
fn status_of(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    let (code, reason) = rest.split_at_checked(3)?;
    if !minor.is_ascii_digit() || !code.iter().all(u8::is_ascii_digit) || !(reason.is_empty() || reason[0] == b' ') {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// A status line as a message shows it: as it is when it is printable
/// ASCII, quoted and escaped otherwise; cut to 128 bytes.
fn shown_status(line: &[u8]) -> String {
    let cut = &line[..line.len().min(MAX_STATUS_SHOWN)];
    let more = if line.len() > MAX_STATUS_SHOWN { "..." } else { "" };
    if cut.iter().all(|b| (0x20..0x7f).contains(b)) {
        format!("{}{more}", String::from_utf8_lossy(cut))
    } else {
        crate::text::quote(line, MAX_STATUS_SHOWN)
    }
}

// ---------------------------------------------------------------------
// The requests, pure.

/// The SOCKS4 request for `command` to `target` as `user`: an IPv4
/// address, or with SOCKS4a (`names`) a name; anything else is
/// [`ParentError::Unusable`].
pub fn socks4_request(command: Command, target: Target<'_>, user: &[u8], names: bool) -> Result<Vec<u8>, ParentError> {
    if user.contains(&0) || user.len() > request::MAX_USERID_LEN {
        return Err(ParentError::Unusable("the user-id holds a NUL or is too long".into()));
    }
    let (port, ip, hostname) = match target {
        Target::Addr(SocketAddr::V4(a)) => (a.port(), *a.ip(), None),
        Target::Addr(SocketAddr::V6(a)) => {
            return Err(ParentError::Unusable(format!(
                "SOCKS4 carries IPv4 addresses only, not {}",
                a.ip()
            )))
        }
        Target::Name(name, port) if names => (port, Ipv4Addr::new(0, 0, 0, 1), Some(checked_name(name)?)),
        Target::Name(name, _) => {
            return Err(ParentError::Unusable(format!(
                "a SOCKS4 (sockd) parent takes addresses only, not the name {}; use socks4a",
                show(name.as_bytes())
            )))
        }
    };
    Ok(request::encode(&Request {
        command,
        port,
        ip,
        userid: user.to_vec(),
        hostname: hostname.map(|n| n.as_bytes().to_vec()),
    }))
}

/// A name to pass on: one the resolver would take ([`is_host_name`]), so
/// that nothing the client sent can add a field or a header line.
fn checked_name(name: &str) -> Result<&str, ParentError> {
    if is_host_name(name) {
        Ok(name)
    } else {
        Err(ParentError::Unusable(format!(
            "{} is not a host name",
            show(name.as_bytes())
        )))
    }
}

/// The SOCKS5 greeting: method "none", and "user and password" when there
/// are credentials.
pub fn socks5_greeting(credentials: Option<&Credentials>) -> Vec<u8> {
    match credentials {
        Some(_) => vec![5, 2, METHOD_NONE, METHOD_PASSWORD],
        None => vec![5, 1, METHOD_NONE],
    }
}

/// The RFC 1929 request: `01 ULEN USER PLEN PASSWORD`.
pub fn socks5_auth(c: &Credentials) -> Result<Vec<u8>, ParentError> {
    let ok = |f: &[u8]| (1..=MAX_FIELD_LEN).contains(&f.len());
    if !ok(&c.user) || !ok(&c.password) {
        return Err(ParentError::Unusable(
            "the user and the password must be 1 to 255 bytes".into(),
        ));
    }
    let mut out = Vec::with_capacity(3 + c.user.len() + c.password.len());
    out.push(1);
    out.push(c.user.len() as u8);
    out.extend_from_slice(&c.user);
    out.push(c.password.len() as u8);
    out.extend_from_slice(&c.password);
    Ok(out)
}

/// The SOCKS5 request for `command` to `target`: `05 CMD 00 ATYP ADDR
/// PORT`.
pub fn socks5_request(command: Command, target: Target<'_>) -> Result<Vec<u8>, ParentError> {
    let cmd = match command {
        Command::Connect => 1,
        Command::Bind => 2,
    };
    let mut out = vec![5, cmd, 0];
    let port = match target {
        Target::Addr(SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Addr(SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Name(name, port) => {
            let name = checked_name(name)?;
            // is_host_name holds names to 254 bytes with a final dot.
            let name = &name.as_bytes()[..name.len().min(MAX_FIELD_LEN)];
            out.push(3);
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            port
        }
    };
    out.extend_from_slice(&port.to_be_bytes());
    Ok(out)
}

/// The HTTP CONNECT request for `target`, with its Host header.
pub fn http_request(target: Target<'_>) -> Result<Vec<u8>, ParentError> {
    let authority = match target {
        Target::Addr(a) => crate::audit::addr(a),
        Target::Name(name, port) => format!("{}:{port}", checked_name(name)?),
    };
    Ok(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes())
}

// ---------------------------------------------------------------------
// Asking, over a connected non-blocking stream.

/// Answers read from one parent connection, in turn, with what was
/// received after each kept for the next.
struct Answers<'s> {
    stream: &'s TcpStream,
    buf: Vec<u8>,
    have: usize,
    deadline: Deadline,
}

impl<'s> Answers<'s> {
    fn new(stream: &'s TcpStream, deadline: Deadline) -> Answers<'s> {
        Answers {
            stream,
            buf: vec![0u8; BUFFER_LEN],
            have: 0,
            deadline,
        }
    }

    /// The next answer, as `parse` reads it; `what` names it in messages.
    fn next<T>(&mut self, what: &str, parse: impl Fn(&[u8]) -> Result<Parse<T>, Garbled>) -> Result<T, ParentError> {
        match net::read_message(self.stream, &mut self.buf, self.have, self.deadline, what, parse) {
            Ok((answer, used, len)) => {
                self.buf.copy_within(used..len, 0);
                self.have = len - used;
                Ok(answer)
            }
            Err(Unread::Invalid(Garbled(why), _)) => Err(ParentError::Broken(why)),
            Err(Unread::Closed(0)) => Err(ParentError::Broken(format!("closed before its {what}"))),
            Err(Unread::Closed(n)) => Err(ParentError::Broken(format!(
                "closed within its {what}, after {n} bytes"
            ))),
            Err(Unread::Io(e)) => Err(io_error(e, what)),
        }
    }

    /// What came after the last answer.
    fn rest(self) -> Vec<u8> {
        self.buf[..self.have].to_vec()
    }
}

fn io_error(e: io::Error, what: &str) -> ParentError {
    if e.kind() == io::ErrorKind::TimedOut {
        ParentError::Timeout
    } else {
        ParentError::Broken(format!("{what}: {e}"))
    }
}

fn send(stream: &TcpStream, bytes: &[u8], deadline: Deadline, what: &str) -> Result<(), ParentError> {
    net::write_all(stream, bytes, deadline, what).map_err(|e| io_error(e, what))
}

/// Asks the parent on `stream` for `ask` before `deadline`: SOCKS4
/// requests carry `ask.user`, a SOCKS5 parent that asks for them gets
/// `ask.credentials`. A CONNECT's answer opens the relay. A BIND's is the
/// first reply, with where the parent listens (its address on this stream
/// when it reports the unspecified one, as the protocol says);
/// [`await_call`] then waits for the second. An HTTP parent cannot BIND:
/// [`ParentError::Unusable`], with nothing sent. The stream stays open
/// either way; on success it is the relay's.
pub fn request(stream: &TcpStream, ask: &Ask<'_>, deadline: Deadline) -> Result<Opened, ParentError> {
    let (command, target) = (ask.command, ask.target);
    let opened = match ask.protocol {
        Protocol::Socks4 => socks4_ask(stream, command, target, ask.user, false, deadline),
        Protocol::Socks4a => socks4_ask(stream, command, target, ask.user, true, deadline),
        Protocol::Socks5 => socks5_ask(stream, command, target, ask.credentials, deadline),
        Protocol::Http if command == Command::Connect => http_connect(stream, target, deadline),
        Protocol::Http => Err(ParentError::Unusable(HTTP_NO_BIND.into())),
    }?;
    Ok(match command {
        Command::Bind => listening(opened, stream),
        Command::Connect => opened,
    })
}

/// BIND's first reply with an unspecified address made the address the
/// parent was reached at.
fn listening(mut opened: Opened, stream: &TcpStream) -> Opened {
    if let (Some(bound), Ok(parent)) = (opened.bound, stream.peer_addr()) {
        if bound.ip().is_unspecified() {
            opened.bound = Some(SocketAddr::new(net::unmap(parent).ip(), bound.port()));
        }
    }
    opened
}

fn socks4_ask(
    stream: &TcpStream,
    command: Command,
    target: Target<'_>,
    user: &[u8],
    names: bool,
    deadline: Deadline,
) -> Result<Opened, ParentError> {
    let req = socks4_request(command, target, user, names)?;
    send(stream, &req, deadline, "SOCKS4 request")?;
    let mut answers = Answers::new(stream, deadline);
    let reply = answers.next("SOCKS4 reply", socks4_reply)?;
    socks4_granted(&reply)?;
    Ok(Opened {
        bound: Some(SocketAddr::V4(reply.addr)),
        early: answers.rest(),
    })
}

fn socks4_granted(reply: &Socks4Reply) -> Result<(), ParentError> {
    match reply.code {
        0x5a => Ok(()),
        c => Err(ParentError::Refused(format!(
            "SOCKS4 reply 0x{c:02x} ({})",
            socks4_meaning(c)
        ))),
    }
}

/// SOCKS5 CONNECT or BIND: greeting, user and password if the parent
/// picks them, request, reply.
fn socks5_ask(
    stream: &TcpStream,
    command: Command,
    target: Target<'_>,
    credentials: Option<&Credentials>,
    deadline: Deadline,
) -> Result<Opened, ParentError> {
    // Everything that can be refused before a byte is sent.
    let req = socks5_request(command, target)?;
    let auth = credentials.map(socks5_auth).transpose()?;
    send(stream, &socks5_greeting(credentials), deadline, "SOCKS5 greeting")?;
    let mut answers = Answers::new(stream, deadline);
    match answers.next("SOCKS5 method choice", socks5_choice)? {
        METHOD_NONE => {}
        METHOD_PASSWORD => {
            let Some(auth) = auth else {
                return Err(ParentError::Broken(
                    "asked for user/password, which was not offered".into(),
                ));
            };
            send(stream, &auth, deadline, "SOCKS5 user/password")?;
            let status = answers.next("user/password status", socks5_auth_status)?;
            if status != 0 {
                return Err(ParentError::Refused(format!(
                    "SOCKS5 user/password not accepted (status 0x{status:02x})"
                )));
            }
        }
        SOCKS5_NO_METHOD => {
            let offered = if auth.is_some() {
                "none or user/password"
            } else {
                "none"
            };
            return Err(ParentError::Refused(format!(
                "SOCKS5 no acceptable method (offered {offered})"
            )));
        }
        m => {
            return Err(ParentError::Broken(format!(
                "chose SOCKS5 method 0x{m:02x}, which was not offered"
            )))
        }
    }
    send(stream, &req, deadline, "SOCKS5 request")?;
    let reply = answers.next("SOCKS5 reply", socks5_reply)?;
    socks5_granted(&reply)?;
    Ok(Opened {
        bound: socks5_bound(&reply),
        early: answers.rest(),
    })
}

fn socks5_granted(reply: &Socks5Reply) -> Result<(), ParentError> {
    match reply.code {
        0 => Ok(()),
        c => Err(ParentError::Refused(format!(
            "SOCKS5 reply 0x{c:02x} ({})",
            socks5_meaning(c)
        ))),
    }
}

fn socks5_bound(reply: &Socks5Reply) -> Option<SocketAddr> {
    match reply.bound {
        Bound::Addr(a) => Some(net::unmap(a)),
        Bound::Name(..) => None,
    }
}

/// HTTP CONNECT: the request line and Host header; any 2xx status is a
/// yes, anything else the parent's no, with its status line.
fn http_connect(stream: &TcpStream, target: Target<'_>, deadline: Deadline) -> Result<Opened, ParentError> {
    let req = http_request(target)?;
    send(stream, &req, deadline, "CONNECT request")?;
    let mut answers = Answers::new(stream, deadline);
    let head = answers.next("HTTP response", http_response)?;
    if !(200..300).contains(&head.status) {
        return Err(ParentError::Refused(head.line));
    }
    Ok(Opened {
        bound: None,
        early: answers.rest(),
    })
}

/// One request to put to a parent: what it speaks, what to ask, as whom.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub protocol: Protocol,
    pub command: Command,
    pub target: Target<'a>,
    /// The user-id a SOCKS4 request carries.
    pub user: &'a [u8],
    /// SOCKS5's user and password, offered when the parent asks.
    pub credentials: Option<&'a Credentials>,
}

/// The parent that said yes: the connection to it (non-blocking, with
/// keepalive), its address, and its answer.
#[derive(Debug)]
pub struct Hop {
    pub stream: TcpStream,
    pub parent: SocketAddr,
    pub opened: Opened,
}

/// Why no parent of a list said yes. Each text names the parents tried
/// and what each did, for the audit line's `detail=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// A parent answered no ([`ParentError::Refused`]); the parents after
    /// it were not asked.
    Refused(String),
    /// The request cannot be put to a parent of this protocol.
    Unusable(String),
    /// Every parent was unreachable, or broke the protocol.
    Unreached(String),
    /// The deadline passed.
    Timeout(String),
    /// The source address for the connection to a parent could not be
    /// taken (`--route`, `--outgoing-address`).
    Source(String),
    /// No descriptor for a socket.
    FdLimit(String),
}

impl Failed {
    /// The audit line's `reason=`.
    pub fn reason(&self) -> &'static str {
        match self {
            Failed::Refused(_) => "parent-refused",
            Failed::Unusable(_) => "parent-unusable",
            Failed::Unreached(_) => "parent-failed",
            Failed::Timeout(_) => "connect-timeout",
            Failed::Source(_) => "source-failed",
            Failed::FdLimit(_) => "fd-limit",
        }
    }

    /// The same failure, its text after `before` (what was said of
    /// parents that were never asked).
    pub fn after(self, before: &str) -> Failed {
        let join = |s: String| format!("{before}; {s}");
        match self {
            Failed::Refused(s) => Failed::Refused(join(s)),
            Failed::Unusable(s) => Failed::Unusable(join(s)),
            Failed::Unreached(s) => Failed::Unreached(join(s)),
            Failed::Timeout(s) => Failed::Timeout(join(s)),
            Failed::Source(s) => Failed::Source(join(s)),
            Failed::FdLimit(s) => Failed::FdLimit(join(s)),
        }
    }

    /// The audit line's `detail=`.
    pub fn detail(&self) -> &str {
        match self {
            Failed::Refused(s)
            | Failed::Unusable(s)
            | Failed::Unreached(s)
            | Failed::Timeout(s)
            | Failed::Source(s)
            | Failed::FdLimit(s) => s,
        }
    }
}

/// Puts `ask` to `parents` in order, all before `deadline`: connects to
/// each (from the address `source` gives for it, if any) and asks, until
/// one says yes. Each parent has an equal share of the time left, the
/// last one all of it. A parent that cannot be reached, breaks the
/// protocol or does not answer within its share is passed over for the
/// next; a parent's no, a request no parent of the protocol could take,
/// the deadline and a source address that cannot be taken end the walk.
/// Every connection but the one returned is closed.
pub fn open(
    ask: &Ask<'_>,
    parents: &[SocketAddr],
    source: impl Fn(SocketAddr) -> Option<std::net::IpAddr>,
    deadline: Deadline,
) -> Result<Hop, Failed> {
    // What no parent could take is refused before any is connected to.
    check(ask)?;
    let mut tried: Vec<String> = Vec::new();
    let all = |tried: &[String], last: String| {
        let mut t = tried.to_vec();
        t.push(last);
        t.join("; ")
    };
    for (i, &parent) in parents.iter().enumerate() {
        let name = format!("parent {}", crate::audit::addr(parent));
        let last = i + 1 == parents.len();
        // Each parent gets an equal share of the time left, the last all
        // of it: one that accepts and then says nothing cannot take the
        // others' turn.
        let share = match deadline.remaining() {
            Some(left) if !last => Deadline::after(left / (parents.len() - i) as u32),
            _ => deadline,
        };
        let from = source(parent).map(|ip| SocketAddr::new(ip, 0));
        let stream = match net::connect_from(parent, from, share) {
            Ok(s) => s,
            Err(net::ConnectError::Bind(e)) => {
                let src = from.map(|f| f.ip().to_string()).unwrap_or_default();
                return Err(Failed::Source(all(&tried, format!("{name}: source {src}: {e}"))));
            }
            Err(net::ConnectError::Socket(e) | net::ConnectError::Connect(e)) => {
                let line = format!("{name}: {e}");
                if e.kind() == io::ErrorKind::TimedOut && (last || deadline.remaining().is_none()) {
                    return Err(Failed::Timeout(all(&tried, line)));
                }
                if net::is_fd_limit(&e) {
                    return Err(Failed::FdLimit(all(&tried, format!("{line}{}", net::nofile_note()))));
                }
                tried.push(line);
                continue;
            }
        };
        net::keepalive(&stream);
        match request(&stream, ask, share) {
            Ok(opened) => return Ok(Hop { stream, parent, opened }),
            Err(e @ ParentError::Broken(_)) => tried.push(format!("{name}: {e}")),
            Err(e @ ParentError::Timeout) if !last && deadline.remaining().is_some() => {
                tried.push(format!("{name}: {e}"))
            }
            Err(e @ ParentError::Refused(_)) => return Err(Failed::Refused(all(&tried, format!("{name} {e}")))),
            Err(e @ ParentError::Unusable(_)) => return Err(Failed::Unusable(all(&tried, format!("{name}: {e}")))),
            Err(e @ ParentError::Timeout) => return Err(Failed::Timeout(all(&tried, format!("{name}: {e}")))),
        }
    }
    if tried.is_empty() {
        tried.push("no parent address".into());
    }
    Err(Failed::Unreached(tried.join("; ")))
}

/// Whether `ask` can be put in its protocol at all: the request encodes,
/// and an HTTP parent is not asked to BIND.
fn check(ask: &Ask<'_>) -> Result<(), Failed> {
    let encoded = match (ask.protocol, ask.command) {
        (Protocol::Http, Command::Bind) => Err(ParentError::Unusable(HTTP_NO_BIND.into())),
        (Protocol::Http, Command::Connect) => http_request(ask.target).map(drop),
        (Protocol::Socks5, command) => socks5_request(command, ask.target)
            .and_then(|_| ask.credentials.map(socks5_auth).transpose())
            .map(drop),
        (p, command) => socks4_request(command, ask.target, ask.user, p == Protocol::Socks4a).map(drop),
    };
    encoded.map_err(|e| Failed::Unusable(format!("{} parent: {e}", ask.protocol.name())))
}

/// How the wait for BIND's second reply through a parent ended.
#[derive(Debug)]
pub enum Call {
    /// The parent's second reply said yes: who called (`bound`), and
    /// what the caller sent after it.
    Called(Opened),
    /// The deadline passed with no second reply.
    Timeout,
    /// The client closed, failed or sent data while it should have been
    /// waiting; the text says which.
    ClientGone(String),
}

/// Waits, until `deadline`, for BIND's second reply from the parent on
/// `stream`, which speaks `protocol` and whose first reply was followed
/// by `early`, while watching `client`: a client that closes or sends
/// anything ends the wait, as [`crate::bind::wait`] does. A second reply
/// that refuses is [`ParentError::Refused`].
pub fn await_call(
    protocol: Protocol,
    stream: &TcpStream,
    early: &[u8],
    client: &TcpStream,
    deadline: Deadline,
) -> Result<Call, ParentError> {
    let socks5 = match protocol {
        Protocol::Socks4 | Protocol::Socks4a => false,
        Protocol::Socks5 => true,
        Protocol::Http => return Err(ParentError::Unusable(HTTP_NO_BIND.into())),
    };
    let mut buf = vec![0u8; BUFFER_LEN.max(early.len() + 1)];
    buf[..early.len()].copy_from_slice(early);
    let mut have = early.len();
    loop {
        // A reply that is there already is read before anything else.
        let bound = if socks5 {
            match socks5_reply(&buf[..have]) {
                Ok(Parse::Complete(r, used)) => Some(socks5_granted(&r).map(|()| (socks5_bound(&r), used))),
                Ok(Parse::Incomplete) => None,
                Err(Garbled(why)) => return Err(ParentError::Broken(why)),
            }
        } else {
            match socks4_reply(&buf[..have]) {
                Ok(Parse::Complete(r, used)) => Some(socks4_granted(&r).map(|()| (Some(SocketAddr::V4(r.addr)), used))),
                Ok(Parse::Incomplete) => None,
                Err(Garbled(why)) => return Err(ParentError::Broken(why)),
            }
        };
        if let Some(granted) = bound {
            let (bound, used) = granted?;
            return Ok(Call::Called(Opened {
                bound,
                early: buf[used..have].to_vec(),
            }));
        }
        let Some(timeout) = poll_timeout(deadline) else {
            return Ok(Call::Timeout);
        };
        let mut fds = [
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(ParentError::Broken(format!("poll: {e}"))),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            let mut byte = [0u8; 1];
            match socket::recv(
                client.as_raw_fd(),
                &mut byte,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Ok(Call::ClientGone("client closed".into())),
                Ok(_) => return Ok(Call::ClientGone("client sent data before the second reply".into())),
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => return Ok(Call::ClientGone(format!("client error: {e}"))),
            }
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            match socket::recv(stream.as_raw_fd(), &mut buf[have..], MsgFlags::MSG_DONTWAIT) {
                Ok(0) if have == 0 => return Err(ParentError::Broken("closed before its second reply".into())),
                Ok(0) => {
                    return Err(ParentError::Broken(format!(
                        "closed within its second reply, after {have} bytes"
                    )))
                }
                Ok(n) => have += n,
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => return Err(ParentError::Broken(format!("second reply: {e}"))),
            }
        }
    }
}

/// `deadline`'s remaining time as a `poll` timeout, rounded up; `None`
/// once it has passed.
fn poll_timeout(deadline: Deadline) -> Option<PollTimeout> {
    let left = deadline.remaining()?;
    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    Some(PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse` fed `bytes` whole, then one byte at a time: the same
    /// answer, and incomplete before the last byte it uses.
    fn fed<T: PartialEq + fmt::Debug>(
        bytes: &[u8],
        parse: impl Fn(&[u8]) -> Result<Parse<T>, Garbled>,
    ) -> Result<Parse<T>, Garbled> {
        let whole = parse(bytes);
        for n in 0..bytes.len() {
            match (parse(&bytes[..n]), &whole) {
                (Ok(Parse::Incomplete), _) | (Err(_), Err(_)) => {}
                (Ok(got), Ok(w)) => assert_eq!(&got, w, "prefix {n}"),
                (got, _) => panic!("prefix {n}: {got:?}, whole: {whole:?}"),
            }
        }
        whole
    }

    fn complete<T>(p: Result<Parse<T>, Garbled>) -> (T, usize) {
        match p {
            Ok(Parse::Complete(t, used)) => (t, used),
            Ok(Parse::Incomplete) => panic!("incomplete"),
            Err(Garbled(why)) => panic!("garbled: {why}"),
        }
    }

    fn garbled<T: fmt::Debug>(p: Result<Parse<T>, Garbled>) -> String {
        match p {
            Err(Garbled(why)) => why,
            other => panic!("not garbled: {other:?}"),
        }
    }

    #[test]
    fn socks4_replies_byte_by_byte_with_what_follows() {
        let bytes = [0, 0x5a, 0x1f, 0x90, 10, 0, 0, 1, b'h', b'i'];
        let (r, used) = complete(fed(&bytes, socks4_reply));
        assert_eq!(used, 8);
        assert_eq!(r.code, 0x5a);
        assert_eq!(r.addr, "10.0.0.1:8080".parse().unwrap());
        for code in [0x5b, 0x5c, 0x5d] {
            assert_eq!(complete(socks4_reply(&[0, code, 0, 0, 0, 0, 0, 0])).0.code, code);
        }
        assert!(garbled(fed(&[4, 0x5a, 0, 0, 0, 0, 0, 0], socks4_reply)).contains("version byte 0x04"));
        assert!(garbled(fed(&[0, 0x00, 0, 0, 0, 0, 0, 0], socks4_reply)).contains("code 0x00"));
        // An HTTP proxy answering a SOCKS request: told at the first byte.
        assert!(garbled(socks4_reply(b"H")).contains("0x48"));
        assert_eq!(socks4_reply(&[0, 0x5a, 0]), Ok(Parse::Incomplete));
    }

    #[test]
    fn socks5_choices_and_statuses() {
        assert_eq!(complete(fed(&[5, 0], socks5_choice)), (0, 2));
        assert_eq!(complete(fed(&[5, 0xff, 9], socks5_choice)), (0xff, 2));
        assert!(garbled(socks5_choice(&[4])).contains("version byte 0x04"));
        assert_eq!(socks5_choice(&[5]), Ok(Parse::Incomplete));
        assert_eq!(complete(fed(&[1, 0], socks5_auth_status)), (0, 2));
        assert_eq!(complete(fed(&[5, 1], socks5_auth_status)), (1, 2));
        assert!(garbled(socks5_auth_status(&[2, 0])).contains("RFC 1929"));
    }

    #[test]
    fn socks5_replies_of_each_address_type() {
        let v4 = [5, 0, 0, 1, 192, 0, 2, 1, 0x04, 0x38, b'x'];
        let (r, used) = complete(fed(&v4, socks5_reply));
        assert_eq!((r.code, used), (0, 10));
        assert_eq!(r.bound, Bound::Addr("192.0.2.1:1080".parse().unwrap()));
        let mut v6 = vec![5, 5, 0, 4];
        v6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80]);
        let (r, used) = complete(fed(&v6, socks5_reply));
        assert_eq!((r.code, used), (5, 22));
        assert_eq!(r.bound, Bound::Addr("[2001:db8::7]:80".parse().unwrap()));
        let name = [5, 0, 0, 3, 4, b'h', b'o', b's', b't', 0, 21];
        let (r, used) = complete(fed(&name, socks5_reply));
        assert_eq!((r.bound, used), (Bound::Name(b"host".to_vec(), 21), 11));
        // The longest: a 255-byte name.
        let mut long = vec![5, 0, 0, 3, 255];
        long.extend(std::iter::repeat_n(b'a', 255));
        long.extend_from_slice(&[0, 1]);
        assert_eq!(complete(socks5_reply(&long)).1, MAX_SOCKS5_REPLY_LEN);
        assert!(garbled(fed(&[5, 0, 0, 2, 0, 0], socks5_reply)).contains("address type 0x02"));
        assert!(garbled(socks5_reply(&[0, 0x5a])).contains("version byte 0x00"));
    }

    #[test]
    fn http_heads_end_at_the_blank_line_and_keep_what_follows() {
        let bytes = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\nSSH-2.0";
        let (r, used) = complete(fed(bytes, http_response));
        assert_eq!(r.status, 200);
        assert_eq!(r.line, "HTTP/1.1 200 Connection established");
        assert_eq!(&bytes[used..], b"SSH-2.0");
        let (r, used) = complete(fed(b"HTTP/1.0 403 Forbidden\n\n", http_response));
        assert_eq!((r.status, r.line.as_str(), used), (403, "HTTP/1.0 403 Forbidden", 24));
        let (r, _) = complete(fed(b"HTTP/1.1 200\r\n\r\n", http_response));
        assert_eq!(r.status, 200);
        // A header line that is only a CR is not the end: an LF must follow.
        assert_eq!(http_response(b"HTTP/1.1 200 OK\r\nA: b\r\n\r"), Ok(Parse::Incomplete));
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n"[..],
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 20x OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1200 OK\r\n\r\n",
        ] {
            garbled(fed(bad, http_response));
        }
        // Unprintable bytes in the status line are escaped, and long ones cut.
        let (r, _) = complete(http_response(b"HTTP/1.1 502 Bad\x1b[31m\r\n\r\n"));
        assert_eq!(r.line, r#""HTTP/1.1 502 Bad\x1b[31m""#);
        let long = format!("HTTP/1.1 403 {}\r\n\r\n", "x".repeat(300));
        let (r, _) = complete(http_response(long.as_bytes()));
        assert!(r.line.ends_with("xxx...") && r.line.len() == 131, "{}", r.line);
    }

    #[test]
    fn http_heads_are_capped() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        while head.len() < MAX_HTTP_HEAD_LEN - 10 {
            head.extend_from_slice(b"X-Pad: 0123456789\r\n");
        }
        assert_eq!(http_response(&head), Ok(Parse::Incomplete));
        head.resize(MAX_HTTP_HEAD_LEN, b'a');
        assert!(garbled(http_response(&head)).contains("longer than 8192"));
        // A head that ends within the cap is whole, whatever follows.
        let mut ok = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        ok.resize(MAX_HTTP_HEAD_LEN * 2, b'z');
        assert_eq!(complete(http_response(&ok)).1, 19);
    }

    #[test]
    fn requests_in_each_protocol() {
        let a: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(
            socks4_request(Command::Connect, Target::Addr(a), b"alice", false).unwrap(),
            [&[4, 1, 1, 0xbb, 192, 0, 2, 1][..], b"alice\0"].concat()
        );
        assert_eq!(
            socks4_request(Command::Bind, Target::Name("ftp.example", 0), b"", true).unwrap(),
            [&[4, 2, 0, 0, 0, 0, 0, 1, 0][..], b"ftp.example\0"].concat()
        );
        for (target, names, why) in [
            (Target::Addr(v6), true, "IPv4 addresses only"),
            (Target::Name("www.example", 80), false, "use socks4a"),
            (Target::Name("a\r\nb", 80), true, "not a host name"),
        ] {
            let e = socks4_request(Command::Connect, target, b"", names).unwrap_err();
            assert!(matches!(&e, ParentError::Unusable(s) if s.contains(why)), "{e:?}");
        }
        assert!(socks4_request(Command::Connect, Target::Addr(a), b"a\0b", false).is_err());

        assert_eq!(
            socks5_request(Command::Connect, Target::Addr(a)).unwrap(),
            [5, 1, 0, 1, 192, 0, 2, 1, 1, 0xbb]
        );
        let r = socks5_request(Command::Bind, Target::Addr(v6)).unwrap();
        assert_eq!((&r[..4], r.len()), (&[5, 2, 0, 4][..], 22));
        assert_eq!(
            socks5_request(Command::Connect, Target::Name("db.example", 5432)).unwrap(),
            [&[5, 1, 0, 3, 10][..], b"db.example", &[0x15, 0x38]].concat()
        );
        assert!(socks5_request(Command::Connect, Target::Name("x y", 1)).is_err());
        assert_eq!(socks5_greeting(None), [5, 1, 0]);
        let c = Credentials {
            user: b"alice".to_vec(),
            password: b"s:cret".to_vec(),
        };
        assert_eq!(socks5_greeting(Some(&c)), [5, 2, 0, 2]);
        assert_eq!(
            socks5_auth(&c).unwrap(),
            [&[1, 5][..], b"alice", &[6], b"s:cret"].concat()
        );
        let empty = Credentials {
            user: b"alice".to_vec(),
            password: Vec::new(),
        };
        assert!(socks5_auth(&empty).is_err());
        assert!(!format!("{c:?}").contains("cret"));

        assert_eq!(
            http_request(Target::Addr(v6)).unwrap(),
            b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"
        );
        assert_eq!(
            http_request(Target::Name("www.example", 443)).unwrap(),
            b"CONNECT www.example:443 HTTP/1.1\r\nHost: www.example:443\r\n\r\n"
        );
        // No header can be smuggled in through a name.
        assert!(http_request(Target::Name("x\r\nProxy-Authorization: y", 443)).is_err());
    }

    #[test]
    fn errors_say_whether_the_next_parent_is_tried() {
        assert!(ParentError::Broken("x".into()).tries_next());
        assert!(!ParentError::Refused("x".into()).tries_next());
        assert!(!ParentError::Unusable("x".into()).tries_next());
        assert!(!ParentError::Timeout.tries_next());
        assert_eq!(
            ParentError::Refused("SOCKS4 reply 0x5b (rejected or failed)".into()).to_string(),
            "refused: SOCKS4 reply 0x5b (rejected or failed)"
        );
        assert_eq!(
            hop(Protocol::Socks5, "[::1]:1080".parse().unwrap()),
            "socks5:[::1]:1080"
        );
        assert!(!Protocol::Http.can_bind() && Protocol::Socks4.can_bind());
        assert_eq!(
            (Protocol::Http.default_port(), Protocol::Socks4a.default_port()),
            (3128, 1080)
        );
    }
}
