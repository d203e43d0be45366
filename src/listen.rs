//! Serving listening sockets: those of `--listen`, or those passed by a
//! socket unit with `Accept=no` or by inetd's `wait`. One forked child per
//! connection, which confines itself and runs the same handler as inetd
//! and socket-unit modes.

use std::collections::HashSet;
use std::net::TcpListener;
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
use crate::rules::Loaded;
use crate::session;

/// How long children get to finish after SIGTERM before SIGKILL.
const CHILD_GRACE: Duration = Duration::from_secs(5);

/// Binds the `--listen` addresses.
pub fn bind(cfg: &Config) -> Result<Vec<TcpListener>> {
    cfg.listen
        .iter()
        .map(|addr| TcpListener::bind(addr).with_context(|| format!("listen on {addr}")))
        .collect()
}

/// Serves `listeners` until SIGTERM or SIGINT. Children are reaped as
/// they exit; at most `cfg.max_children` run at once, and a connection
/// over the cap is closed at once and logged. On a stop signal the
/// listening sockets are closed, the children are sent SIGTERM and waited
/// for, and the function returns.
pub fn serve(listeners: Vec<TcpListener>, cfg: &Config, rules: &Loaded, log: &Log) -> Result<()> {
    for l in &listeners {
        l.set_nonblocking(true).context("set listener non-blocking")?;
    }
    // The ports are bound; children need no more than `--user`, and each
    // confines itself further with this plan, made once here.
    crate::privilege::drop_root(&cfg.user)?;
    let plan = confine::Plan::new(cfg);

    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(s);
    }
    mask.thread_block().context("block signals")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")?;

    for l in &listeners {
        if let Ok(a) = l.local_addr() {
            log.info(Line::new("listening").field("addr", audit::addr(a)).as_str());
        }
    }

    let mut children: HashSet<Pid> = HashSet::new();
    loop {
        let mut fds: Vec<PollFd> = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        fds.extend(listeners.iter().map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN)));
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }

        let mut stop = false;
        while let Ok(Some(info)) = signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo == Signal::SIGTERM as i32 || signo == Signal::SIGINT as i32 {
                stop = true;
            }
        }
        reap(&mut children);
        if stop {
            break;
        }

        // Accept everything waiting (the listeners are non-blocking), one
        // connection at a time: a child must not inherit the sockets of
        // other clients, or a connection refused here would stay open
        // until that child ends.
        while let Some((stream, peer)) = listeners.iter().find_map(|l| l.accept().ok()) {
            if children.len() >= cfg.max_children {
                log.warning(
                    Line::new("refused")
                        .field("client", audit::addr(peer))
                        .field("reason", "max-children")
                        .field("limit", cfg.max_children)
                        .as_str(),
                );
                continue; // dropping the stream closes it
            }
            // SAFETY: this process is single-threaded here (no resolver
            // thread runs in the parent), so the child may run any code.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    drop(listeners);
                    drop(signals);
                    let _ = mask.thread_unblock();
                    log.after_fork();
                    plan.enter().log(log);
                    let local = stream.local_addr().unwrap_or(peer);
                    session::handle(stream, peer, local, cfg, rules, log);
                    std::process::exit(0);
                }
                Ok(ForkResult::Parent { child }) => {
                    children.insert(child);
                }
                Err(e) => {
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

/// Collects every child that has exited.
fn reap(children: &mut HashSet<Pid>) {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    children.remove(&pid);
                }
            }
        }
    }
}

/// Sends SIGTERM to every child, waits up to [`CHILD_GRACE`] for them,
/// then sends SIGKILL to any left and reaps them.
fn stop_children(children: &mut HashSet<Pid>, signals: &SignalFd) {
    for &pid in children.iter() {
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
        reap(children);
    }
    for &pid in children.iter() {
        let _ = kill(pid, Signal::SIGKILL);
    }
    for pid in children.drain() {
        let _ = waitpid(pid, None);
    }
}
