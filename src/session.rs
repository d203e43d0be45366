//! One connection, top to bottom: request → rules → ident → connect →
//! decision line → reply → relay → end line. Every path writes a decision
//! line and an end line, and nothing is relayed unless its decision line
//! was written: a logger that takes no line within the log timeout turns
//! a grant into a refusal. The connection comes from
//! [`crate::intake::arrive`], which has already said who the client is.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::audit::{self, Level, Line, Log};
use crate::bind::{self, Inbound};
use crate::config::Config;
use crate::ident::{self, Answer, Mode};
use crate::intake::Arrival;
use crate::net::{self, ConnectError, Deadline};
use crate::outcome::Refusal;
use crate::relay;
use crate::request::{self, Command, Parse, Request, REPLY_GRANTED, REPLY_REJECTED};
use crate::route::{self, Route, Routes};
use crate::rules::{self, Decision, Facts, Hook, Loaded, Rules, Spawned, Subst};

/// Reading buffer for the request. Larger than the longest valid request,
/// so the parser always answers before the buffer fills.
const REQUEST_BUFFER_LEN: usize = 1024;
const _: () = assert!(REQUEST_BUFFER_LEN > request::MAX_REQUEST_LEN);
// What followed a PROXY header always fits.
const _: () = assert!(REQUEST_BUFFER_LEN >= crate::proxy::MAX_HEADER_LEN);
/// After a refusal, how long and how much client input is drained before
/// closing.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// How long, after the client is closed, the process waits for the
/// rules' commands to start (name lookups for `%A` and `%Z` come first).
const COMMAND_START_LIMIT: Duration = Duration::from_secs(5);
/// How long the 8-byte reply may take to be written.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the files say, read with the privileges of the start and before
/// confinement: the rules and the routes. Either one in error means no
/// service.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Loaded,
    pub routes: route::Loaded,
}

/// What the audit lines say about a connection, filled in as the exchange
/// goes.
#[derive(Debug, Default)]
pub struct Record {
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
}

impl Record {
    /// The decision line: who asked for what, and the answer.
    pub fn decision_line(&self, reply: Option<u8>, reason: &str, detail: Option<&str>) -> Line {
        Line::new("decision")
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
            .opt_quoted("detail", detail.map(str::as_bytes))
            .opt("bind", self.bind.map(audit::addr))
            .opt("expect", self.expect.as_deref())
            .opt("src", self.src.map(audit::addr))
            .opt("via", self.via.map(audit::addr))
    }

    /// BIND's second line: who called back, and the second reply.
    pub fn accept_line(&self, peer: Option<SocketAddr>, reply: Option<u8>, reason: &str, detail: Option<&str>) -> Line {
        Line::new("accept")
            .opt("client", self.client.map(audit::addr))
            .opt("bind", self.bind.map(audit::addr))
            .opt("expect", self.expect.as_deref())
            .opt("peer", peer.map(audit::addr))
            .opt("reply", reply.map(|c| format!("{c:02x}")))
            .field("reason", reason)
            .opt_quoted("detail", detail.map(str::as_bytes))
            .opt("via", self.via.map(audit::addr))
    }

    /// The end line: bytes each way, duration, what ended it, and how the
    /// relay moved bytes (`relay`, `None` when there was no relay).
    pub fn end_line(
        &self,
        up: u64,
        down: u64,
        started: Instant,
        end: &str,
        relay: Option<&str>,
        detail: Option<&str>,
    ) -> Line {
        Line::new("end")
            .opt("client", self.client.map(audit::addr))
            .opt("cmd", self.command.map(Command::name))
            .opt("dst", self.dst.map(audit::addr))
            .field("up", up)
            .field("down", down)
            .field("secs", format!("{:.3}", started.elapsed().as_secs_f64()))
            .field("end", end)
            .opt("relay", relay)
            .opt_quoted("detail", detail.map(str::as_bytes))
            .opt("src", self.src.map(audit::addr))
            .opt("via", self.via.map(audit::addr))
    }
}

