//! Serving listening sockets: those of `--listen`, or those passed by a
//! socket unit with `Accept=no` or by inetd's `wait`. One forked child per
//! connection, which confines itself and runs the same handler as inetd
//! and socket-unit modes.

use std::collections::HashMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::audit::{self, Line, Log};
use crate::config::Config;
use crate::confine;
use crate::intake::Conn;
use crate::net;
use crate::policy::Policy;
use crate::session;

/// How long children get to finish after SIGTERM before SIGKILL.
const CHILD_GRACE: Duration = Duration::from_secs(5);
/// When a connection cannot even be accepted (no descriptor, no memory),
/// the listening sockets are left out of `poll` this long, so that a
/// connection waiting in the queue does not make the loop spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long the start-up check waits for this host's identd.
const IDENTD_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// At most one line per this while accepting is paused.
const PAUSE_LINE_INTERVAL: Duration = Duration::from_secs(10);

/// Binds the `--listen` addresses.
pub fn bind(cfg: &Config) -> Result<Vec<TcpListener>> {
    cfg.listen
        .iter()
        .map(|addr| TcpListener::bind(addr).with_context(|| format!("listen on {addr}")))
        .collect()
}

/// What an administrator trying socks4d must know before the first
/// connection: the logger cannot be reached (every request would get
/// 0x5B), or ident is required and nothing answers on this host's identd
/// port (every local client would get 0x5C). The second goes to the log
/// too.
pub fn hints(cfg: &Config, log: &Log) -> Vec<String> {
    let mut hints = Vec::new();
    if let Err(why) = log.reachable() {
        hints.push(audit::logger_hint(&why));
    }
    let identd = SocketAddr::from(([127, 0, 0, 1], crate::ident::IDENT_PORT));
    if cfg.ident == crate::ident::Mode::Required {
        if let Err(why) = TcpStream::connect_timeout(&identd, IDENTD_PROBE_TIMEOUT) {
            let hint = format!(
                "nothing answers on {identd} ({why}): with --ident required, the default, a client on this \
                 host gets 92 (0x5C) unless an identd runs (oidentd, say); to try socks4d without one, add \
                 --ident off"
            );
            log.warning(&hint);
            hints.push(hint);
        }
    }
    hints
}

/// Blocks the signals a long-running socks4d reads from its signalfd
/// (SIGCHLD, SIGTERM, SIGINT, SIGHUP), so that one sent while it starts
/// (a `systemctl reload` at once, say) waits for it instead of killing
/// it. Call before the listening sockets are bound or taken.
pub fn hold_signals() -> nix::Result<SigSet> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block()?;
    Ok(mask)
}

/// Serves `listeners` as `--user`: drops root (the ports are bound),
/// reads the policy as that user, with the trust of the user socks4d was
/// started as (as it will on every reload), says when the built-in policy
/// applies, then [`serve`]s.
pub fn run(listeners: Vec<TcpListener>, cfg: &Config, log: &Log) -> Result<()> {
    let trust = crate::rules::Trust::new(&cfg.user);
    crate::privilege::drop_root(&cfg.user)?;
    let policy = Policy::load_watched(cfg, &trust, log);
    if let Ok(r) = &policy.rules {
        if r.origin == crate::rules::Origin::Builtin {
            log.info(&format!(
                "rules: {} is absent; built-in policy: permit loopback clients, deny the rest",
                cfg.rules_file.display()
            ));
        }
    }
    serve(listeners, cfg, policy, log)
}

