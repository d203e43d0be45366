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
use crate::dest::{self, Unusable};
use crate::ident::{self, Answer, Mode};
use crate::intake::Arrival;
use crate::net::{self, ConnectError, Deadline};
use crate::outcome::Refusal;
use crate::policy::Policy;
use crate::relay;
use crate::request::{self, Command, Foreign, Invalid, Parse, Request, REPLY_GRANTED, REPLY_REJECTED};
use crate::route::{Route, Routes};
use crate::rules::command::{Commands, Origin};
use crate::rules::{self, Decision, Facts, Hook, Outlook, Partial, Rules, Subst};

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
/// How long the 8-byte reply may take to be written.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// BIND: how many callers that are not the application server get a line
/// each; the rest are turned away unlogged.
const MAX_STRANGER_LINES: u32 = 10;

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
/// Returns once the rules' commands have ended too, or have been killed
/// at `--command-timeout`; the client socket is closed before that.
pub fn handle(arrival: Arrival, cfg: &Config, policy: Policy, log: &Log) {
    // The commands never delay the exchange, but they count as part of
    // this handler: under --listen it holds its --max-children slot, and
    // under a socket unit its instance, until they are done.
    std::thread::scope(|scope| {
        let commands = Commands::new(scope, cfg.command_timeout, log);
        serve(arrival, cfg, policy, log, &commands);
    });
}

