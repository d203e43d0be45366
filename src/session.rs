//! One connection, top to bottom: request → rules → ident → connect (or,
//! for BIND, listen → first reply → wait for the call) → reply → relay →
//! audit. Every path writes a decision line and an end line; a BIND that
//! got its first reply also writes an accept line.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::audit::{self, Level, Line, Log};
use crate::bind::{self, Wait};
use crate::config::Config;
use crate::net::{self, Deadline};
use crate::outcome::Refusal;
use crate::relay;
use crate::request::{self, Command, Parse, Request, REPLY_GRANTED};

/// Reading buffer for the request. Larger than the longest valid request,
/// so the parser always answers before the buffer fills.
const REQUEST_BUFFER_LEN: usize = 1024;
const _: () = assert!(REQUEST_BUFFER_LEN > request::MAX_REQUEST_LEN);
/// How long the 8-byte reply may take to be written.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the audit lines say about a connection, filled in as the exchange
/// goes.
#[derive(Debug, Default)]
pub struct Record {
    pub client: Option<SocketAddr>,
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
    pub bind: Option<SocketAddrV4>,
    /// BIND: the address the inbound call must come from.
    pub expect: Option<Ipv4Addr>,
}

impl Record {
    /// The decision line: who asked for what, and the answer.
    /// A BIND's line ends with the listening address and the expected peer.
    pub fn decision_line(&self, reply: Option<u8>, reason: &str, detail: Option<&str>) -> Line {
        let line = Line::new("decision")
            .opt("client", self.client.map(audit::addr))
            .opt_quoted("user", self.user.as_deref())
            .opt("cmd", self.command.map(Command::name))
            .opt("dst", self.dst.map(audit::addr))
            .opt_quoted("host", self.host.as_deref())
            .opt("rule", self.rule.as_deref())
            .opt_quoted("ident", self.ident.as_deref().map(str::as_bytes))
            .opt_quoted("ident_user", self.ident_user.as_deref())
            .opt("reply", reply.map(|c| format!("{c:02x}")))
            .field("reason", reason)
            .opt_quoted("detail", detail.map(str::as_bytes));
        match self.command {
            Some(Command::Bind) => line.opt("bind", self.bind).opt("expect", self.expect),
            _ => line,
        }
    }

    /// BIND's accept line: the inbound call (if any) and what came of it.
    pub fn accept_line(&self, peer: Option<SocketAddr>, reply: Option<u8>, reason: &str, detail: Option<&str>) -> Line {
        Line::new("accept")
            .opt("client", self.client.map(audit::addr))
            .opt("bind", self.bind)
            .opt("peer", peer.map(audit::addr))
            .opt("expect", self.expect)
            .opt("reply", reply.map(|c| format!("{c:02x}")))
            .field("reason", reason)
            .opt_quoted("detail", detail.map(str::as_bytes))
    }

    /// The end line: bytes each way, duration, and what ended it.
    pub fn end_line(&self, up: u64, down: u64, started: Instant, end: &str, detail: Option<&str>) -> Line {
        Line::new("end")
            .opt("client", self.client.map(audit::addr))
            .opt("cmd", self.command.map(Command::name))
            .opt("dst", self.dst.map(audit::addr))
            .field("up", up)
            .field("down", down)
            .field("secs", format!("{:.3}", started.elapsed().as_secs_f64()))
            .field("end", end)
            .opt_quoted("detail", detail.map(str::as_bytes))
    }
}

/// A granted request, ready for its (first) reply.
enum Granted {
    Connect {
        dest: TcpStream,
        /// What the client sent after its request, for the destination.
        pending: Vec<u8>,
    },
    Bind(Listening),
}

/// A granted BIND: the socket waiting for the application server's call.
struct Listening {
    listener: TcpListener,
    addr: SocketAddrV4,
    /// The addresses the call may come from.
    expect: Vec<Ipv4Addr>,
    /// What the client sent after its request: nothing, if it keeps to the
    /// protocol.
    pending: Vec<u8>,
}

