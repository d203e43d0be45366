//! Shared test harness: start the real binary with a client socket on
//! stdin, on fd 3 under LISTEN_FDS, or in --listen mode; play the SOCKS
//! client; run small destination servers.
#![allow(dead_code)]

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use socks4d::request::{encode, Command as Cd, Request};

/// Every test I/O wait is bounded by this, so a broken server fails a test
/// instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_socks4d"))
}

/// A running socks4d handling one connection, and the client end.
pub struct Server {
    pub child: Child,
    pub client: TcpStream,
}

/// A connected pair on loopback: (client end, server end).
pub fn socket_pair() -> (TcpStream, TcpStream) {
    socket_pair_at("127.0.0.1")
}

/// A connected pair whose server end is on `ip` (a loopback address).
pub fn socket_pair_at(ip: &str) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    (c, s)
}

/// A connected pair whose client end is bound to the loopback address
/// `src` and whose server end is on `ip`: socks4d, given the server end,
/// sees a client at `src` and asks `src`'s identd (see [`identd_listener`]).
pub fn socket_pair_from(src: Ipv4Addr, ip: &str) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let c = connect_from(src, l.local_addr().unwrap());
    let (s, _) = l.accept().unwrap();
    (c, s)
}

/// The port socks4d asks identification servers on: always 113.
pub const IDENT_PORT: u16 = 113;

/// A listener for a fake identification server: port 113 on a loopback
/// address of its own in 127.113.0.0/16, so that tests running at once,
/// in this process or another, each have one. A client that connects from
/// that address ([`socket_pair_from`], [`connect_from`]) is asked about
/// there. Binding port 113 needs root: `None` (a skip, or a failure under
/// CI, as [`require_root`]) without it.
pub fn identd_listener() -> Option<(TcpListener, Ipv4Addr)> {
    if !require_root() {
        return None;
    }
    for candidate in loopback_addresses(113) {
        match TcpListener::bind((candidate, IDENT_PORT)) {
            Ok(l) => return Some((l, candidate)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("bind {candidate}:{IDENT_PORT}: {e}"),
        }
    }
    panic!("no free port {IDENT_PORT} in 127.113.0.0/16");
}

/// A loopback address in 127.114.0.0/16, where no test listens on
/// anything: a client from there gets its ident query refused.
pub fn quiet_address() -> Ipv4Addr {
    loopback_addresses(114).next().unwrap()
}

/// Addresses 127.`second`.x.y, from a starting point that differs between
/// calls and between processes, each once.
fn loopback_addresses(second: u8) -> impl Iterator<Item = Ipv4Addr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const HOSTS: u32 = 254 * 254;
    let start = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 104_729);
    (0..HOSTS).map(move |i| {
        let n = start.wrapping_add(i) % HOSTS;
        Ipv4Addr::new(127, second, (n / 254 + 1) as u8, (n % 254 + 1) as u8)
    })
}

/// Starts socks4d with the server end of a fresh connection on stdin
/// (inetd style). stderr is piped for `--log-stderr`.
pub fn spawn_stdin(args: &[&str]) -> Server {
    spawn_stdin_with(args, &[])
}

/// As [`spawn_stdin`], with extra environment variables.
pub fn spawn_stdin_with(args: &[&str], env: &[(&str, String)]) -> Server {
    spawn_on(socket_pair(), args, env)
}

/// Starts socks4d with the server end of `pair` on stdin.
pub fn spawn_on(pair: (TcpStream, TcpStream), args: &[&str], env: &[(&str, String)]) -> Server {
    spawn_on_with(pair, args, env, |_| {})
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

/// Waits for the process to exit, at most `limit`; kills it and panics if
/// it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("socks4d still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for exit and returns the status and everything written to stderr.
pub fn finish(server: &mut Server, limit: Duration) -> (ExitStatus, String) {
    let status = wait_exit(&mut server.child, limit);
    (status, stderr_of(&mut server.child))
}

pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// The audit line of `event` (`decision`, `end`, ...) in `log`.
pub fn line<'a>(log: &'a str, event: &str) -> &'a str {
    let tag = format!("]: {event} ");
    log.lines()
        .find(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("no {event} line in log:\n{log}"))
}