/// A granted request, ready for its reply.
enum Granted {
    /// Connected to the destination.
    Connect {
        dest: TcpStream,
        /// The relay, with what the client sent after its request.
        relay: relay::Relay,
    },
    /// Listening for the application server's call.
    Bind {
        listener: TcpListener,
        /// The addresses the call may come from.
        expect: Vec<IpAddr>,
        relay: relay::Relay,
    },
}

/// Runs one SOCKS4 exchange on the connection that `arrival` describes,
/// and relays until both sides are done. Writes the audit lines to `log`.
/// The client socket is closed on return.
pub fn handle(arrival: Arrival, cfg: &Config, policy: &Policy, log: &Log) {
    let mut commands = Vec::new();
    serve(arrival, cfg, policy, log, &mut commands);
    // The client is closed by now. The rules' commands never delay the
    // exchange, but the process must not exit before they have started.
    for c in commands {
        c.started(COMMAND_START_LIMIT);
    }
}

/// [`handle`] up to the end line; `client` is closed when it returns.
fn serve(arrival: Arrival, cfg: &Config, policy: &Policy, log: &Log, commands: &mut Vec<Spawned>) {
    let started = arrival.started;
    let mut rec = Record {
        client: Some(arrival.client),
        via: arrival.via,
        ..Record::default()
    };
    let result = exchange(&arrival, cfg, policy, &mut rec, commands);
    let client = arrival.stream;
    match result {
        Err(refusal) => refuse(&client, &refusal, &rec, started, log),
        Ok(Granted::Connect { dest, relay }) => {
            if let Err(e) = log_grant(&rec, log) {
                return refuse(&client, &e, &rec, started, log);
            }
            if let Err(e) = send_reply(&client, REPLY_GRANTED, dest.local_addr().ok()) {
                return client_lost(&rec, started, e, log);
            }
            run_relay(relay, client, dest, cfg, &rec, started, log);
        }
        Ok(Granted::Bind {
            listener,
            expect,
            relay,
        }) => {
            if let Err(e) = log_grant(&rec, log) {
                return refuse(&client, &e, &rec, started, log);
            }
            answer_call(client, listener, &expect, relay, cfg, &mut rec, started, log)
        }
    }
}

/// Refuses: the reply code (if the refusal has one), a bounded drain, then
/// the decision and end lines. The client hears first; the log may be
/// slow.
fn refuse(client: &TcpStream, refusal: &Refusal, rec: &Record, started: Instant, log: &Log) {
    if let Some(code) = refusal.reply() {
        if send_reply(client, code, None).is_ok() {
            linger(client);
        }
    }
    let line = rec.decision_line(refusal.reply(), refusal.reason(), refusal.detail().as_deref());
    log.warning(line.as_str());
    log.info(rec.end_line(0, 0, started, "refused", None, None).as_str());
}

/// Writes the decision line of a grant, before the client hears of it.
/// A line the logger does not take is a refusal.
fn log_grant(rec: &Record, log: &Log) -> Result<(), Refusal> {
    let line = rec.decision_line(Some(REPLY_GRANTED), "granted", None);
    log.write(Level::Info, line.as_str())
        .map_err(|e| Refusal::LogFailed(format!("decision line: {e}")))
}