/// Runs one SOCKS4 exchange on `client`, which reached us at `local` from
/// `peer`, and relays until both sides are done. Writes the audit lines to
/// `log`. The client socket is closed on return.
pub fn handle(client: TcpStream, peer: SocketAddr, local: SocketAddr, cfg: &Config, log: &Log) {
    let started = Instant::now();
    let peer = net::unmap(peer);
    let local = net::unmap(local);
    let mut rec = Record {
        client: Some(peer),
        ..Record::default()
    };
    if let Err(e) = client.set_nonblocking(true) {
        log.error(
            rec.decision_line(None, "client-error", Some(&format!("set non-blocking: {e}")))
                .as_str(),
        );
        return;
    }

    match exchange(&client, local, cfg, &mut rec) {
        Err(refusal) => {
            let detail = refusal.detail();
            if let Some(code) = refusal.reply() {
                let reply = request::reply(code, 0, Ipv4Addr::UNSPECIFIED);
                let _ = net::write_all(&client, &reply, Deadline::after(REPLY_TIMEOUT), "reply");
            }
            let line = rec.decision_line(refusal.reply(), refusal.reason(), detail.as_deref());
            log.write(Level::Warning, line.as_str());
            log.info(rec.end_line(0, 0, started, "refused", None).as_str());
        }
        Ok(Granted::Connect { dest, pending }) => {
            let (port, ip) = match dest.local_addr().map(net::unmap) {
                Ok(SocketAddr::V4(a)) => (a.port(), *a.ip()),
                _ => (0, Ipv4Addr::UNSPECIFIED),
            };
            if !grant(&client, request::reply(REPLY_GRANTED, port, ip), &rec, started, log) {
                return;
            }
            relay(client, dest, &pending, cfg, &rec, started, log);
        }
        Ok(Granted::Bind(listening)) => {
            let first = request::reply(REPLY_GRANTED, listening.addr.port(), *listening.addr.ip());
            if !grant(&client, first, &rec, started, log) {
                return;
            }
            if let Some(inbound) = answer_call(&client, listening, cfg, &rec, started, log) {
                relay(client, inbound, &[], cfg, &rec, started, log);
            }
        }
    }
}

/// BIND after the first reply: waits for the call, checks where it comes
/// from, sends the second reply and writes the accept line. Returns the
/// inbound stream to relay, or `None` with the end line written. On a
/// timeout or when the client gives up there is no second reply, as with
/// the classic server.
fn answer_call(
    client: &TcpStream,
    listening: Listening,
    cfg: &Config,
    rec: &Record,
    started: Instant,
    log: &Log,
) -> Option<TcpStream> {
    let Listening {
        listener,
        expect,
        pending,
        ..
    } = listening;
    let (inbound, from) = match bind::wait(listener, client, &pending, Deadline::after(cfg.connect_timeout)) {
        Wait::Called(inbound, from) => (inbound, from),
        other => {
            let detail = match &other {
                Wait::Error(e) => Some(e.as_str()),
                _ => None,
            };
            log.warning(rec.accept_line(None, None, other.reason(), detail).as_str());
            log.info(rec.end_line(0, 0, started, other.reason(), detail).as_str());
            return None;
        }
    };
    let code = bind::check(from, &expect);
    let (reason, detail, second) = match from {
        SocketAddr::V4(a) if code == REPLY_GRANTED => ("granted", None, request::reply(code, a.port(), *a.ip())),
        _ => (
            "peer-mismatch",
            Some(format!("expected {} got {}", list(&expect), from.ip())),
            request::reply(code, 0, Ipv4Addr::UNSPECIFIED),
        ),
    };
    if let Err(e) = net::write_all(client, &second, Deadline::after(REPLY_TIMEOUT), "reply") {
        let why = e.to_string();
        log.warning(
            rec.accept_line(Some(from), Some(code), "client-error", Some(&why))
                .as_str(),
        );
        log.info(rec.end_line(0, 0, started, "client-error", Some(&why)).as_str());
        return None;
    }
    let line = rec.accept_line(Some(from), Some(code), reason, detail.as_deref());
    if code != REPLY_GRANTED {
        // Both sockets close on return.
        log.warning(line.as_str());
        log.info(rec.end_line(0, 0, started, reason, detail.as_deref()).as_str());
        return None;
    }
    log.info(line.as_str());
    Some(inbound)
}

/// Sends the (first) granting reply and writes the decision line. Returns
/// false, with the end line written, if the client could not be told.
fn grant(client: &TcpStream, reply: [u8; 8], rec: &Record, started: Instant, log: &Log) -> bool {
    if let Err(e) = net::write_all(client, &reply, Deadline::after(REPLY_TIMEOUT), "reply") {
        let why = e.to_string();
        log.warning(
            rec.decision_line(Some(REPLY_GRANTED), "client-error", Some(&why))
                .as_str(),
        );
        log.info(rec.end_line(0, 0, started, "client-error", Some(&why)).as_str());
        return false;
    }
    log.info(rec.decision_line(Some(REPLY_GRANTED), "granted", None).as_str());
    true
}

/// Relays until both sides are done and writes the end line.
fn relay(client: TcpStream, other: TcpStream, pending: &[u8], cfg: &Config, rec: &Record, started: Instant, log: &Log) {
    let summary = relay::run(client, other, pending, cfg.idle_timeout);
    let line = rec.end_line(
        summary.up,
        summary.down,
        started,
        summary.end.keyword(),
        summary.end.detail(),
    );
    log.info(line.as_str());
}

/// `a,b,c` for the audit detail.
fn list(ips: &[Ipv4Addr]) -> String {
    ips.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(",")
}