/// Serves `listeners` with `policy` until SIGTERM or SIGINT, as the
/// user socks4d already runs as. Children are reaped as they exit; at
/// most `cfg.max_children` run at once, and a connection over the cap is
/// closed at once and logged. The policy is read again when one of its
/// files has changed or it is in error ([`Policy::stale`]), checked
/// before each connection is handed on, and at once on SIGHUP. On a stop signal the listening sockets are closed,
/// the children are sent SIGTERM and waited for, and the function
/// returns.
pub fn serve(listeners: Vec<TcpListener>, cfg: &Config, mut policy: Policy, log: &Log) -> Result<()> {
    for l in &listeners {
        l.set_nonblocking(true).context("set listener non-blocking")?;
    }
    // Each child confines itself further with this plan, made once here.
    let plan = confine::Plan::new(cfg);

    let mask = hold_signals().context("block signals")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")?;

    for l in &listeners {
        if let Ok(a) = l.local_addr() {
            log.info(Line::new("listening").field("addr", audit::addr(a)).as_str());
        }
    }

    // One descriptor held in reserve for a connection that arrives when
    // the process is at its descriptor limit; see `accept_next`.
    let mut reserve = File::open("/dev/null").ok();
    let mut children: HashMap<Pid, SocketAddr> = HashMap::new();
    let mut backoff = false;
    let mut last_pause_line: Option<Instant> = None;
    loop {
        let mut fds: Vec<PollFd> = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let timeout = if backoff {
            PollTimeout::try_from(ACCEPT_BACKOFF.as_millis() as i32).unwrap_or(PollTimeout::MAX)
        } else {
            fds.extend(listeners.iter().map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN)));
            PollTimeout::NONE
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }

        let (mut stop, mut hangup) = (false, false);
        while let Ok(Some(info)) = signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo == Signal::SIGTERM as i32 || signo == Signal::SIGINT as i32 {
                stop = true;
            }
            hangup |= signo == Signal::SIGHUP as i32;
        }
        reap(&mut children, Some(log));
        if stop {
            break;
        }
        if hangup {
            policy = reload(&policy, cfg, log, "SIGHUP");
        }

        // Accept everything waiting (the listeners are non-blocking), one
        // connection at a time: a child must not inherit the sockets of
        // other clients, or a connection refused here would stay open
        // until that child ends.
        backoff = false;
        loop {
            let (stream, peer) = match accept_next(&listeners, &mut reserve, &mut last_pause_line, log) {
                Next::Connection(stream, peer) => (stream, peer),
                Next::Idle => break,
                Next::Pause => {
                    backoff = true;
                    break;
                }
            };
            // Children that have exited since the last poll are only
            // counted as gone once reaped: at a cap, reap first, or a run
            // of quick connections would fill it with the exited.
            let mut over = limit_reached(&children, peer, cfg);
            if over.is_some() {
                reap(&mut children, Some(log));
                over = limit_reached(&children, peer, cfg);
            }
            if let Some((reason, limit)) = over {
                log.warning(
                    Line::new("refused")
                        .field("client", audit::addr(peer))
                        .field("reason", reason)
                        .field("limit", limit)
                        .as_str(),
                );
                continue; // dropping the stream closes it
            }
            if let Some(why) = policy.stale() {
                policy = reload(&policy, cfg, log, &why);
            }
            // SAFETY: the child runs on the one thread fork leaves it.
            // The parent is single-threaded, but for a host-name lookup
            // of a rules file (read at start or on reload) that outlived
            // its deadline: such a thread may hold a lock of the name
            // service, which a lookup in the child would then wait on
            // until its own deadline (every lookup runs on a thread of
            // its own, bounded); glibc's fork makes malloc safe.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    drop(listeners);
                    drop(signals);
                    drop(reserve);
                    let _ = mask.thread_unblock();
                    log.after_fork();
                    let local = stream.local_addr().unwrap_or(peer);
                    session::serve_one(Conn { stream, peer, local }, cfg, &plan, policy, log);
                }
                Ok(ForkResult::Parent { child }) => {
                    children.insert(child, peer);
                }
                Err(e) => {
                    // RLIMIT_NPROC, or the system out of processes: this
                    // connection is answered and closed, and the next one
                    // gets its own try.
                    session::turn_away(stream);
                    log.error(
                        Line::new("refused")
                            .field("client", audit::addr(peer))
                            .field("reason", "fork-failed")
                            .quoted("detail", e.to_string().as_bytes())
                            .as_str(),
                    );
                }
            }
        }
    }

    drop(listeners);
    log.info(Line::new("stopping").field("children", children.len()).as_str());
    stop_children(&mut children, &signals);
    Ok(())
}

/// The policy read again (`why`: what made it so), with a line saying so;
/// its errors are logged by [`Policy::load`], and a policy in error
/// refuses every request until a later reload succeeds.
fn reload(policy: &Policy, cfg: &Config, log: &Log, why: &str) -> Policy {
    let fresh = policy.reload(cfg, log);
    // A policy in error is read at each connection: a line only when
    // something came of it.
    if !policy.usable() && fresh.errors() == policy.errors() {
        return fresh;
    }
    let outcome = if fresh.usable() {
        "ok"
    } else {
        "errors; no service until they are fixed"
    };
    log.info(
        Line::new("reload")
            .quoted("why", why.as_bytes())
            .field("rules", cfg.rules_file.display())
            .field("outcome", outcome)
            .as_str(),
    );
    fresh
}

/// The source a client counts against for `--max-per-source`: its IPv4
/// address, or its IPv6 address's /64 (one host, or one site's LAN, is
/// given a /64 and can pick any address within it).
fn source_of(peer: SocketAddr) -> u128 {
    match net::unmap(peer).ip() {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a) & !u128::from(u64::MAX),
    }
}