/// A CONNECT request's bytes.
pub fn connect_req(dst: SocketAddr, user: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(v4) = dst else { panic!("IPv4 only") };
    encode(&Request {
        command: Cd::Connect,
        port: v4.port(),
        ip: *v4.ip(),
        userid: user.to_vec(),
        hostname: None,
    })
}

/// A SOCKS4a CONNECT request's bytes.
pub fn connect_4a(host: &str, port: u16, user: &[u8]) -> Vec<u8> {
    encode(&Request {
        command: Cd::Connect,
        port,
        ip: Ipv4Addr::new(0, 0, 0, 1),
        userid: user.to_vec(),
        hostname: Some(host.as_bytes().to_vec()),
    })
}

/// Reads the 8-byte reply.
pub fn read_reply(s: &mut TcpStream) -> [u8; 8] {
    let mut r = [0u8; 8];
    s.read_exact(&mut r).expect("read 8-byte reply");
    r
}

/// Reads to EOF. Panics on a reset or a timeout.
pub fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read to EOF");
    v
}

/// Sends `data` from another thread (then a half-close) while reading
/// what comes back to EOF: a relay test's exchange without a deadlock on
/// full socket buffers.
pub fn send_and_read(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let mut w = s.try_clone().expect("clone the client socket");
    let sent = data.to_vec();
    let writer = thread::spawn(move || {
        w.write_all(&sent).expect("send the payload");
        w.shutdown(Shutdown::Write).expect("half-close");
    });
    let back = read_all(s);
    writer.join().expect("the writer thread");
    back
}

/// The system user `name`, added with `useradd` when it is missing (tests
/// that run identd as root need a second local user).
pub fn system_user(name: &str) -> nix::unistd::User {
    if nix::unistd::User::from_name(name).unwrap().is_none() {
        let ok = Command::new("useradd")
            .args(["--system", "--no-create-home", name])
            .status()
            .unwrap();
        assert!(ok.success(), "useradd {name}");
    }
    nix::unistd::User::from_name(name).unwrap().unwrap()
}

/// True when the peer closed: EOF or reset, with no data.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// A destination on loopback that accepts one connection and hands it to
/// `f` on a thread.
pub struct Dest {
    pub addr: SocketAddr,
    pub handle: JoinHandle<()>,
}

pub fn dest<F: FnOnce(TcpStream) + Send + 'static>(f: F) -> Dest {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        f(s)
    });
    Dest { addr, handle }
}

/// A destination that echoes everything back, then closes its side.
pub fn echo_dest() -> Dest {
    dest(echo)
}

/// Echoes everything back, then closes the sending side.
pub fn echo(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// An echo server for any number of connections, for the test's life.
pub fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            thread::spawn(move || echo(s));
        }
    });
    addr
}

/// Connects from the loopback address `src`, with test timeouts.
pub fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let deadline = socks4d::net::Deadline::after(IO_TIMEOUT);
    let s = socks4d::net::connect(to, Some(SocketAddr::new(src.into(), 0)), deadline).unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// An address where nothing listens, and nothing will while the tests
/// run: a socket bound there and never listening holds the port (a
/// connection to it is refused), so that no other test's listener takes
/// it meanwhile.
pub fn closed_port() -> SocketAddr {
    use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    let bound: SockaddrIn = getsockname(fd.as_raw_fd()).unwrap();
    // Held for the rest of the process.
    std::mem::forget(fd);
    SocketAddr::from(([127, 0, 0, 1], bound.port()))
}

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// FNV-1a, enough to tell that two large buffers match.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Skips a test whose outside program is missing, or fails it under CI,
/// where .ci/run installs it.
pub fn require(program: &str) -> bool {
    if have(program) {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{program} is not installed; .ci/run should install it");
    }
    eprintln!("SKIPPED: {program} is not installed");
    false
}

