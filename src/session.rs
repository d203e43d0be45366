//! One connection, from its first byte to its exit, read top to bottom
//! in [`connection`]: who the client is (a trusted balancer's PROXY
//! header) → the request → the rules → ident → connect or bind, directly
//! or through a parent proxy of the chain file → the decision line → the
//! reply → the relay. Every path ends in an
//! [`Outcome`], and [`finish`] writes its last lines once: nothing is
//! relayed unless its decision line was written (a logger that takes no
//! line within the log timeout turns a grant into a refusal), and every
//! connection has an end line.
//!
//! [`serve_one`] is the child's whole life in every start mode: inetd and
//! socket units (one connection passed in) and `--listen` (one forked
//! child per connection).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{self, MsgFlags};

use crate::addr::{self, Unusable};
use crate::audit::{self, Level, Line, Log, Record};
use crate::bind::{self, Inbound};
use crate::chain::{self, Action, Chain, Routed, Via};
use crate::config::Config;
use crate::confine;
use crate::ident::{self, Answer, Mode};
use crate::intake::Conn;
use crate::net::{self, ConnectError, Deadline, Unread};
use crate::outcome::Refusal;
use crate::parent::{self, Ask, Call, Failed, Hop, Target};
use crate::policy::Policy;
use crate::proxy::{self, Header};
use crate::relay;
use crate::request::{self, Command, Foreign, Invalid, Request, REPLY_GRANTED, REPLY_REJECTED};
use crate::route::{Route, Routes};
use crate::rules::command::{Commands, Origin};
use crate::rules::{self, Decision, Facts, Hook, Outlook, Partial, Rules, Subst};

/// Reading buffer for the PROXY header and the request. Larger than the
/// longest valid request, so the parser always answers before the buffer
/// fills, and what followed a PROXY header always fits.
const REQUEST_BUFFER_LEN: usize = 1024;
const _: () = assert!(REQUEST_BUFFER_LEN > request::MAX_REQUEST_LEN);
const _: () = assert!(REQUEST_BUFFER_LEN >= proxy::MAX_HEADER_LEN);
/// After a refusal, how long client input is drained before closing.
const LINGER_TIME: Duration = Duration::from_secs(1);
/// How long the 8-byte reply may take to be written.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// BIND: how many callers that are not the application server get a line
/// each; the rest are turned away unlogged.
const MAX_STRANGER_LINES: u32 = 10;

/// The child's life for connection `conn`, in every start mode: it
/// confines itself, runs the exchange and its relay, waits for the rules'
/// commands, and exits. A confinement that the host is too short of
/// resources to apply turns the connection away (exit status 1).
pub fn serve_one(conn: Conn, cfg: &Config, plan: &confine::Plan, policy: Policy, log: &Log) -> ! {
    if !plan.enter().log(log) {
        turn_away(conn.stream);
        std::process::exit(1);
    }
    handle(conn, cfg, policy, log);
    // The lines are written. Exit without dropping the configuration and
    // the log: the kernel frees all of it at once.
    std::process::exit(0)
}

/// Runs one SOCKS4 exchange on `conn` and relays until both sides are
/// done, writing the audit lines to `log`. Returns once the rules'
/// commands have ended too, or have been killed at `--command-timeout`;
/// the client socket is closed before that.
pub fn handle(conn: Conn, cfg: &Config, policy: Policy, log: &Log) {
    // The commands never delay the exchange, but they count as part of
    // this handler: under --listen it holds its --max-children slot, and
    // under a socket unit its instance, until they are done.
    std::thread::scope(|scope| {
        let commands = Commands::new(scope, cfg.command_timeout, log);
        let mut rec = Record::new(net::unmap(conn.peer));
        let outcome = connection(conn, cfg, policy, &mut rec, &commands, log);
        finish(&rec, outcome, log);
    });
}