/// BIND after the decision: the first reply, the wait for the call, the
/// peer check and the second reply, then the relay.
#[allow(clippy::too_many_arguments)]
fn answer_call(
    client: TcpStream,
    listener: TcpListener,
    expect: &[IpAddr],
    relay: relay::Relay,
    cfg: &Config,
    rec: &mut Record,
    started: Instant,
    log: &Log,
) {
    if let Err(e) = send_reply(&client, REPLY_GRANTED, rec.bind) {
        return client_lost(rec, started, e, log);
    }
    let waited = bind::wait(&listener, &client, Deadline::after(cfg.connect_timeout));
    // Exactly one inbound connection: stop listening now.
    drop(listener);
    match waited {
        Ok(Inbound::Call(caller, peer)) if expect.contains(&peer.ip()) => {
            net::keepalive(&caller);
            // As for the decision line: no relay without its accept line.
            let line = rec.accept_line(Some(peer), Some(REPLY_GRANTED), "granted", None);
            if let Err(e) = log.write(Level::Info, line.as_str()) {
                if send_reply(&client, REPLY_REJECTED, None).is_ok() {
                    linger(&client);
                }
                let why = format!("accept line: {e}");
                let line = rec.accept_line(Some(peer), Some(REPLY_REJECTED), "log-failed", Some(&why));
                log.warning(line.as_str());
                log.info(rec.end_line(0, 0, started, "refused", None, None).as_str());
                return;
            }
            if let Err(e) = send_reply(&client, REPLY_GRANTED, Some(peer)) {
                return client_lost(rec, started, e, log);
            }
            run_relay(relay, client, caller, cfg, rec, started, log);
        }
        Ok(Inbound::Call(_caller, peer)) => {
            if send_reply(&client, REPLY_REJECTED, None).is_ok() {
                linger(&client);
            }
            let why = format!("expected {}, got {}", rec.expect.as_deref().unwrap_or("-"), peer.ip());
            let line = rec.accept_line(Some(peer), Some(REPLY_REJECTED), "peer-mismatch", Some(&why));
            log.warning(line.as_str());
            log.info(rec.end_line(0, 0, started, "refused", None, None).as_str());
        }
        Ok(Inbound::Timeout) => {
            // As the classic server: no second reply, just close.
            log.warning(rec.accept_line(None, None, "timeout", None).as_str());
            log.info(rec.end_line(0, 0, started, "bind-timeout", None, None).as_str());
        }
        Ok(Inbound::ClientGone(why)) => {
            log.warning(rec.accept_line(None, None, "client-gone", Some(&why)).as_str());
            log.info(rec.end_line(0, 0, started, "client-gone", None, Some(&why)).as_str());
        }
        Err(e) => {
            let why = e.to_string();
            log.error(rec.accept_line(None, None, "bind-error", Some(&why)).as_str());
            log.info(rec.end_line(0, 0, started, "bind-error", None, Some(&why)).as_str());
        }
    }
}

/// Sends the 8-byte reply, carrying `addr` when it is IPv4.
fn send_reply(client: &TcpStream, code: u8, addr: Option<SocketAddr>) -> io::Result<()> {
    let (port, ip) = match addr.map(net::unmap) {
        Some(SocketAddr::V4(a)) => (a.port(), *a.ip()),
        _ => (0, Ipv4Addr::UNSPECIFIED),
    };
    net::write_all(
        client,
        &request::reply(code, port, ip),
        Deadline::after(REPLY_TIMEOUT),
        "reply",
    )
}

