//! Starting the real binary each way it is started: a connection on stdin
//! (inetd), on fd 3 under LISTEN_FDS (a socket unit with Accept=yes),
//! `--listen`, and per connection under `systemd-socket-activate`; and
//! runs of its other modes (`--check-config`, `--explain`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::log::Log;
use super::net::{connect_req, connect_to, echo_dest, free_port, socket_pair, wait_listening};

/// How long a per-connection socks4d gets to exit once its exchange is
/// over.
pub const EXIT: Duration = Duration::from_secs(30);

/// The socks4d binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_socks4d"))
}

/// A running socks4d handling one connection, and the client end.
pub struct Server {
    pub child: Child,
    pub client: TcpStream,
}

/// A process that is killed (with its process group) when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // SAFETY: plain kill(2) on our own child and its group.
        unsafe {
            nix::libc::kill(-pid, nix::libc::SIGKILL);
            nix::libc::kill(pid, nix::libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Starts socks4d with the server end of a fresh connection on stdin
/// (inetd style). stderr is piped for `--log-stderr`.
pub fn spawn_stdin(args: &[&str]) -> Server {
    spawn_on(socket_pair(), args, &[])
}

/// Starts socks4d with the server end of `pair` on stdin, with extra
/// environment variables.
pub fn spawn_on(pair: (TcpStream, TcpStream), args: &[&str], env: &[(&str, String)]) -> Server {
    spawn_on_with(pair, args, env, |_| {})
}

/// As [`spawn_on`], with `setup` applied to the command first.
pub fn spawn_on_with(
    pair: (TcpStream, TcpStream),
    args: &[&str],
    env: &[(&str, String)],
    setup: impl FnOnce(&mut Command),
) -> Server {
    let (client, server) = pair;
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::from(OwnedFd::from(server)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    setup(&mut cmd);
    let child = cmd.spawn().expect("start socks4d");
    Server { child, client }
}

/// Starts socks4d the way systemd does with `Accept=yes`: the connection
/// on fd 3, LISTEN_FDS=1 and LISTEN_PID set to the new process's pid.
pub fn spawn_fd3(args: &[&str]) -> Server {
    let (client, server) = socket_pair();
    let child = spawn_with_fd3(OwnedFd::from(server), args);
    Server { child, client }
}

/// Starts socks4d with `fd` as fd 3 under LISTEN_FDS.
pub fn spawn_with_fd3(fd: OwnedFd, args: &[&str]) -> Child {
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    // sh's $$ is its own pid, which exec keeps: that is LISTEN_PID.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(bin())
        .args(args)
        .env("LISTEN_FDS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; fd stays open in the parent until
    // after spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set, and exec
            // would close the socket: clear the flag instead.
            let rc = if raw == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(raw, 3)
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start socks4d");
    drop(fd);
    child
}

/// Starts `socks4d --listen 127.0.0.1:PORT` plus `args` in its own process
/// group, waits until it listens, and returns its address.
pub fn spawn_listen(args: &[&str]) -> (Guard, SocketAddr) {
    spawn_listen_with(args, |_| {})
}

/// As [`spawn_listen`], with `setup` applied to the command first.
pub fn spawn_listen_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> (Guard, SocketAddr) {
    let (mut cmd, addr) = listen_command(args);
    setup(&mut cmd);
    let guard = Guard(cmd.spawn().expect("start socks4d --listen"));
    wait_listening(addr);
    (guard, addr)
}

/// The command `socks4d --listen 127.0.0.1:PORT` plus `args`, on a free
/// port, in a process group of its own, its stderr piped; and that
/// address.
pub fn listen_command(args: &[&str]) -> (Command, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("--listen")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    (cmd, addr)
}

/// Starts socks4d plus `args` under `systemd-socket-activate --inetd -a`
/// on a loopback port, in its own process group; returns it once the port
/// accepts.
pub fn spawn_activated(args: &[&str]) -> (Guard, SocketAddr) {
    spawn_activated_with(args, |_| {})
}

/// As [`spawn_activated`], with `setup` applied to the command first.
pub fn spawn_activated_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> (Guard, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["--inetd", "-a", "-l", &addr.to_string()])
        .arg(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    setup(&mut cmd);
    let guard = Guard(cmd.spawn().expect("start systemd-socket-activate"));
    wait_listening(addr);
    (guard, addr)
}

/// Waits for the process to exit, at most `limit`; kills it and panics if
/// it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    match wait_at_most(child, limit) {
        Some(status) => status,
        None => panic!("socks4d still running after {limit:?}"),
    }
}

/// The exit status, once the process has exited within `limit`; `None`
/// when it had not, and it has been killed.
fn wait_at_most(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for exit and returns the status and everything written to
/// stderr; kills it and panics with that text if it does not exit within
/// `limit`.
pub fn finish(server: &mut Server, limit: Duration) -> (ExitStatus, String) {
    match wait_at_most(&mut server.child, limit) {
        Some(status) => (status, stderr_of(&mut server.child)),
        None => panic!(
            "socks4d still running after {limit:?}:\n{}",
            stderr_so_far(&mut server.child)
        ),
    }
}

/// Everything the process wrote to its piped stderr, to the end.
pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// What the process's piped stderr holds now, without waiting for its end
/// (a process it started may still hold it open).
fn stderr_so_far(child: &mut Child) -> String {
    let Some(mut e) = child.stderr.take() else {
        return String::new();
    };
    let nonblocking = nix::fcntl::OFlag::O_NONBLOCK;
    let _ = nix::fcntl::fcntl(&e, nix::fcntl::FcntlArg::F_SETFL(nonblocking));
    let mut bytes = Vec::new();
    let _ = e.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What one request to a per-connection socks4d came to.
pub struct Exchange {
    /// The 8-byte reply; `None` when the connection ended without one.
    pub reply: Option<[u8; 8]>,
    /// From sending the request to the reply (or the end without one).
    pub took: Duration,
    pub status: ExitStatus,
    /// What it wrote to stderr (`--log-stderr`).
    pub log: String,
}

impl Exchange {
    /// The reply code; panics with the log when there was no reply.
    pub fn code(&self) -> u8 {
        match self.reply {
            Some(r) => r[1],
            None => panic!("no reply within {:?}:\n{}", self.took, self.log),
        }
    }
}

/// One request through socks4d started inetd style with `args`, after
/// `setup`: sends `request`, reads the reply, half-closes, and waits for
/// socks4d to exit (at most [`EXIT`]).
pub fn one_request(args: &[&str], request: &[u8], setup: impl FnOnce(&mut Command)) -> Exchange {
    let mut s = spawn_on_with(socket_pair(), args, &[], setup);
    let start = Instant::now();
    s.client.write_all(request).unwrap();
    let mut reply = [0u8; 8];
    let got = s.client.read_exact(&mut reply);
    let took = start.elapsed();
    let _ = s.client.shutdown(Shutdown::Write);
    let (status, log) = finish(&mut s, EXIT);
    Exchange {
        reply: got.ok().map(|()| reply),
        took,
        status,
        log,
    }
}

/// socks4d run with `args` and no connection (`--check-config`,
/// `--explain`, a usage error): its exit code (-1 for a signal), stdout
/// and stderr.
pub fn run_socks4d(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// socks4d `--listen` with its log collected as it comes.
pub struct Listening {
    guard: Guard,
    pub addr: SocketAddr,
    pub log: Log,
}

impl Listening {
    /// Started with `--ident off --log-stderr` and `args`.
    pub fn start(args: &[&str]) -> Listening {
        let mut a = vec!["--ident", "off", "--log-stderr"];
        a.extend_from_slice(args);
        Listening::with(&a, |_| {})
    }

    /// Started with exactly `args`, after `setup`.
    pub fn with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Listening {
        let (mut guard, addr) = spawn_listen_with(args, setup);
        let log = Log::of(&mut guard.0);
        Listening { guard, addr, log }
    }

    /// The --listen parent's pid.
    pub fn pid(&self) -> u32 {
        self.guard.0.id()
    }

    /// The --listen parent.
    pub fn child(&mut self) -> &mut Child {
        &mut self.guard.0
    }

    /// One CONNECT as `user`: the reply code and how long it took; `None`
    /// when the connection closed without one.
    pub fn connect(&self, user: &[u8]) -> (Option<u8>, Duration) {
        let dst = echo_dest();
        let mut c = connect_to(self.addr);
        let start = Instant::now();
        c.write_all(&connect_req(dst.addr, user)).unwrap();
        let mut reply = [0u8; 8];
        let code = c.read_exact(&mut reply).ok().map(|()| reply[1]);
        (code, start.elapsed())
    }

    /// The log once `pred` holds for it.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> String {
        self.log.wait_for(pred)
    }
}