/// Answers a connection that cannot be served at all (no process, no
/// descriptor, no set-up, no confinement) with 0x5B, without reading its
/// request and without waiting, and closes it as [`net::close_after`]
/// does, with no wait.
pub fn turn_away(stream: TcpStream) {
    let reply = request::reply(REPLY_REJECTED, 0, Ipv4Addr::UNSPECIFIED);
    let _ = socket::send(
        stream.as_raw_fd(),
        &reply,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
    net::close_after(&stream, Duration::ZERO);
}

/// How a connection ended, for its last lines.
enum Outcome {
    /// A trusted balancer's health check: no client behind it.
    Health(proxy::Local),
    /// Refused before any grant.
    Refused(Refusal),
    /// Granted, and its decision line written, but the reply could not be
    /// sent: the client went away.
    ClientLost(io::Error),
    /// BIND's wait for the application server ended without a relay.
    Unanswered(Unanswered),
    /// The relay ended.
    Relayed(relay::Summary),
}

/// How BIND's wait ended, when not with a relay.
enum Unanswered {
    /// No call within `--connect-timeout`: no second reply, as the
    /// classic server.
    Timeout,
    /// The client closed, failed or sent data while waiting.
    ClientGone(String),
    /// The listening socket failed.
    Failed(String),
    /// The application server called, but its accept line could not be
    /// written: the second reply was 91.
    LogFailed(SocketAddr, String),
}

/// The connection, top to bottom; returns how it ended.
fn connection(
    conn: Conn,
    cfg: &Config,
    policy: Policy,
    rec: &mut Record,
    commands: &Commands<'_, '_>,
    log: &Log,
) -> Outcome {
    let arrival = match arrive(conn, cfg, rec) {
        Ok(arrival) => arrival,
        Err(outcome) => return outcome,
    };
    let granted = exchange(&arrival, cfg, &policy, rec, commands);
    release(policy);
    let client = arrival.stream;
    let granted = match granted {
        Ok(granted) => granted,
        Err(refusal) => return refuse(&client, refusal),
    };
    // The decision line before the client hears: no line, no grant.
    let line = rec.decision_line(Some(REPLY_GRANTED), "granted", None);
    if let Err(e) = log.write(Level::Info, line.as_str()) {
        return refuse(&client, Refusal::LogFailed(format!("decision line: {e}")));
    }
    match granted {
        Granted::Connect { dest, relay } => {
            if let Err(e) = send_reply(&client, REPLY_GRANTED, dest.local_addr().ok()) {
                return Outcome::ClientLost(e);
            }
            Outcome::Relayed(relay.run(client, dest, cfg.idle_timeout))
        }
        Granted::Bind(bound) => answer_call(client, bound, cfg, rec, log),
        Granted::BindParent(hop, protocol, relay) => answer_parent_call(client, hop, protocol, relay, cfg, rec, log),
    }
}

/// Writes the lines that `outcome` still owes: the decision line of a
/// refusal, BIND's accept line, and the end line. The client has heard
/// already; the log may be slow.
fn finish(rec: &Record, outcome: Outcome, log: &Log) {
    let end = match outcome {
        Outcome::Health(kind) => {
            let via = rec.via.map_or_else(|| "-".to_string(), audit::addr);
            log.info(
                Line::new("health")
                    .field("via", via)
                    .field("proxy", kind.keyword())
                    .as_str(),
            );
            return;
        }
        Outcome::Refused(r) => {
            log.warning(rec.decision_line(r.reply(), r.reason(), r.detail().as_deref()).as_str());
            rec.end_line(0, 0, "refused", None, None)
        }
        Outcome::ClientLost(e) => rec.end_line(0, 0, "client-error", None, Some(&format!("reply: {e}"))),
        Outcome::Unanswered(u) => {
            let (level, peer, reply, reason, detail, end) = match &u {
                Unanswered::Timeout => (Level::Warning, None, None, "timeout", None, "bind-timeout"),
                Unanswered::ClientGone(why) => (Level::Warning, None, None, "client-gone", Some(why), "client-gone"),
                Unanswered::Failed(why) => (Level::Error, None, None, "bind-error", Some(why), "bind-error"),
                Unanswered::LogFailed(peer, why) => (
                    Level::Warning,
                    Some(*peer),
                    Some(REPLY_REJECTED),
                    "log-failed",
                    Some(why),
                    "refused",
                ),
            };
            let detail = detail.map(String::as_str);
            let _ = log.write(level, rec.accept_line(peer, reply, reason, detail).as_str());
            let end_detail = if end == "refused" { None } else { detail };
            rec.end_line(0, 0, end, None, end_detail)
        }
        Outcome::Relayed(s) => rec.end_line(s.up, s.down, s.end.keyword(), Some(s.via.keyword()), s.end.detail()),
    };
    log.info(end.as_str());
}

/// A connection as the exchange sees it, once who the client is is known.
struct Arrival {
    /// Non-blocking.
    stream: TcpStream,
    /// The client: the TCP peer, or the source a trusted balancer's PROXY
    /// header names.
    client: SocketAddr,
    /// The address and port the client connected to: this host's end of
    /// the connection, or the header's destination (on the balancer).
    local: SocketAddr,
    /// This host's end of the TCP connection (`local` without a balancer).
    own: SocketAddr,
    /// What came after the header: the start of the request.
    early: Vec<u8>,
    /// The end of the request phase, which the header shares.
    deadline: Deadline,
}

/// Who the client is: the TCP peer, or, when that peer is a load balancer
/// in `--proxy-protocol`'s networks, the client its PROXY header names,
/// read within the request timeout. No client to serve (a health check,
/// or a header that is missing, malformed, partial or late) is an
/// outcome; no reply is sent then.
fn arrive(conn: Conn, cfg: &Config, rec: &mut Record) -> Result<Arrival, Outcome> {
    let deadline = Deadline::after(cfg.request_timeout);
    let (peer, own) = (net::unmap(conn.peer), net::unmap(conn.local));
    let trusted = cfg.proxy_protocol.iter().any(|n| n.contains(peer.ip()));
    if trusted {
        (rec.client, rec.via) = (None, Some(peer));
    }
    let stream = conn.stream;
    if let Err(e) = stream.set_nonblocking(true) {
        return Err(Outcome::Refused(Refusal::ClientError(format!("set non-blocking: {e}"))));
    }
    if !trusted {
        return Ok(Arrival {
            stream,
            client: peer,
            local: own,
            own,
            early: Vec::new(),
            deadline,
        });
    }
    let mut buf = [0u8; proxy::MAX_HEADER_LEN];
    let (header, used, len) =
        net::read_message(&stream, &mut buf, 0, deadline, "PROXY header", proxy::parse).map_err(|e| {
            Outcome::Refused(match e {
                Unread::Invalid(invalid, _) => Refusal::ProxyInvalid(invalid),
                Unread::Closed(_) => Refusal::ProxyClosed,
                Unread::Io(e) if e.kind() == io::ErrorKind::TimedOut => Refusal::ProxyTimeout,
                Unread::Io(e) => Refusal::ClientError(e.to_string()),
            })
        })?;
    match header {
        Header::Local(kind) => Err(Outcome::Health(kind)),
        Header::Proxied { src, dst, .. } => {
            let client = net::unmap(src);
            rec.client = Some(client);
            Ok(Arrival {
                stream,
                client,
                local: net::unmap(dst),
                own,
                early: buf[used..len].to_vec(),
                deadline,
            })
        }
    }
}

/// A granted request, ready for its reply.
enum Granted {
    /// Connected to the destination, or to a parent that did.
    Connect {
        dest: TcpStream,
        /// The relay, with what the client sent after its request (and
        /// what a parent sent after its answer).
        relay: relay::Relay,
    },
    /// Listening for the application server's call.
    Bind(Bound),
    /// A parent listens for the call: its first reply is had, and it
    /// speaks this protocol.
    BindParent(Hop, parent::Protocol, relay::Relay),
}

/// BIND's listening socket, ready for the first reply.
struct Bound {
    listener: TcpListener,
    /// The addresses the call may come from.
    expect: Vec<IpAddr>,
    relay: relay::Relay,
}

/// Gives back what the policy holds once the request is decided, for the
/// length of the relay: a compiled rules file's copy, private to this
/// process and megabytes for a large file. The rest is left for the exit
/// to free: freeing it would write to pages that a `--listen` handler
/// shares with its parent.
fn release(mut policy: Policy) {
    if let Ok(rules) = &mut policy.rules {
        rules.release();
    }
    std::mem::forget(policy);
}

/// Refuses: the reply code, or an answer in the client's own protocol,
/// if the refusal has one, then a bounded drain before the close, so
/// that the answer is not lost to a reset.
fn refuse(client: &TcpStream, refusal: Refusal) -> Outcome {
    let answer = match &refusal {
        Refusal::BadVersion(_, foreign) => foreign.map(Foreign::answer),
        _ => None,
    };
    let sent = match (refusal.reply(), answer) {
        (Some(code), _) => send_reply(client, code, None).is_ok(),
        (None, Some(answer)) => net::write_all(client, answer, Deadline::after(REPLY_TIMEOUT), "answer").is_ok(),
        (None, None) => false,
    };
    if sent {
        net::close_after(client, LINGER_TIME);
    }
    Outcome::Refused(refusal)
}

/// BIND after the decision line: the first reply, the wait for the
/// application server's call (other callers turned away), its accept
/// line, the second reply, then the relay.
fn answer_call(client: TcpStream, bound: Bound, cfg: &Config, rec: &Record, log: &Log) -> Outcome {
    if let Err(e) = send_reply(&client, REPLY_GRANTED, rec.bind) {
        return Outcome::ClientLost(e);
    }
    // Anyone who can reach the port may call; those who are not the
    // application server are turned away.
    let mut strangers = 0u32;
    let deadline = Deadline::after(cfg.connect_timeout);
    let waited = bind::wait(&bound.listener, &client, deadline, &bound.expect, |peer| {
        strangers = strangers.saturating_add(1);
        log_stranger(rec, peer, strangers, log);
    });
    // Exactly one inbound connection: stop listening now.
    drop(bound.listener);
    let (caller, peer) = match waited {
        Ok(Inbound::Call(caller, peer)) => (caller, peer),
        Ok(Inbound::Timeout) => return Outcome::Unanswered(Unanswered::Timeout),
        Ok(Inbound::ClientGone(why)) => return Outcome::Unanswered(Unanswered::ClientGone(why)),
        Err(e) => return Outcome::Unanswered(Unanswered::Failed(e.to_string())),
    };
    net::keepalive(&caller);
    if let Err(outcome) = second_reply(&client, peer, rec, log) {
        return outcome;
    }
    Outcome::Relayed(bound.relay.run(client, caller, cfg.idle_timeout))
}

/// BIND's accept line, then its second reply naming the caller. As for
/// the decision line: no relay without its accept line, and a client
/// whose accept line could not be written gets 91.
fn second_reply(client: &TcpStream, peer: SocketAddr, rec: &Record, log: &Log) -> Result<(), Outcome> {
    let line = rec.accept_line(Some(peer), Some(REPLY_GRANTED), "granted", None);
    if let Err(e) = log.write(Level::Info, line.as_str()) {
        if send_reply(client, REPLY_REJECTED, None).is_ok() {
            net::close_after(client, LINGER_TIME);
        }
        return Err(Outcome::Unanswered(Unanswered::LogFailed(
            peer,
            format!("accept line: {e}"),
        )));
    }
    send_reply(client, REPLY_GRANTED, Some(peer)).map_err(Outcome::ClientLost)
}

/// BIND through a parent, after the decision line: the first reply with
/// where the parent listens, the wait for the parent's second reply,
/// the accept line, the second reply, then the relay. The parent turns
/// away callers that are not the application server; its refusal is the
/// client's 91.
fn answer_parent_call(
    client: TcpStream,
    hop: Hop,
    protocol: parent::Protocol,
    relay: relay::Relay,
    cfg: &Config,
    rec: &Record,
    log: &Log,
) -> Outcome {
    if let Err(e) = send_reply(&client, REPLY_GRANTED, rec.bind) {
        return Outcome::ClientLost(e);
    }
    let deadline = Deadline::after(cfg.connect_timeout);
    let opened = match parent::await_call(protocol, &hop.stream, &hop.opened.early, &client, deadline) {
        Ok(Call::Called(opened)) => opened,
        Ok(Call::Timeout) => return Outcome::Unanswered(Unanswered::Timeout),
        Ok(Call::ClientGone(why)) => return Outcome::Unanswered(Unanswered::ClientGone(why)),
        Err(e) => {
            if send_reply(&client, REPLY_REJECTED, None).is_ok() {
                net::close_after(&client, LINGER_TIME);
            }
            let parent = audit::addr(hop.parent);
            return Outcome::Unanswered(Unanswered::Failed(format!("parent {parent} second reply: {e}")));
        }
    };
    // The caller as the parent names it; the unspecified address when it
    // names none.
    let peer = opened
        .bound
        .unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
    if let Err(outcome) = second_reply(&client, peer, rec, log) {
        return outcome;
    }
    let relay = relay.early_down(&opened.early);
    Outcome::Relayed(relay.run(client, hop.stream, cfg.idle_timeout))
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

/// The exchange up to the reply: the request, the access decision and the
/// connection to the destination.
///
/// Each address of the destination gets its own decision: for a SOCKS4a
/// name with several addresses, the line that permits an address is the
/// one whose ident mode, command and `rule=` apply to a connection to that
/// address, and addresses are tried in the resolver's order, those denied
/// skipped. The command of the line the request ends with runs (the
/// line that permitted the address connected to, or that refused the
/// request). With a chain file, each permitted address leaves the way
/// its chain line says; a name that the rules and the chain decide by
/// name alone, for a parent that takes names, is not looked up here
/// ([`Walk::by_name`]).
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
            name: None,
        };
        if let Outlook::Denied(d) = rules::outlook(rules, &known) {
            return Err(denied(&d, rec));
        }
    }
    let (req, pending) = read_request(&arrival.stream, &arrival.early, arrival.deadline)?;
    // The SOCKS4a name, as name rules match it; none for an address.
    let name = req.hostname.as_deref().and_then(addr::name_of);
    rec.command = Some(req.command);
    rec.user = Some(req.userid.clone());
    rec.host = req.hostname.clone();
    if req.hostname.is_none() {
        rec.dst = Some(SocketAddr::new(req.ip.into(), req.port));
    }

    let rules = policy.rules.as_ref().map_err(|e| config_error(e))?;
    let routes = policy.routes.as_ref().map_err(|e| config_error(e))?;
    let chain = match &policy.chain {
        None => None,
        Some(loaded) => Some(loaded.as_ref().map_err(|e| config_error(e))?),
    };
    if req.hostname.is_some() {
        if !cfg.socks4a {
            return Err(Refusal::Socks4aDisabled);
        }
        // No name is looked up for a request no line could permit.
        let known = Partial {
            src,
            user: Some(&req.userid),
            port: Some(req.port),
            name: Some(name.as_deref()),
        };
        if let Outlook::Denied(d) = rules::outlook(rules, &known) {
            return Err(denied(&d, rec));
        }
    }
    let mut ident = IdentCheck::default();
    let walk = Walk {
        arrival,
        cfg,
        routes,
        chain,
        req: &req,
        name: name.as_deref(),
    };
    let by_name = match (&name, req.command) {
        (Some(name), Command::Connect) => walk.by_name(rules, name, rec, &mut ident),
        _ => None,
    };
    let (decision, result) = match by_name {
        Some(ended) => ended,
        None => {
            let candidates = destinations(&req, cfg)?;
            let decisions: Vec<(SocketAddr, Decision)> = candidates
                .iter()
                .map(|&dst| {
                    let facts = Facts {
                        user: &req.userid,
                        src,
                        dst: addr::judged(dst.ip()),
                        port: dst.port(),
                        name: name.as_deref(),
                    };
                    (dst, rules::decide(rules, &facts))
                })
                .collect();
            let ended = match req.command {
                Command::Connect => walk.connect(&decisions, rec, &mut ident),
                Command::Bind => walk.bind(&decisions, rec, &mut ident),
            };
            ended.unwrap_or_else(|| {
                let (dst, d) = decisions[0];
                rec.dst = Some(dst);
                (d, Err(denied(&d, rec)))
            })
        }
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
        Reached::Connect(dest, early) => Granted::Connect {
            dest,
            relay: relay.early_down(&early),
        },
        Reached::Bind(listener, expect) => Granted::Bind(Bound {
            listener,
            expect,
            relay,
        }),
        Reached::BindParent(hop, protocol) => Granted::BindParent(hop, protocol, relay),
    })
}