/// Lets a refusal reach the client. Closing a socket that still holds
/// unread input sends a reset, and a reset can make the client's kernel
/// drop a reply it has not read yet. So send FIN, then read and discard
/// what the client still sends, for a bounded time and size.
fn linger(client: &TcpStream) {
    let _ = client.shutdown(std::net::Shutdown::Write);
    let deadline = Deadline::after(LINGER_TIME);
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_MAX_BYTES {
        match net::read_some(client, &mut buf, deadline, "linger") {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// The client went away before a granted reply could be sent; the
/// decision line is written already.
fn client_lost(rec: &Record, started: Instant, e: io::Error, log: &Log) {
    let why = format!("reply: {e}");
    log.info(rec.end_line(0, 0, started, "client-error", None, Some(&why)).as_str());
}

/// Relays until both sides are done and writes the end line. When the
/// logger takes no line within the log timeout, the line is given up and
/// the process goes on to exit.
fn run_relay(
    relay: relay::Relay,
    client: TcpStream,
    other: TcpStream,
    cfg: &Config,
    rec: &Record,
    started: Instant,
    log: &Log,
) {
    let summary = relay.run(client, other, cfg.idle_timeout);
    let line = rec.end_line(
        summary.up,
        summary.down,
        started,
        summary.end.keyword(),
        Some(summary.via.keyword()),
        summary.end.detail(),
    );
    log.info(line.as_str());
}

/// The exchange up to the reply: the request, the access decision and the
/// connection to the destination.
fn exchange(
    arrival: &Arrival,
    cfg: &Config,
    policy: &Policy,
    rec: &mut Record,
    commands: &mut Vec<Spawned>,
) -> Result<Granted, Refusal> {
    let (req, pending) = read_request(&arrival.stream, &arrival.early, arrival.deadline)?;
    rec.command = Some(req.command);
    rec.user = Some(req.userid.clone());
    rec.host = req.hostname.clone();

    let candidates = destinations(&req, cfg)?;
    if let [only] = candidates.as_slice() {
        rec.dst = Some(*only);
    }

    let rules = policy.rules.as_ref().map_err(|e| config_error(e))?;
    let routes = policy.routes.as_ref().map_err(|e| config_error(e))?;
    let peer = rec
        .client
        .unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
    let (decision, candidates) = decide(rules, &req, peer.ip(), &candidates);
    rec.rule = Some(decision.label());
    if !decision.permit() {
        rec.ident = Some("off".into());
        start_commands(commands, rules, &decision, None, rec, &req);
        return Err(Refusal::Denied(match decision.rule {
            Some(r) => r.text.clone(),
            None => "no rule matches".into(),
        }));
    }
    if let [only] = candidates.as_slice() {
        rec.dst = Some(*only);
    }

    // Ident only after a permit, before connecting.
    let mode = decision.ident(cfg.ident);
    let verdict = verify_ident(mode, arrival, &req.userid, cfg, rec);
    if let Ident::FdLimit(why) = verdict {
        return Err(Refusal::FdLimit(why));
    }
    let hook = match verdict {
        Ident::Unavailable => rules.no_identd.as_ref(),
        Ident::Mismatch => rules.bad_id.as_ref(),
        Ident::Ok | Ident::FdLimit(_) => None,
    };
    start_commands(commands, rules, &decision, hook, rec, &req);
    match verdict {
        Ident::Unavailable if mode == Mode::Required => {
            return Err(Refusal::IdentUnavailable(rec.ident.clone().unwrap_or_default()))
        }
        Ident::Mismatch => return Err(Refusal::IdentMismatch),
        _ => {}
    }

    match req.command {
        Command::Connect => {
            let sources = |dst: IpAddr| source_for(dst, req.hostname.as_deref(), routes, cfg, arrival.own.ip());
            let (dest, addr) = connect(&candidates, sources, cfg.connect_timeout, rec)?;
            rec.dst = Some(addr);
            net::keepalive(&dest);
            let relay = prepare_relay(&pending)?;
            Ok(Granted::Connect { dest, relay })
        }
        Command::Bind => {
            let (listener, expect) = listen_for_call(&candidates, req.hostname.as_deref(), routes, cfg)?;
            let shown: Vec<String> = expect.iter().map(IpAddr::to_string).collect();
            rec.expect = Some(shown.join(","));
            rec.bind = listener.local_addr().ok().map(net::unmap);
            rec.src = rec.bind;
            let relay = prepare_relay(&pending)?;
            Ok(Granted::Bind {
                listener,
                expect,
                relay,
            })
        }
    }
}

/// The relay's pipes and buffers, had before the grant.
fn prepare_relay(pending: &[u8]) -> Result<relay::Relay, Refusal> {
    relay::Relay::prepare(pending).map_err(|e| Refusal::NoMemory(format!("relay: {e}")))
}

/// A rules or route file that cannot be used, as the refusal names it.
fn config_error(errors: &[rules::Error]) -> Refusal {
    let first = errors.first().map(ToString::to_string).unwrap_or_default();
    Refusal::ConfigError(match errors.len() {
        0 | 1 => first,
        n => format!("{first} (and {} more)", n - 1),
    })
}

/// The source for a CONNECT to `dst` (reached by SOCKS4a `name`, if any)
/// on a host the client reached at `own`: the first route line's
/// interface address, else `--outgoing-address`; `None` lets the kernel
/// choose.
fn source_for(dst: IpAddr, name: Option<&[u8]>, routes: &Routes, cfg: &Config, own: IpAddr) -> Option<IpAddr> {
    routes
        .find(dst, name)
        .and_then(Route::source)
        .or_else(|| cfg.outgoing.source(dst, own))
}

/// BIND: opens the listening socket for the application server's call,
/// on the route file's address for that server, else `--bind-address`,
/// else the address this host's routing table would use to reach it.
/// The reply format only carries IPv4, so only IPv4 peers can be expected.
fn listen_for_call(
    candidates: &[SocketAddr],
    name: Option<&[u8]>,
    routes: &Routes,
    cfg: &Config,
) -> Result<(TcpListener, Vec<IpAddr>), Refusal> {
    let expect: Vec<IpAddr> = candidates.iter().map(|a| a.ip()).filter(IpAddr::is_ipv4).collect();
    let Some(&first) = expect.first() else {
        return Err(Refusal::BindFailed("the application server has no IPv4 address".into()));
    };
    if first.is_unspecified() {
        return Err(Refusal::BindNoPeer);
    }
    let ip = match routes.find(first, name).and_then(Route::source).or(cfg.bind_address) {
        Some(ip) => ip,
        None => bind::route_source(first).map_err(|e| Refusal::BindFailed(format!("route to {first}: {e}")))?,
    };
    let listener = bind::listen(ip, cfg.bind_ports).map_err(|e| {
        if net::is_fd_limit(&e) {
            Refusal::FdLimit(format!("BIND socket: {e}{}", net::nofile_note()))
        } else {
            Refusal::BindFailed(format!("listen on {ip}: {e}"))
        }
    })?;
    Ok((listener, expect))
}

/// Reads until the parser has a whole request, within `timeout`. Returns
/// the request and any bytes that followed it.
fn read_request(client: &TcpStream, early: &[u8], deadline: Deadline) -> Result<(Request, Vec<u8>), Refusal> {
    let mut buf = [0u8; REQUEST_BUFFER_LEN];
    buf[..early.len()].copy_from_slice(early);
    let mut len = early.len();
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

/// Decides for each candidate destination (one, or every address of a
/// SOCKS4a name). Returns the deciding decision (the first that permits,
/// else the first) and the candidates that are permitted.
fn decide<'r>(
    rules: &'r Rules,
    req: &Request,
    src: IpAddr,
    candidates: &[SocketAddr],
) -> (Decision<'r>, Vec<SocketAddr>) {
    let mut first_permit = None;
    let mut first = None;
    let mut permitted = Vec::new();
    for &c in candidates {
        let facts = Facts {
            user: &req.userid,
            src,
            dst: c.ip(),
            port: c.port(),
        };
        let d = rules::decide(rules, &facts);
        if d.permit() {
            permitted.push(c);
            first_permit.get_or_insert(d);
        }
        first.get_or_insert(d);
    }
    let d = first_permit.or(first).unwrap_or(Decision { rules, rule: None });
    (d, permitted)
}

/// What the client host's identd said, as far as the decision goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident {
    /// It confirmed the claimed user-id, or was not asked.
    Ok,
    /// No USERID answer: refused, timed out, ERROR, or garbled.
    Unavailable,
    /// A USERID answer naming someone else.
    Mismatch,
    /// No query could be made: out of descriptors.
    FdLimit(String),
}

/// Asks the client's identd (unless `mode` is off) and records the
/// outcome in `rec`.
fn verify_ident(mode: Mode, arrival: &Arrival, claimed: &[u8], cfg: &Config, rec: &mut Record) -> Ident {
    if mode == Mode::Off {
        rec.ident = Some("off".into());
        return Ident::Ok;
    }
    let deadline = Deadline::after(cfg.ident_timeout);
    // The query names the port the client connected to and comes from
    // that address when this host has it (through a balancer on this
    // host, say); else from this host's end of the connection.
    let (local, own) = (arrival.local, arrival.own);
    let sources: &[IpAddr] = if local.ip() == own.ip() {
        &[own.ip()]
    } else {
        &[local.ip(), own.ip()]
    };
    match ident::query(sources, arrival.client, local.port(), cfg.ident_port, deadline) {
        Answer::UserId(user) => {
            let verdict = if user == claimed {
                rec.ident = Some("ok".into());
                Ident::Ok
            } else {
                rec.ident = Some(format!("mismatch: {}", String::from_utf8_lossy(&user)));
                Ident::Mismatch
            };
            rec.ident_user = Some(user);
            verdict
        }
        Answer::Error(e) => {
            rec.ident = Some(format!("error: {e}"));
            Ident::Unavailable
        }
        Answer::Unreachable(why) => {
            rec.ident = Some(format!("unreachable: {why}"));
            Ident::Unavailable
        }
        Answer::FdLimit(why) => {
            rec.ident = Some("not asked".into());
            Ident::FdLimit(why)
        }
    }
}

/// Starts the deciding line's command and `hook`'s, if any, detached.
fn start_commands(
    commands: &mut Vec<Spawned>,
    rules: &Rules,
    decision: &Decision<'_>,
    hook: Option<&Hook>,
    rec: &Record,
    req: &Request,
) {
    let dst = rec.dst.unwrap_or_else(|| SocketAddr::new(req.ip.into(), req.port));
    let subst = || Subst {
        client: rec.client.map(|a| a.ip()),
        client_name: None,
        command: req.command.name(),
        pid: std::process::id(),
        dst: Some(dst.ip()),
        dst_name: req.hostname.as_ref().map(|h| String::from_utf8_lossy(h).into_owned()),
        port: dst.port(),
        service: rules.services.name(dst.port()).map(String::from),
        ident_user: rec.ident_user.clone(),
        user: req.userid.clone(),
    };
    let templates = decision.command().into_iter().chain(hook.and_then(Hook::command));
    for t in templates {
        commands.push(rules::spawn(t.to_vec(), subst()));
    }
}

/// Tries each address in turn until one connects, all within one
/// deadline, each from the source `source` gives for it. Records the
/// source in `rec`: the address and port connected from, or the chosen
/// address with port 0 after a failure.
fn connect(
    candidates: &[SocketAddr],
    source: impl Fn(IpAddr) -> Option<IpAddr>,
    timeout: Duration,
    rec: &mut Record,
) -> Result<(TcpStream, SocketAddr), Refusal> {
    let deadline = Deadline::after(timeout);
    let mut last = Refusal::ConnectFailed("no address to connect to".into());
    for &addr in candidates {
        let from = source(addr.ip()).map(|ip| SocketAddr::new(ip, 0));
        rec.src = from;
        let e = match net::connect_from(addr, from, deadline) {
            Ok(s) => {
                rec.src = s.local_addr().ok().map(net::unmap).or(from);
                return Ok((s, addr));
            }
            Err(ConnectError::Bind(e)) => {
                let src = from.map(|f| f.ip().to_string()).unwrap_or_default();
                last = Refusal::SourceFailed(format!("{src} for {}: {e}", audit::addr(addr)));
                continue;
            }
            Err(ConnectError::Socket(e) | ConnectError::Connect(e)) => e,
        };
        last = match e.kind() {
            io::ErrorKind::TimedOut => return Err(Refusal::ConnectTimeout),
            _ if net::is_fd_limit(&e) => {
                return Err(Refusal::FdLimit(format!(
                    "socket for {}: {e}{}",
                    audit::addr(addr),
                    net::nofile_note()
                )))
            }
            io::ErrorKind::ConnectionRefused => Refusal::ConnectRefused(format!("{}: {e}", audit::addr(addr))),
            _ => Refusal::ConnectFailed(format!("{}: {e}", audit::addr(addr))),
        }
    }
    Err(last)
}