/// The limit a new connection from `peer` would go over, with its
/// value: `--max-children`, or `--max-per-source`, which a trusted load
/// balancer (`--proxy-protocol`), speaking for many clients, is not held
/// to.
fn limit_reached(children: &HashMap<Pid, SocketAddr>, peer: SocketAddr, cfg: &Config) -> Option<(&'static str, usize)> {
    if children.len() >= cfg.max_children {
        return Some(("max-children", cfg.max_children));
    }
    let peer = net::unmap(peer);
    if cfg.proxy_protocol.iter().any(|n| n.contains(peer.ip())) {
        return None;
    }
    let source = source_of(peer);
    let held = children.values().filter(|c| source_of(**c) == source).count();
    (held >= cfg.max_per_source).then_some(("max-per-source", cfg.max_per_source))
}

/// What [`accept_next`] found.
enum Next {
    Connection(TcpStream, SocketAddr),
    /// Nothing waiting on any listener.
    Idle,
    /// Connections wait but cannot be accepted: leave the listeners out of
    /// `poll` for [`ACCEPT_BACKOFF`].
    Pause,
}

/// The next connection waiting on any of `listeners`.
///
/// At the descriptor limit the process can hold no connection at all: the
/// reserve descriptor is given up to accept one, which is answered 0x5B
/// and closed, then taken back. So the queue drains, each client hears a
/// refusal and the log says why, rather than the loop spinning on a
/// listener that stays readable.
fn accept_next(
    listeners: &[TcpListener],
    reserve: &mut Option<File>,
    last_pause_line: &mut Option<Instant>,
    log: &Log,
) -> Next {
    for l in listeners {
        if let Some(next) = accept_from(l, reserve, last_pause_line, log) {
            return next;
        }
    }
    Next::Idle
}

/// [`accept_next`] for one listener; `None` when nothing waits on it.
fn accept_from(
    l: &TcpListener,
    reserve: &mut Option<File>,
    last_pause_line: &mut Option<Instant>,
    log: &Log,
) -> Option<Next> {
    loop {
        let e = match l.accept() {
            Ok((stream, peer)) => return Some(Next::Connection(stream, peer)),
            Err(e) => e,
        };
        match e.raw_os_error() {
            Some(nix::libc::EAGAIN) => return None,
            Some(nix::libc::EINTR | nix::libc::ECONNABORTED) => continue,
            _ => {}
        }
        let short_of_room = net::is_fd_limit(&e) || e.raw_os_error() == Some(nix::libc::ENOBUFS);
        let detail = format!("accept: {e}{}", net::nofile_note());
        if short_of_room && reserve.take().is_some() {
            let shed = l.accept();
            if let Ok((stream, peer)) = shed {
                session::turn_away(stream);
                *reserve = File::open("/dev/null").ok();
                log.error(
                    Line::new("refused")
                        .field("client", audit::addr(peer))
                        .field("reason", "fd-limit")
                        .quoted("detail", detail.as_bytes())
                        .as_str(),
                );
                continue;
            }
            *reserve = File::open("/dev/null").ok();
        }
        // Nothing to turn away with: pause accepting, and say so at most
        // once per PAUSE_LINE_INTERVAL, not once per pause.
        if last_pause_line.is_none_or(|t| t.elapsed() >= PAUSE_LINE_INTERVAL) {
            *last_pause_line = Some(Instant::now());
            log.error(
                Line::new("refused")
                    .field("client", "-")
                    .field("reason", if short_of_room { "fd-limit" } else { "accept-failed" })
                    .quoted("detail", detail.as_bytes())
                    .as_str(),
            );
        }
        return Some(Next::Pause);
    }
}

/// Collects every child that has exited. A child killed by a signal (the
/// OOM killer's SIGKILL, say) could write no end line; the parent logs
/// one line for it instead, to `log` (`None` while stopping, when the
/// parent's own SIGTERM is the cause).
fn reap(children: &mut HashMap<Pid, SocketAddr>, log: Option<&Log>) {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                let client = children.remove(&pid);
                if let (WaitStatus::Signaled(_, signal, _), Some(log)) = (status, log) {
                    log.warning(
                        Line::new("killed")
                            .opt("client", client.map(audit::addr))
                            .field("pid", pid)
                            .field("signal", signal.as_str())
                            .as_str(),
                    );
                }
            }
        }
    }
}

/// Sends SIGTERM to every child, waits up to [`CHILD_GRACE`] for them,
/// then sends SIGKILL to any left and reaps them.
fn stop_children(children: &mut HashMap<Pid, SocketAddr>, signals: &SignalFd) {
    for &pid in children.keys() {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + CHILD_GRACE;
    while !children.is_empty() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX));
        while let Ok(Some(_)) = signals.read_signal() {}
        reap(children, None);
    }
    for &pid in children.keys() {
        let _ = kill(pid, Signal::SIGKILL);
    }
    for (pid, _) in children.drain() {
        let _ = waitpid(pid, None);
    }
}