/// What the walk over a request's addresses works with.
struct Walk<'a> {
    arrival: &'a Arrival,
    cfg: &'a Config,
    routes: &'a Routes,
    /// `None` without `--chain`: every request leaves directly.
    chain: Option<&'a Chain>,
    req: &'a Request,
    /// The SOCKS4a name, as name rules match it.
    name: Option<&'a str>,
}

/// How a request ended: the line of the address it ends with (the one
/// that permitted the address connected to, or that refused it), and the
/// outcome. `None`: no address is permitted.
type Ended<'r> = Option<(Decision<'r>, Result<Reached, Refusal>)>;

/// A destination reached, before the relay is prepared.
enum Reached {
    /// The connection, and what must reach the client before anything
    /// read from it: what a parent sent after its answer.
    Connect(TcpStream, Vec<u8>),
    /// BIND's listening socket and the addresses the call may come from.
    Bind(TcpListener, Vec<IpAddr>),
    /// BIND through a parent, its first reply had.
    BindParent(Hop, parent::Protocol),
}

/// The way a permitted request leaves, as the chain file says.
enum Way<'c> {
    Direct,
    Parent(&'c Via),
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

impl Walk<'_> {
    /// Whether a request under decision `d` may go on, by its line's ident
    /// mode.
    fn ident_ok(&self, d: &Decision<'_>, rec: &mut Record, ident: &mut IdentCheck) -> Result<(), Refusal> {
        ident.verify(d.ident(self.cfg.ident), self.arrival, &self.req.userid, self.cfg, rec)
    }

    /// The chain's way for a permitted request to `dst` (its address,
    /// judged; `None` when known only by its name) on `port`: direct
    /// without a chain file; a refusal for a `deny` line or no line;
    /// `Ok(None)` when a request known only by its name needs its
    /// addresses first.
    fn way(&self, dst: Option<IpAddr>, port: u16) -> Result<Option<Way<'_>>, Refusal> {
        let Some(chain) = self.chain else {
            return Ok(Some(Way::Direct));
        };
        match chain::decide(chain, &self.req.userid, dst, self.name, port) {
            Routed::NeedsAddress => Ok(None),
            Routed::Unmatched => Err(Refusal::ChainDenied(format!("{}: no line matches", chain.file))),
            Routed::By(line) => match &line.action {
                Action::Direct => Ok(Some(Way::Direct)),
                Action::Deny => Err(Refusal::ChainDenied(format!("{}: {}", chain.label(line), line.text))),
                Action::Parent(via) => Ok(Some(Way::Parent(via))),
            },
        }
    }

    /// CONNECT by a SOCKS4a name that the rules decide by name alone and
    /// the chain sends to a parent that takes names: the parent is asked
    /// for the name, which is not looked up here. A name the chain refuses
    /// is refused without a lookup too. `None` when the request needs its
    /// addresses: the rules or the chain may decide it by address, or it
    /// leaves directly.
    fn by_name<'r>(&self, rules: &'r Rules, name: &str, rec: &mut Record, ident: &mut IdentCheck) -> Ended<'r> {
        self.chain?;
        let known = Partial {
            src: self.arrival.client.ip(),
            user: Some(&self.req.userid),
            port: Some(self.req.port),
            name: Some(Some(name)),
        };
        let d = rules::settled(rules, &known).filter(Decision::permit)?;
        let via = match self.way(None, self.req.port) {
            Ok(Some(Way::Parent(via))) if via.protocol.takes_names() => via,
            Ok(_) => return None,
            Err(refusal) => {
                rec.rule = Some(d.label());
                rec.ident = Some("off".into());
                return Some((d, Err(refusal)));
            }
        };
        rec.rule = Some(d.label());
        let target = Target::Name(name, self.req.port);
        let result = self
            .ident_ok(&d, rec, ident)
            .and_then(|()| {
                self.through(
                    via,
                    Command::Connect,
                    target,
                    rec,
                    Deadline::after(self.cfg.connect_timeout),
                )
            })
            .map(|hop| Reached::Connect(hop.stream, hop.opened.early));
        Some((d, result))
    }

    /// CONNECT: each permitted address in turn, with its own line's ident
    /// mode and its own way out, until one connects; all within one
    /// `--connect-timeout`.
    fn connect<'r>(
        &self,
        decisions: &[(SocketAddr, Decision<'r>)],
        rec: &mut Record,
        ident: &mut IdentCheck,
    ) -> Ended<'r> {
        let deadline = Deadline::after(self.cfg.connect_timeout);
        let mut ended = None;
        for &(dst, d) in decisions.iter().filter(|(_, d)| d.permit()) {
            rec.dst = Some(dst);
            rec.rule = Some(d.label());
            (rec.src, rec.hop) = (None, None);
            let result = match self.way(Some(addr::judged(dst.ip())), dst.port()) {
                Ok(Some(Way::Parent(via))) => self.ident_ok(&d, rec, ident).and_then(|()| {
                    self.through(via, Command::Connect, Target::Addr(dst), rec, deadline)
                        .map(|hop| Reached::Connect(hop.stream, hop.opened.early))
                }),
                Ok(_) => self.ident_ok(&d, rec, ident).and_then(|()| {
                    let own = self.arrival.own.ip();
                    let from = source_for(dst.ip(), self.req.hostname.as_deref(), self.routes, self.cfg, own);
                    rec.hop = self.chain.map(|_| "direct".into());
                    connect(dst, from, deadline, rec).map(|s| Reached::Connect(s, Vec::new()))
                }),
                Err(refusal) => Err(refusal),
            };
            let last = matches!(
                result,
                Ok(_)
                    | Err(Refusal::ConnectTimeout
                        | Refusal::FdLimit(_)
                        | Refusal::IdentMismatch
                        | Refusal::Parent(Failed::Timeout(_) | Failed::FdLimit(_)))
            );
            ended = Some((d, result));
            if last {
                break;
            }
        }
        ended
    }

    /// BIND: the first permitted address's line decides, and the call may
    /// come from the IPv4 addresses that same line permits (the reply
    /// carries only IPv4); a call from an address another line decides is
    /// not expected. Through a parent, the parent is asked to expect the
    /// first of them, and turns away other callers itself.
    fn bind<'r>(
        &self,
        decisions: &[(SocketAddr, Decision<'r>)],
        rec: &mut Record,
        ident: &mut IdentCheck,
    ) -> Ended<'r> {
        let line = |d: &Decision| d.rule.map(|r| r.line);
        let permitted = || decisions.iter().filter(|(_, d)| d.permit());
        let Some(&(first, d)) = permitted().find(|(a, _)| a.is_ipv4()) else {
            let &(dst, d) = permitted().next()?;
            rec.dst = Some(dst);
            rec.rule = Some(d.label());
            let why = "the application server has no IPv4 address".into();
            return Some((d, Err(Refusal::BindFailed(why))));
        };
        rec.dst = Some(first);
        rec.rule = Some(d.label());
        let expect: Vec<IpAddr> = permitted()
            .filter(|(a, other)| a.is_ipv4() && line(other) == line(&d))
            .map(|(a, _)| a.ip())
            .collect();
        let way = match self.way(Some(addr::judged(first.ip())), first.port()) {
            Ok(way) => way,
            Err(refusal) => return Some((d, Err(refusal))),
        };
        let result = self.ident_ok(&d, rec, ident).and_then(|()| match way {
            Some(Way::Parent(via)) => {
                let deadline = Deadline::after(self.cfg.connect_timeout);
                let hop = self.through(via, Command::Bind, Target::Addr(first), rec, deadline)?;
                rec.expect = Some(first.ip().to_string());
                match hop.opened.bound.map(net::unmap) {
                    Some(bound @ SocketAddr::V4(_)) => {
                        rec.bind = Some(bound);
                        Ok(Reached::BindParent(hop, via.protocol))
                    }
                    other => {
                        let shown = other.map_or_else(|| "a name".to_string(), audit::addr);
                        Err(Refusal::BindFailed(format!(
                            "parent {} listens on {shown}, which a SOCKS4 reply cannot carry",
                            audit::addr(hop.parent)
                        )))
                    }
                }
            }
            _ => {
                rec.hop = self.chain.map(|_| "direct".into());
                let name = self.req.hostname.as_deref();
                listen_for_call(&expect, name, self.routes, self.cfg).map(|listener| {
                    let shown: Vec<String> = expect.iter().map(IpAddr::to_string).collect();
                    rec.expect = Some(shown.join(","));
                    rec.bind = listener.local_addr().ok().map(net::unmap);
                    rec.src = rec.bind;
                    Reached::Bind(listener, expect)
                })
            }
        });
        Some((d, result))
    }

    /// Puts `command` for `target` to the parents of `via`, in order,
    /// before `deadline`, each connected to from the address `--route` or
    /// `--outgoing-address` gives for it. Records the hop and the source
    /// in `rec`.
    fn through(
        &self,
        via: &Via,
        command: Command,
        target: Target<'_>,
        rec: &mut Record,
        deadline: Deadline,
    ) -> Result<Hop, Refusal> {
        rec.hop = Some(via.protocol.name().into());
        let (parents, unresolved) = parent_addresses(via, deadline);
        let ask = Ask {
            protocol: via.protocol,
            command,
            target,
            user: &self.req.userid,
            credentials: via.credentials.as_ref().map(|s| &s.credentials),
        };
        let own = self.arrival.own.ip();
        let source = |p: SocketAddr| source_for(p.ip(), None, self.routes, self.cfg, own);
        match parent::open(&ask, &parents, source, deadline) {
            Ok(hop) => {
                rec.hop = Some(parent::hop(via.protocol, hop.parent));
                rec.src = hop.stream.local_addr().ok().map(net::unmap);
                Ok(hop)
            }
            Err(failed) if unresolved.is_empty() => Err(Refusal::Parent(failed)),
            Err(failed) => Err(Refusal::Parent(failed.after(&unresolved.join("; ")))),
        }
    }
}