/// Finds a free loopback port (bind, read, close).
/// A port free now, for a server a test starts (it may be taken by
/// another meanwhile: the server's start then fails, and the test says
/// so).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts on `addr`.
pub fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(start.elapsed() < IO_TIMEOUT, "nothing listening on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
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

/// Starts `socks4d --listen 127.0.0.1:PORT` plus `args` in its own process
/// group, waits until it listens, and returns its address.
pub fn spawn_listen(args: &[&str]) -> (Guard, SocketAddr) {
    spawn_listen_with(args, |_| {})
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

/// Connects to a proxy at `addr`, with test timeouts.
pub fn connect_to(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Whether this test process runs as root (needed for namespaces, other
/// users and limits on other processes). Outside CI, tests that need it
/// skip; CI runs as root, so there they fail instead.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test needs root, and CI runs as root");
    }
    eprintln!("SKIPPED: needs root");
    false
}

/// A syslog daemon of the test's own: a datagram socket that collects
/// lines, and can stop reading, as a stuck journald or rsyslogd does.
/// Programs reach it through [`private_dev`], which puts it at /dev/log.
pub struct FakeSyslog {
    pub path: PathBuf,
    state: std::sync::Arc<SyslogState>,
    _dir: PathBuf,
}

struct SyslogState {
    lines: std::sync::Mutex<Vec<String>>,
    reading: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    socket: std::sync::Mutex<Option<std::os::unix::net::UnixDatagram>>,
}

/// What fills a stalled logger's queue; never a socks4d line.
const FILLER: &[u8] = b"<14>filler";

impl FakeSyslog {
    pub fn start() -> FakeSyslog {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("socks4d-syslog-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let state = std::sync::Arc::new(SyslogState {
            lines: std::sync::Mutex::new(Vec::new()),
            reading: std::sync::atomic::AtomicBool::new(true),
            stop: std::sync::atomic::AtomicBool::new(false),
            socket: std::sync::Mutex::new(None),
        });
        let s = FakeSyslog { path, state, _dir: dir };
        s.bind();
        let state = s.state.clone();
        thread::spawn(move || {
            use std::sync::atomic::Ordering::SeqCst;
            let mut buf = vec![0u8; 64 * 1024];
            while !state.stop.load(SeqCst) {
                let sock = state.socket.lock().unwrap().as_ref().map(|s| s.try_clone().unwrap());
                let (Some(sock), true) = (sock, state.reading.load(SeqCst)) else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if let Ok(n) = sock.recv(&mut buf) {
                    if &buf[..n] != FILLER {
                        let text = String::from_utf8_lossy(&buf[..n])
                            .trim_end_matches(['\0', '\n'])
                            .to_string();
                        state.lines.lock().unwrap().push(text);
                    }
                }
            }
        });
        s
    }

    /// Binds a new socket at the path, as a restarted logger does.
    fn bind(&self) {
        let _ = std::fs::remove_file(&self.path);
        let sock = std::os::unix::net::UnixDatagram::bind(&self.path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        // Writable for the unprivileged users socks4d runs as.
        std::fs::set_permissions(&self.path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        *self.state.socket.lock().unwrap() = Some(sock);
    }

    /// Stops reading and fills the socket's queue, so that a sender finds
    /// no room: the state of a stuck logger.
    pub fn stall(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.reading.store(false, SeqCst);
        // Longer than one receive wait of the reader.
        thread::sleep(Duration::from_millis(100));
        let filler = std::os::unix::net::UnixDatagram::unbound().unwrap();
        filler.connect(&self.path).unwrap();
        filler.set_nonblocking(true).unwrap();
        let mut sent = 0;
        while filler.send(FILLER).is_ok() {
            sent += 1;
            assert!(sent < 100_000, "the log socket's queue never fills");
        }
    }

    /// Reads again.
    pub fn resume(&self) {
        self.state.reading.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Goes away and comes back on a new socket, as a restarted daemon
    /// does; senders connected to the old one get ECONNREFUSED.
    pub fn restart(&self) {
        *self.state.socket.lock().unwrap() = None;
        self.bind();
    }

    /// Every line so far, one per line.
    pub fn text(&self) -> String {
        self.state.lines.lock().unwrap().join("\n")
    }

    /// Waits until `pred` holds for the lines so far, at most `limit`.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if pred(&text) {
                return text;
            }
            assert!(start.elapsed() < limit, "log never got there:\n{text}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeSyslog {
    fn drop(&mut self) {
        self.state.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// Runs `cmd` in a mount namespace of its own with a /dev of its own: a
/// tmpfs holding null, zero, full, random and urandom, and /dev/log as a
/// symbolic link to `log` (no /dev/log at all when `None`). Needs root.
/// Whatever the command starts shares that namespace.
pub fn private_dev(cmd: &mut Command, log: Option<&std::path::Path>) {
    use std::ffi::CString;
    let c = |s: &str| CString::new(s).unwrap();
    let (root, dev, tmpfs, mode) = (c("/"), c("/dev"), c("tmpfs"), c("mode=755"));
    let devlog = c("/dev/log");
    let target = log.map(|p| CString::new(p.as_os_str().as_encoded_bytes()).unwrap());
    let nodes: Vec<(CString, u32, u32)> = [("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)]
        .iter()
        .map(|(name, minor)| (c(&format!("/dev/{name}")), 1, *minor))
        .collect();
    // SAFETY: only async-signal-safe system calls on memory made before
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            let check = |rc: libc::c_int| {
                if rc < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                dev.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                mode.as_ptr().cast(),
            ))?;
            for (path, major, minor) in &nodes {
                check(libc::mknod(
                    path.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(*major, *minor),
                ))?;
                check(libc::chmod(path.as_ptr(), 0o666))?;
            }
            if let Some(t) = &target {
                check(libc::symlink(t.as_ptr(), devlog.as_ptr()))?;
            }
            Ok(())
        });
    }
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

/// As [`spawn_listen`], with `setup` applied to the command first.
pub fn spawn_listen_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> (Guard, SocketAddr) {
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
    setup(&mut cmd);
    let guard = Guard(cmd.spawn().expect("start socks4d --listen"));
    wait_listening(addr);
    (guard, addr)
}

/// Sets a resource limit (soft and hard) for the command's process.
pub fn rlimit(cmd: &mut Command, resource: nix::sys::resource::Resource, value: u64) {
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || nix::sys::resource::setrlimit(resource, value, value).map_err(io::Error::from));
    }
}

/// Children of `pid` now alive (zombies left out).
pub fn live_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) && fields[0] != "Z" {
            out.push(entry.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    out
}

/// Runs the command in a mount namespace of its own where `conf` is
/// /etc/resolv.conf.
pub fn bind_resolv_conf(cmd: &mut std::process::Command, conf: &std::path::Path) {
    use std::ffi::CString;
    let src = CString::new(conf.as_os_str().as_encoded_bytes()).unwrap();
    let (root, target) = (CString::new("/").unwrap(), CString::new("/etc/resolv.conf").unwrap());
    // SAFETY: only system calls on memory made before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            use nix::libc;
            let null = std::ptr::null();
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(null, root.as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, null.cast()) != 0
                || libc::mount(src.as_ptr(), target.as_ptr(), null, libc::MS_BIND, null.cast()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
/// socks4d `--listen` with its log collected as it comes.
pub struct Listening {
    _guard: Guard,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Listening {
    /// Started with `--ident off --log-stderr` and `args`.
    pub fn start(args: &[&str]) -> Listening {
        let mut a = vec!["--ident", "off", "--log-stderr"];
        a.extend_from_slice(args);
        let (mut guard, addr) = spawn_listen(&a);
        let mut err = guard.0.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Listening {
            _guard: guard,
            addr,
            log,
        }
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

    /// The log once `pred` holds for it, within 30 seconds.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let log = self.log.lock().unwrap().clone();
            if pred(&log) {
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the log never matched:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Collects a `--listen` socks4d's stderr lines, as they come.
pub fn collect(guard: &mut Guard) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = guard.0.stderr.take().unwrap();
    let sink = log.clone();
    thread::spawn(move || {
        for line in io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    log
}

/// Runs `cmd` in a mount namespace whose /etc/hosts is `hosts`.
pub fn private_hosts(cmd: &mut Command, hosts: &std::path::Path) {
    use std::ffi::CString;
    let (root, target) = (CString::new("/").unwrap(), CString::new("/etc/hosts").unwrap());
    let source = CString::new(hosts.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: only async-signal-safe system calls on memory made before
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            let check = |rc: libc::c_int| {
                if rc < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            let null = std::ptr::null();
            check(libc::mount(
                null,
                root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null.cast(),
            ))?;
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                null,
                libc::MS_BIND,
                null.cast(),
            ))
        });
    }
}