/// The exchange up to the reply: the request, the access decision and the
/// connection to the destination.
fn exchange(client: &TcpStream, _local: SocketAddr, cfg: &Config, rec: &mut Record) -> Result<Granted, Refusal> {
    let (req, pending) = read_request(client, cfg.request_timeout)?;
    rec.command = Some(req.command);
    rec.user = Some(req.userid.clone());
    rec.host = req.hostname.clone();

    let candidates = destinations(&req, cfg)?;
    if let [only] = candidates.as_slice() {
        rec.dst = Some(*only);
    }

    let client_ip = rec.client.map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    decide(client_ip, rec)?;

    match req.command {
        Command::Connect => {
            let (dest, addr) = connect(&candidates, cfg.connect_timeout)?;
            rec.dst = Some(addr);
            Ok(Granted::Connect { dest, pending })
        }
        Command::Bind => {
            let expect = bind_peers(&candidates)?;
            rec.expect = Some(expect[0]);
            let ip = bind::listen_addr(cfg.bind_address, expect[0], req.port)?;
            let (listener, addr) = bind::listen(ip, cfg.bind_ports.clone())?;
            rec.bind = Some(addr);
            Ok(Granted::Bind(Listening {
                listener,
                addr,
                expect,
                pending,
            }))
        }
    }
}

/// Reads until the parser has a whole request, within `timeout`. Returns
/// the request and any bytes that followed it.
fn read_request(client: &TcpStream, timeout: Duration) -> Result<(Request, Vec<u8>), Refusal> {
    let deadline = Deadline::after(timeout);
    let mut buf = [0u8; REQUEST_BUFFER_LEN];
    let mut len = 0;
    loop {
        match request::parse(&buf[..len]) {
            Ok(Parse::Complete(req, used)) => return Ok((req, buf[used..len].to_vec())),
            Ok(Parse::Incomplete) => {}
            Err(invalid) => return Err(invalid.into()),
        }
        let n = net::read_some(client, &mut buf[len..], deadline, "request").map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => Refusal::RequestTimeout,
            _ => Refusal::ClientError(e.to_string()),
        })?;
        if n == 0 {
            return Err(Refusal::ClientClosed);
        }
        len += n;
    }
}

/// The addresses the request names: DSTIP, or for SOCKS4a every address
/// the hostname resolves to.
fn destinations(req: &Request, cfg: &Config) -> Result<Vec<SocketAddr>, Refusal> {
    let Some(name) = &req.hostname else {
        return Ok(vec![SocketAddr::new(req.ip.into(), req.port)]);
    };
    if !cfg.socks4a {
        return Err(Refusal::Socks4aDisabled);
    }
    let name = std::str::from_utf8(name).map_err(|_| Refusal::ResolveFailed("hostname is not valid UTF-8".into()))?;
    net::resolve(name, req.port, Deadline::after(cfg.connect_timeout))
        .map_err(|e| Refusal::ResolveFailed(format!("{name}: {e}")))
}

/// The access decision. Until a rules file is read, clients from loopback
/// only.
fn decide(client_ip: IpAddr, rec: &mut Record) -> Result<(), Refusal> {
    rec.rule = Some("builtin".into());
    rec.ident = Some("off".into());
    if client_ip.is_loopback() {
        Ok(())
    } else {
        Err(Refusal::Denied("built-in policy: loopback clients only".into()))
    }
}

/// The addresses a BIND's inbound call may come from: the IPv4 ones among
/// the request's destinations (the reply has room for IPv4 only). DSTIP
/// 0.0.0.0 names no peer to check the call against.
fn bind_peers(candidates: &[SocketAddr]) -> Result<Vec<Ipv4Addr>, Refusal> {
    let v4: Vec<Ipv4Addr> = candidates
        .iter()
        .filter_map(|a| match a.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .collect();
    if v4.iter().any(|ip| ip.is_unspecified()) {
        return Err(Refusal::BindNoPeer);
    }
    if v4.is_empty() {
        return Err(Refusal::BindFailed("no IPv4 address for the expected peer".into()));
    }
    Ok(v4)
}

/// Tries each address in turn until one connects, all within one
/// deadline.
fn connect(candidates: &[SocketAddr], timeout: Duration) -> Result<(TcpStream, SocketAddr), Refusal> {
    let deadline = Deadline::after(timeout);
    let mut last = Refusal::ConnectFailed("no address to connect to".into());
    for &addr in candidates {
        match net::connect(addr, None, deadline) {
            Ok(s) => return Ok((s, addr)),
            Err(e) => {
                last = match e.kind() {
                    io::ErrorKind::TimedOut => return Err(Refusal::ConnectTimeout),
                    io::ErrorKind::ConnectionRefused => Refusal::ConnectRefused(format!("{}: {e}", audit::addr(addr))),
                    _ => Refusal::ConnectFailed(format!("{}: {e}", audit::addr(addr))),
                }
            }
        }
    }
    Err(last)
}