/// [`handle`] up to the end line; `client` is closed when it returns.
fn serve(arrival: Arrival, cfg: &Config, policy: Policy, log: &Log, commands: &Commands<'_, '_>) {
    let started = arrival.started;
    let mut rec = Record {
        client: Some(arrival.client),
        via: arrival.via,
        ..Record::default()
    };
    let result = exchange(&arrival, cfg, &policy, &mut rec, commands);
    release(policy);
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

/// Gives back what the policy holds once the request is decided, for the
/// length of the relay: a compiled rules file's copy, private to this
/// process and megabytes for a large file. The rest is left for the exit
/// to free: freeing it would write to pages that a `--listen` handler
/// shares with its parent.
fn release(mut policy: Policy) {
    if let Ok(rules) = &mut policy.rules {
        drop(rules.frozen.take());
    }
    std::mem::forget(policy);
}

/// Refuses: the reply code (if the refusal has one), a bounded drain, then
/// the decision and end lines. The client hears first; the log may be
/// slow.
fn refuse(client: &TcpStream, refusal: &Refusal, rec: &Record, started: Instant, log: &Log) {
    let answer = match refusal {
        Refusal::BadVersion(_, foreign) => foreign.map(Foreign::answer),
        _ => None,
    };
    let sent = match (refusal.reply(), answer) {
        (Some(code), _) => send_reply(client, code, None).is_ok(),
        (None, Some(answer)) => net::write_all(client, answer, Deadline::after(REPLY_TIMEOUT), "answer").is_ok(),
        (None, None) => false,
    };
    if sent {
        linger(client);
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

/// BIND after the decision: the first reply, the wait for the
/// application server's call (other callers turned away), the second
/// reply, then the relay.
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
    // Anyone who can reach the port may call; those who are not the
    // application server are turned away.
    let (mut strangers, seen) = (0u32, &*rec);
    let deadline = Deadline::after(cfg.connect_timeout);
    let waited = bind::wait(&listener, &client, deadline, expect, |peer| {
        strangers = strangers.saturating_add(1);
        log_stranger(seen, peer, strangers, log);
    });
    // Exactly one inbound connection: stop listening now.
    drop(listener);
    match waited {
        Ok(Inbound::Call(caller, peer)) => {
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

/// The accept line of the `n`th caller of a BIND that was not the
/// application server; only the first [`MAX_STRANGER_LINES`] get one.
fn log_stranger(rec: &Record, peer: SocketAddr, n: u32, log: &Log) {
    if n > MAX_STRANGER_LINES {
        return;
    }
    let last = if n == MAX_STRANGER_LINES {
        "; later ones not logged"
    } else {
        ""
    };
    let expected = rec.expect.as_deref().unwrap_or("-");
    let why = format!("expected {expected}, got {}; turned away{last}", peer.ip());
    log.warning(rec.accept_line(Some(peer), None, "peer-mismatch", Some(&why)).as_str());
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
///
/// Each address of the destination gets its own decision: for a SOCKS4a
/// name with several addresses, the line that permits an address is the
/// one whose ident mode, command and `rule=` apply to a connection to that
/// address, and addresses are tried in the resolver's order, those denied
/// skipped. The command of the line the request ends with runs (the
/// line that permitted the address connected to, or that refused the
/// request).
fn exchange(
    arrival: &Arrival,
    cfg: &Config,
    policy: &Policy,
    rec: &mut Record,
    commands: &Commands<'_, '_>,
) -> Result<Granted, Refusal> {
    let src = arrival.client.ip();
    // A client whose requests the rules deny whatever they ask, and for
    // whom no command would run, is refused before its request is read.
    if let Ok(rules) = &policy.rules {
        let known = Partial {
            src,
            user: None,
            port: None,
        };
        if let Outlook::Denied(d) = rules::outlook(rules, &known) {
            return Err(denied(&d, rec));
        }
    }
    let (req, pending) = read_request(&arrival.stream, &arrival.early, arrival.deadline)?;
    rec.command = Some(req.command);
    rec.user = Some(req.userid.clone());
    rec.host = req.hostname.clone();
    if req.hostname.is_none() {
        rec.dst = Some(SocketAddr::new(req.ip.into(), req.port));
    }

    let rules = policy.rules.as_ref().map_err(|e| config_error(e))?;
    let routes = policy.routes.as_ref().map_err(|e| config_error(e))?;
    if req.hostname.is_some() {
        if !cfg.socks4a {
            return Err(Refusal::Socks4aDisabled);
        }
        // No name is looked up for a request no line could permit.
        let known = Partial {
            src,
            user: Some(&req.userid),
            port: Some(req.port),
        };
        if let Outlook::Denied(d) = rules::outlook(rules, &known) {
            return Err(denied(&d, rec));
        }
    }
    let candidates = destinations(&req, cfg)?;
    let decisions: Vec<(SocketAddr, Decision)> = candidates
        .iter()
        .map(|&dst| {
            let facts = Facts {
                user: &req.userid,
                src,
                dst: dest::judged(dst.ip()),
                port: dst.port(),
            };
            (dst, rules::decide(rules, &facts))
        })
        .collect();
    let mut ident = IdentCheck::default();
    let ended = match req.command {
        Command::Connect => connect_permitted(&decisions, arrival, cfg, routes, &req, rec, &mut ident),
        Command::Bind => bind_permitted(&decisions, arrival, cfg, routes, &req, rec, &mut ident),
    };
    let (decision, result) = match ended {
        Ended::Denied => {
            let (dst, d) = decisions[0];
            rec.dst = Some(dst);
            (d, Err(denied(&d, rec)))
        }
        Ended::With(d, result) => (d, result),
    };
    let hook = match ident.asked {
        Some(Ident::Unavailable) => rules.no_identd.as_ref(),
        Some(Ident::Mismatch) => rules.bad_id.as_ref(),
        _ => None,
    };
    start_commands(commands, rules, &decision, hook, rec, &req);
    let granted = result?;
    let relay = prepare_relay(&pending)?;
    Ok(match granted {
        Reached::Connect(dest) => Granted::Connect { dest, relay },
        Reached::Bind(listener, expect) => Granted::Bind {
            listener,
            expect,
            relay,
        },
    })
}

/// How the walk over a request's addresses ended.
enum Ended<'r> {
    /// No address is permitted: the first address's decision refuses.
    Denied,
    /// The line of the address the request ends with, and the outcome.
    With(Decision<'r>, Result<Reached, Refusal>),
}

/// A destination reached, before the relay is prepared.
enum Reached {
    Connect(TcpStream),
    /// BIND's listening socket and the addresses the call may come from.
    Bind(TcpListener, Vec<IpAddr>),
}

/// The refusal of decision `d`, recorded in `rec`.
fn denied(d: &Decision<'_>, rec: &mut Record) -> Refusal {
    rec.rule = Some(d.label());
    rec.ident = Some("off".into());
    Refusal::Denied(match d.rule {
        Some(r) => r.text.clone(),
        None => "no rule matches".into(),
    })
}

/// CONNECT: each permitted address in turn, with its own line's ident
/// mode, until one connects; all within one `--connect-timeout`.
fn connect_permitted<'r>(
    decisions: &[(SocketAddr, Decision<'r>)],
    arrival: &Arrival,
    cfg: &Config,
    routes: &Routes,
    req: &Request,
    rec: &mut Record,
    ident: &mut IdentCheck,
) -> Ended<'r> {
    let deadline = Deadline::after(cfg.connect_timeout);
    let mut ended = Ended::Denied;
    for &(dst, d) in decisions.iter().filter(|(_, d)| d.permit()) {
        rec.dst = Some(dst);
        rec.rule = Some(d.label());
        rec.src = None;
        let result = ident
            .verify(d.ident(cfg.ident), arrival, &req.userid, cfg, rec)
            .and_then(|()| {
                let from = source_for(dst.ip(), req.hostname.as_deref(), routes, cfg, arrival.own.ip());
                connect(dst, from, deadline, rec)
            });
        let last = matches!(
            result,
            Ok(_) | Err(Refusal::ConnectTimeout | Refusal::FdLimit(_) | Refusal::IdentMismatch)
        );
        ended = Ended::With(d, result.map(Reached::Connect));
        if last {
            break;
        }
    }
    ended
}

/// BIND: the first permitted address's line decides, and the call may
/// come from the IPv4 addresses that same line permits (the reply
/// carries only IPv4); a call from an address another line decides is
/// not expected.
fn bind_permitted<'r>(
    decisions: &[(SocketAddr, Decision<'r>)],
    arrival: &Arrival,
    cfg: &Config,
    routes: &Routes,
    req: &Request,
    rec: &mut Record,
    ident: &mut IdentCheck,
) -> Ended<'r> {
    let line = |d: &Decision| d.rule.map(|r| r.line);
    let Some(&(first, d)) = decisions.iter().find(|(a, d)| d.permit() && a.is_ipv4()) else {
        if let Some(&(dst, d)) = decisions.iter().find(|(_, d)| d.permit()) {
            rec.dst = Some(dst);
            rec.rule = Some(d.label());
            let why = "the application server has no IPv4 address".into();
            return Ended::With(d, Err(Refusal::BindFailed(why)));
        }
        return Ended::Denied;
    };
    rec.dst = Some(first);
    rec.rule = Some(d.label());
    let expect: Vec<IpAddr> = decisions
        .iter()
        .filter(|(a, other)| a.is_ipv4() && other.permit() && line(other) == line(&d))
        .map(|(a, _)| a.ip())
        .collect();
    let result = ident
        .verify(d.ident(cfg.ident), arrival, &req.userid, cfg, rec)
        .and_then(|()| listen_for_call(&expect, req.hostname.as_deref(), routes, cfg))
        .map(|listener| {
            let shown: Vec<String> = expect.iter().map(IpAddr::to_string).collect();
            rec.expect = Some(shown.join(","));
            rec.bind = listener.local_addr().ok().map(net::unmap);
            rec.src = rec.bind;
            Reached::Bind(listener, expect)
        });
    Ended::With(d, result)
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
fn listen_for_call(
    expect: &[IpAddr],
    name: Option<&[u8]>,
    routes: &Routes,
    cfg: &Config,
) -> Result<TcpListener, Refusal> {
    let Some(&first) = expect.first() else {
        return Err(Refusal::BindFailed("the application server has no IPv4 address".into()));
    };
    let ip = match routes.find(first, name).and_then(Route::source).or(cfg.bind_address) {
        Some(ip) => ip,
        None => bind::route_source(first).map_err(|e| Refusal::BindFailed(format!("route to {first}: {e}")))?,
    };
    bind::listen(ip, cfg.bind_ports).map_err(|e| {
        if net::is_fd_limit(&e) {
            Refusal::FdLimit(format!("BIND socket: {e}{}", net::nofile_note()))
        } else {
            Refusal::BindFailed(format!("listen on {ip}: {e}"))
        }
    })
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
            Err(Invalid::Version(v)) => return Err(Refusal::BadVersion(v, Foreign::of(&buf[..len]))),
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

/// The addresses the request names, each in its canonical form
/// ([`dest::canonical`]): DSTIP, or for SOCKS4a every address the
/// hostname resolves to, in the resolver's order, without repeats. An
/// address refused whatever the rules say is left out; when none is left,
/// the first one's refusal.
fn destinations(req: &Request, cfg: &Config) -> Result<Vec<SocketAddr>, Refusal> {
    let found = match &req.hostname {
        None => vec![SocketAddr::new(req.ip.into(), req.port)],
        Some(name) => {
            let name =
                std::str::from_utf8(name).map_err(|_| Refusal::ResolveFailed("hostname is not valid UTF-8".into()))?;
            net::resolve(name, req.port, Deadline::after(cfg.connect_timeout))
                .map_err(|e| Refusal::ResolveFailed(format!("{name}: {e}")))?
        }
    };
    let mut usable: Vec<SocketAddr> = Vec::with_capacity(found.len());
    let mut refused = None;
    for a in found {
        match dest::canonical(a.ip()) {
            Ok(ip) => {
                let a = SocketAddr::new(ip, a.port());
                if !usable.contains(&a) {
                    usable.push(a);
                }
            }
            Err(why) => {
                refused.get_or_insert((a, why));
            }
        }
    }
    match refused {
        Some(_) if !usable.is_empty() => Ok(usable),
        Some((_, Unusable::Unspecified)) if req.command == Command::Bind && req.hostname.is_none() => {
            Err(Refusal::BindNoPeer)
        }
        Some((a, why)) => Err(Refusal::Unusable(why, format!("{}: {}", audit::addr(a), why.why()))),
        None => Ok(usable),
    }
}

/// What the client host's identd said, as far as the decision goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident {
    /// It confirmed the claimed user-id.
    Ok,
    /// No USERID answer: refused, timed out, ERROR, or garbled.
    Unavailable,
    /// A USERID answer naming someone else.
    Mismatch,
    /// No query could be made: out of descriptors.
    FdLimit(String),
}

/// The client's identd, asked at most once per connection, when the
/// first line that needs it decides.
#[derive(Debug, Default)]
struct IdentCheck {
    /// The answer, once asked.
    asked: Option<Ident>,
}

impl IdentCheck {
    /// Whether a request under ident mode `mode` may go on: asks the
    /// client's identd the first time a mode needs it and records the
    /// outcome in `rec`.
    fn verify(
        &mut self,
        mode: Mode,
        arrival: &Arrival,
        claimed: &[u8],
        cfg: &Config,
        rec: &mut Record,
    ) -> Result<(), Refusal> {
        if mode == Mode::Off {
            rec.ident.get_or_insert_with(|| "off".into());
            return Ok(());
        }
        let verdict = self.asked.get_or_insert_with(|| ask_identd(arrival, claimed, cfg, rec));
        match verdict {
            Ident::Ok => Ok(()),
            Ident::Unavailable if mode == Mode::Optional => Ok(()),
            Ident::Unavailable => Err(Refusal::IdentUnavailable(rec.ident.clone().unwrap_or_default())),
            Ident::Mismatch => Err(Refusal::IdentMismatch),
            Ident::FdLimit(why) => Err(Refusal::FdLimit(why.clone())),
        }
    }
}

/// Asks the client's identd and records the outcome in `rec`.
fn ask_identd(arrival: &Arrival, claimed: &[u8], cfg: &Config, rec: &mut Record) -> Ident {
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
    match ident::query(sources, arrival.client, local.port(), deadline) {
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

/// Starts the deciding line's command and `hook`'s, if any; the
/// exchange goes on without waiting for them.
fn start_commands(
    commands: &Commands<'_, '_>,
    rules: &Rules,
    decision: &Decision<'_>,
    hook: Option<&Hook>,
    rec: &Record,
    req: &Request,
) {
    let dst = rec.dst;
    let subst = || Subst {
        client: rec.client.map(|a| a.ip()),
        client_name: None,
        command: req.command.name(),
        pid: std::process::id(),
        dst: dst.map(|d| d.ip()),
        dst_name: req.hostname.as_ref().map(|h| String::from_utf8_lossy(h).into_owned()),
        port: dst.map_or(req.port, |d| d.port()),
        service: rules
            .services
            .name(dst.map_or(req.port, |d| d.port()))
            .map(String::from),
        ident_user: rec.ident_user.clone(),
        user: req.userid.clone(),
    };
    let origin = |rule: String| Origin {
        client: rec.client,
        rule,
    };
    if let Some(t) = decision.command() {
        commands.start(t.to_vec(), subst(), origin(decision.label()));
    }
    if let Some((h, t)) = hook.and_then(|h| Some((h, h.command()?))) {
        commands.start(t.to_vec(), subst(), origin(rules.label(Some(h.line))));
    }
}

/// Connects to `dst` from `from` (the kernel's choice when `None`)
/// before `deadline`. Records the source in `rec`: the address and port
/// connected from, or the chosen address with port 0 after a failure.
fn connect(dst: SocketAddr, from: Option<IpAddr>, deadline: Deadline, rec: &mut Record) -> Result<TcpStream, Refusal> {
    let from = from.map(|ip| SocketAddr::new(ip, 0));
    rec.src = from;
    let e = match net::connect_from(dst, from, deadline) {
        Ok(s) => {
            rec.src = s.local_addr().ok().map(net::unmap).or(from);
            net::keepalive(&s);
            return Ok(s);
        }
        Err(ConnectError::Bind(e)) => {
            let src = from.map(|f| f.ip().to_string()).unwrap_or_default();
            return Err(Refusal::SourceFailed(format!("{src} for {}: {e}", audit::addr(dst))));
        }
        Err(ConnectError::Socket(e) | ConnectError::Connect(e)) => e,
    };
    Err(match e.kind() {
        io::ErrorKind::TimedOut => Refusal::ConnectTimeout,
        _ if net::is_fd_limit(&e) => {
            Refusal::FdLimit(format!("socket for {}: {e}{}", audit::addr(dst), net::nofile_note()))
        }
        io::ErrorKind::ConnectionRefused => Refusal::ConnectRefused(format!("{}: {e}", audit::addr(dst))),
        _ => Refusal::ConnectFailed(format!("{}: {e}", audit::addr(dst))),
    })
}