/// The addresses of `via`'s parents, in order: each name looked up
/// (before `deadline`), every address it has in the resolver's order.
/// What could not be looked up, or is no address to connect to, is left
/// out and said in the second list.
fn parent_addresses(via: &Via, deadline: Deadline) -> (Vec<SocketAddr>, Vec<String>) {
    let (mut found, mut unresolved) = (Vec::new(), Vec::new());
    for p in &via.parents {
        let addrs = match &p.host {
            chain::Host::Addr(ip) => vec![SocketAddr::new(*ip, p.port)],
            chain::Host::Name(name) => match net::resolve(name, p.port, deadline) {
                Ok(addrs) => addrs,
                Err(e) => {
                    unresolved.push(format!("parent {p}: {e}"));
                    continue;
                }
            },
        };
        for a in addrs {
            match addr::canonical(a.ip()) {
                Ok(ip) if !found.contains(&SocketAddr::new(ip, a.port())) => found.push(SocketAddr::new(ip, a.port())),
                Ok(_) => {}
                Err(why) => unresolved.push(format!("parent {p}: {}: {}", a.ip(), why.why())),
            }
        }
    }
    (found, unresolved)
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
    match net::read_message(client, &mut buf, early.len(), deadline, "request", request::parse) {
        Ok((req, used, len)) => Ok((req, buf[used..len].to_vec())),
        Err(Unread::Invalid(Invalid::Version(v), len)) => Err(Refusal::BadVersion(v, Foreign::of(&buf[..len]))),
        Err(Unread::Invalid(invalid, _)) => Err(invalid.into()),
        Err(Unread::Closed(_)) => Err(Refusal::ClientClosed),
        Err(Unread::Io(e)) if e.kind() == io::ErrorKind::TimedOut => Err(Refusal::RequestTimeout),
        Err(Unread::Io(e)) => Err(Refusal::ClientError(e.to_string())),
    }
}

/// The addresses the request names, each in its canonical form
/// ([`addr::canonical`]): DSTIP, or for SOCKS4a every address the
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
        match addr::canonical(a.ip()) {
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
