//! The parents a chain file names, spoken to for real (src/parent.rs):
//! Dante (Debian's dante-server) in SOCKS4, SOCKS4a and SOCKS5, without
//! authentication and with a user and password; a second socks4d; and
//! tinyproxy's HTTP CONNECT. Each runs on loopback with a configuration
//! of the test's own, on a free port, in a process group the test kills;
//! no test uses a system-wide instance. Then the walk over a list of
//! parents: a dead first parent passed over for the second, a refusing
//! parent final, one that speaks another protocol passed over, one that
//! says nothing timed out.
//!
//! Each test makes the request through the library's functions, over a
//! connection from this process, and checks what a client of socks4d
//! would get: the relayed bytes, the parent's answer as the audit line's
//! `detail=` would carry it, and what the parent logged.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socks4d::net::Deadline;
use socks4d::parent::{self, Ask, Call, Credentials, Failed, Hop, Protocol, Target};
use socks4d::request::Command as Cd;

/// A directory of root's for one test's files (0755, under the sticky
/// temp dir, so that socks4d believes a rules file in it), removed when
/// dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("socks4d-chain-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// A daemon of the test's own: killed with its process group when
/// dropped; its log file, for messages.
struct Daemon {
    _guard: Guard,
    addr: SocketAddr,
    log: PathBuf,
    _dir: Scratch,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `text`, within [`IO_TIMEOUT`].
    fn wait_log(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(start.elapsed() < IO_TIMEOUT, "no {text:?} in the log:\n{log}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Dante's server on a free loopback port with `method` (`none` or
/// `username`), refusing connections to 127.0.0.1 port `blocked`. `None`
/// (a skip, or a failure under CI) without root or danted.
fn dante(tag: &str, method: &str, blocked: u16) -> Option<Daemon> {
    if !require_root() || !require("danted") {
        return None;
    }
    let dir = Scratch::new(tag);
    let port = free_port();
    let log = dir.join("danted.log");
    let conf = dir.join("danted.conf");
    write(
        &conf,
        &format!(
            "logoutput: {log}\n\
             internal: 127.0.0.1 port = {port}\n\
             external: 127.0.0.1\n\
             clientmethod: none\n\
             socksmethod: {method}\n\
             user.privileged: root\n\
             user.unprivileged: nobody\n\
             client pass {{\n from: 127.0.0.0/8 to: 0.0.0.0/0\n}}\n\
             socks block {{\n from: 0.0.0.0/0 to: 127.0.0.1/32 port = {blocked}\n log: error\n}}\n\
             socks pass {{\n from: 0.0.0.0/0 to: 0.0.0.0/0\n command: bind connect bindreply\n log: connect error\n}}\n",
            log = log.display()
        ),
    );
    let mut cmd = Command::new("danted");
    cmd.arg("-f")
        .arg(&conf)
        .arg("-p")
        .arg(dir.join("danted.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let guard = Guard(cmd.spawn().expect("start danted"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr);
    Some(Daemon {
        _guard: guard,
        addr,
        log,
        _dir: dir,
    })
}

/// tinyproxy on a free loopback port, allowing CONNECT to `port` only.
fn tinyproxy(tag: &str, port: u16) -> Option<Daemon> {
    if !require_root() || !require("tinyproxy") {
        return None;
    }
    let dir = Scratch::new(tag);
    let listen = free_port();
    let log = dir.join("tinyproxy.log");
    let conf = dir.join("tinyproxy.conf");
    write(
        &conf,
        &format!(
            "User nobody\nGroup nogroup\nPort {listen}\nListen 127.0.0.1\nTimeout 30\nLogLevel Info\n\
             MaxClients 20\nAllow 127.0.0.1\nConnectPort {port}\nDisableViaHeader Yes\n"
        ),
    );
    let mut cmd = Command::new("tinyproxy");
    cmd.arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::null())
        .process_group(0);
    let guard = Guard(cmd.spawn().expect("start tinyproxy"));
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    wait_listening(addr);
    Some(Daemon {
        _guard: guard,
        addr,
        log,
        _dir: dir,
    })
}

/// A second socks4d, `--listen` on loopback, with `rules`.
struct Socks4d {
    log: Listening,
    addr: SocketAddr,
    _dir: Scratch,
}

fn socks4d(tag: &str, rules: &str) -> Socks4d {
    let dir = Scratch::new(tag);
    let file = dir.join("socks4d.conf");
    write(&file, rules);
    let p = Listening::start(&["-f", file.to_str().unwrap()]);
    let log = p.wait_log(|l| l.contains("listening addr="));
    let addr = log
        .lines()
        .find_map(|l| l.split("listening addr=").nth(1))
        .and_then(|a| a.trim().parse().ok())
        .expect("socks4d's listening line");
    Socks4d {
        log: p,
        addr,
        _dir: dir,
    }
}

fn deadline() -> Deadline {
    Deadline::after(IO_TIMEOUT)
}

/// `ask` put to `parents` in order, from the kernel's choice of source.
fn open(ask: &Ask<'_>, parents: &[SocketAddr]) -> Result<Hop, Failed> {
    parent::open(ask, parents, |_| None, deadline())
}

fn connect_ask<'a>(protocol: Protocol, target: Target<'a>, credentials: Option<&'a Credentials>) -> Ask<'a> {
    Ask {
        protocol,
        command: Cd::Connect,
        target,
        user: b"alice",
        credentials,
    }
}

/// The parent's connection made blocking, with test timeouts, for the
/// test to play the relay on.
fn blocking(hop: &Hop) -> TcpStream {
    let s = hop.stream.try_clone().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Sends a payload through `hop` to an echo server and reads it back:
/// the relay through the parent carries every byte both ways. (Without a
/// half-close: tinyproxy ends both directions at the first end of
/// stream.)
fn echoes(hop: Hop) {
    let mut s = blocking(&hop);
    let data = payload(200_000, 7);
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = thread::spawn(move || w.write_all(&sent).unwrap());
    let back = read_n(&mut s, &hop.opened.early, data.len());
    writer.join().unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(checksum(&back), checksum(&data));
}

/// A destination that greets first, then echoes one line: what a
/// client of an SMTP or SSH server through the parent must see first.
fn greeting_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            thread::spawn(move || {
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let _ = s.write_all(b"220 greeting\r\n");
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    let _ = s.write_all(&buf[..n]);
                }
            });
        }
    });
    addr
}

/// Reads from `s` until `want` bytes came (or EOF), after `early`.
fn read_n(s: &mut TcpStream, early: &[u8], want: usize) -> Vec<u8> {
    let mut got = early.to_vec();
    let mut buf = [0u8; 16 * 1024];
    while got.len() < want {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e} after {got:?}"),
        }
    }
    got
}

fn refused_detail(result: Result<Hop, Failed>) -> String {
    match result {
        Err(Failed::Refused(detail)) => detail,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn dante_socks4_connect_relay_and_refuse() {
    let blocked = closed_port();
    let Some(d) = dante("d4", "none", blocked.port()) else {
        return;
    };
    let echo = echo_server();
    let hop = open(&connect_ask(Protocol::Socks4, Target::Addr(echo), None), &[d.addr]).unwrap();
    assert_eq!(hop.parent, d.addr);
    // SOCKS4's reply carries the address the parent connected from.
    assert_eq!(hop.opened.bound.map(|a| a.ip()), Some(Ipv4Addr::LOCALHOST.into()));
    echoes(hop);
    // Dante's server does not take SOCKS4a names: it connects to the
    // marker address 0.0.0.1 itself, fails, and says 5b (socks4d.conf(5)
    // says to use socks5 with Dante).
    let detail = refused_detail(open(
        &connect_ask(Protocol::Socks4a, Target::Name("localhost", echo.port()), None),
        &[d.addr],
    ));
    assert!(detail.ends_with("SOCKS4 reply 0x5b (rejected or failed)"), "{detail}");
    d.wait_log("connect(2) to 0.0.0.1.");
    // Dante's rule refuses: 91 for the client, with the parent's answer.
    let detail = refused_detail(open(
        &connect_ask(Protocol::Socks4, Target::Addr(blocked), None),
        &[d.addr],
    ));
    assert_eq!(
        detail,
        format!("parent {} refused: SOCKS4 reply 0x5b (rejected or failed)", d.addr)
    );
    // A plain SOCKS4 parent is not asked for a name, nor for IPv6: nothing
    // is sent, not even a connection made.
    for target in [Target::Name("localhost", 9), Target::Addr("[::1]:9".parse().unwrap())] {
        match open(&connect_ask(Protocol::Socks4, target, None), &[closed_port()]) {
            Err(Failed::Unusable(why)) => assert!(why.starts_with("sockd parent: cannot ask: "), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn dante_socks5_connect_by_address_and_name_and_refuse() {
    let blocked = closed_port();
    let Some(d) = dante("d5", "none", blocked.port()) else {
        return;
    };
    let echo = echo_server();
    let hop = open(&connect_ask(Protocol::Socks5, Target::Addr(echo), None), &[d.addr]).unwrap();
    assert_eq!(hop.opened.bound.map(|a| a.ip()), Some(Ipv4Addr::LOCALHOST.into()));
    echoes(hop);
    let hop = open(
        &connect_ask(Protocol::Socks5, Target::Name("localhost", echo.port()), None),
        &[d.addr],
    )
    .unwrap();
    echoes(hop);
    let detail = refused_detail(open(
        &connect_ask(Protocol::Socks5, Target::Addr(blocked), None),
        &[d.addr],
    ));
    assert_eq!(
        detail,
        format!(
            "parent {} refused: SOCKS5 reply 0x02 (connection not allowed by ruleset)",
            d.addr
        )
    );
    // A destination that refuses the parent's connection: the parent says
    // so, and that is its answer too.
    let closed = closed_port();
    let detail = refused_detail(open(
        &connect_ask(Protocol::Socks5, Target::Addr(closed), None),
        &[d.addr],
    ));
    assert!(detail.ends_with("SOCKS5 reply 0x05 (connection refused)"), "{detail}");
    // The destination's first bytes, sent before the client said anything,
    // reach the client first.
    let greet = greeting_server();
    let hop = open(&connect_ask(Protocol::Socks5, Target::Addr(greet), None), &[d.addr]).unwrap();
    let mut s = blocking(&hop);
    let got = read_n(&mut s, &hop.opened.early, 14);
    assert_eq!(got, b"220 greeting\r\n");
}

/// Dante's `username` method checks the system's users: a user of the
/// test's own, who cannot log in, with a password for the test's length.
const PARENT_USER: &str = "socks4d-chain";
const PARENT_PASSWORD: &str = "chain:pass word";

/// [`PARENT_USER`] with [`PARENT_PASSWORD`]; the password is locked again
/// when dropped.
struct ParentUser;

impl ParentUser {
    fn new() -> ParentUser {
        if nix::unistd::User::from_name(PARENT_USER).unwrap().is_none() {
            let made = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PARENT_USER,
                ])
                .status()
                .unwrap();
            assert!(made.success(), "useradd {PARENT_USER}");
        }
        let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
        writeln!(chpasswd.stdin.take().unwrap(), "{PARENT_USER}:{PARENT_PASSWORD}").unwrap();
        assert!(chpasswd.wait().unwrap().success());
        ParentUser
    }
}

impl Drop for ParentUser {
    fn drop(&mut self) {
        let _ = Command::new("passwd")
            .args(["--lock", PARENT_USER])
            .stdout(Stdio::null())
            .status();
    }
}

#[test]
fn dante_socks5_user_and_password() {
    let Some(d) = dante("d5u", "username", closed_port().port()) else {
        return;
    };
    let _user = ParentUser::new();
    let echo = echo_server();
    let good = Credentials {
        user: PARENT_USER.as_bytes().to_vec(),
        password: PARENT_PASSWORD.as_bytes().to_vec(),
    };
    let hop = open(
        &connect_ask(Protocol::Socks5, Target::Addr(echo), Some(&good)),
        &[d.addr],
    )
    .unwrap();
    echoes(hop);
    let wrong = Credentials {
        user: PARENT_USER.as_bytes().to_vec(),
        password: b"not it".to_vec(),
    };
    let detail = refused_detail(open(
        &connect_ask(Protocol::Socks5, Target::Addr(echo), Some(&wrong)),
        &[d.addr],
    ));
    assert_eq!(
        detail,
        format!(
            "parent {} refused: SOCKS5 user/password not accepted (status 0x01)",
            d.addr
        )
    );
    // Without credentials the parent has no method to take.
    let detail = refused_detail(open(
        &connect_ask(Protocol::Socks5, Target::Addr(echo), None),
        &[d.addr],
    ));
    assert_eq!(
        detail,
        format!("parent {} refused: SOCKS5 no acceptable method (offered none)", d.addr)
    );
    let log = d.log();
    assert!(!log.contains(PARENT_PASSWORD), "{log}");
}

/// BIND through `parent` in `protocol`: the first reply names where the
/// parent listens; the application server calls there and sends a line;
/// the second reply names the caller; the line follows; and the client
/// can answer.
fn bind_through(protocol: Protocol, parent: SocketAddr) {
    // The server's address the parent is told to expect: this host.
    let expect: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let ask = Ask {
        protocol,
        command: Cd::Bind,
        target: Target::Addr(expect),
        user: b"alice",
        credentials: None,
    };
    let hop = open(&ask, &[parent]).unwrap();
    let listening = hop.opened.bound.expect("where the parent listens");
    assert_eq!(listening.ip(), Ipv4Addr::LOCALHOST);
    assert_ne!(listening.port(), 0);
    let server = thread::spawn(move || {
        let mut s = TcpStream::connect(listening).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"150 data follows\r\n").unwrap();
        let mut answer = [0u8; 6];
        s.read_exact(&mut answer).unwrap();
        (s.local_addr().unwrap(), answer)
    });
    // The client of socks4d, watched while waiting.
    let (_client, watched) = socket_pair();
    watched.set_nonblocking(true).unwrap();
    let call = parent::await_call(protocol, &hop.stream, &hop.opened.early, &watched, deadline()).unwrap();
    let Call::Called(opened) = call else { panic!("{call:?}") };
    let mut s = blocking(&hop);
    let line = read_n(&mut s, &opened.early, 18);
    assert_eq!(line, b"150 data follows\r\n");
    s.write_all(b"thanks").unwrap();
    let (caller, answer) = server.join().unwrap();
    assert_eq!(&answer, b"thanks");
    // The second reply names the caller (its address; Dante and socks4d
    // give its port too).
    assert_eq!(opened.bound.map(|a| a.ip()), Some(caller.ip()), "{protocol:?}");
}

#[test]
fn dante_bind_in_socks4_and_socks5() {
    let Some(d) = dante("db", "none", closed_port().port()) else {
        return;
    };
    bind_through(Protocol::Socks4, d.addr);
    bind_through(Protocol::Socks5, d.addr);
}

#[test]
fn a_client_that_leaves_during_the_parents_bind_ends_the_wait() {
    let Some(d) = dante("dbg", "none", closed_port().port()) else {
        return;
    };
    let ask = Ask {
        protocol: Protocol::Socks5,
        command: Cd::Bind,
        target: Target::Addr("127.0.0.1:0".parse().unwrap()),
        user: b"",
        credentials: None,
    };
    let hop = open(&ask, &[d.addr]).unwrap();
    let (client, watched) = socket_pair();
    watched.set_nonblocking(true).unwrap();
    drop(client);
    let call = parent::await_call(Protocol::Socks5, &hop.stream, &hop.opened.early, &watched, deadline()).unwrap();
    assert!(
        matches!(&call, Call::ClientGone(why) if why == "client closed"),
        "{call:?}"
    );
}

#[test]
fn a_second_socks4d_as_parent() {
    let blocked = closed_port();
    let echo = echo_server();
    let p = socks4d(
        "s4",
        &format!("deny 0/0 0/0 eq {}\npermit 127.0.0.0/8\n", blocked.port()),
    );
    let parent_addr = p.addr;
    let hop = open(&connect_ask(Protocol::Socks4, Target::Addr(echo), None), &[parent_addr]).unwrap();
    echoes(hop);
    let hop = open(
        &connect_ask(Protocol::Socks4a, Target::Name("localhost", echo.port()), None),
        &[parent_addr],
    )
    .unwrap();
    echoes(hop);
    let detail = refused_detail(open(
        &connect_ask(Protocol::Socks4, Target::Addr(blocked), None),
        &[parent_addr],
    ));
    assert_eq!(
        detail,
        format!("parent {parent_addr} refused: SOCKS4 reply 0x5b (rejected or failed)")
    );
    // The parent's own audit line: the user-id passed on, and its rule.
    let log = p.log.wait_log(|l| l.contains("reason=denied"));
    let denied = log.lines().find(|l| l.contains("reason=denied")).unwrap();
    assert!(
        denied.contains(r#"user="alice""#) && denied.contains(&format!("dst={blocked}")),
        "{denied}"
    );
    assert!(log.contains(r#"host="localhost""#), "{log}");
    bind_through(Protocol::Socks4, parent_addr);
}

#[test]
fn tinyproxy_connect_keeps_the_first_bytes_and_refuses_with_its_status_line() {
    let greet = greeting_server();
    let Some(t) = tinyproxy("tp", greet.port()) else { return };
    let hop = open(&connect_ask(Protocol::Http, Target::Addr(greet), None), &[t.addr]).unwrap();
    assert_eq!(hop.opened.bound, None);
    let mut s = blocking(&hop);
    let got = read_n(&mut s, &hop.opened.early, 14);
    assert_eq!(got, b"220 greeting\r\n");
    s.write_all(b"ping\r\n").unwrap();
    assert_eq!(read_n(&mut s, &[], 6), b"ping\r\n");
    // By name: the parent resolves it.
    let hop = open(
        &connect_ask(Protocol::Http, Target::Name("localhost", greet.port()), None),
        &[t.addr],
    )
    .unwrap();
    let mut s = blocking(&hop);
    assert_eq!(read_n(&mut s, &hop.opened.early, 14), b"220 greeting\r\n");
    // A port tinyproxy does not allow: its 403, as it said it.
    let detail = refused_detail(open(
        &connect_ask(Protocol::Http, Target::Addr(echo_server()), None),
        &[t.addr],
    ));
    assert_eq!(
        detail,
        format!("parent {} refused: HTTP/1.1 403 Access violation", t.addr)
    );
    // BIND: refused before any parent is connected to.
    let ask = Ask {
        protocol: Protocol::Http,
        command: Cd::Bind,
        target: Target::Addr("127.0.0.1:0".parse().unwrap()),
        user: b"",
        credentials: None,
    };
    match open(&ask, &[t.addr]) {
        Err(Failed::Unusable(why)) => assert!(why.contains("cannot BIND"), "{why}"),
        other => panic!("{other:?}"),
    }
    t.wait_log("CONNECT 127.0.0.1:");
}

#[test]
fn a_name_that_could_add_a_header_is_not_sent() {
    // A listener that records whatever reaches it: nothing must.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let hostile = "x.example\r\nProxy-Authorization: Basic Zm9vOmJhcg==";
    for protocol in [Protocol::Http, Protocol::Socks5, Protocol::Socks4a] {
        match open(
            &connect_ask(protocol, Target::Name(hostile, 443), None),
            &[l.local_addr().unwrap()],
        ) {
            Err(Failed::Unusable(why)) => assert!(why.contains("is not a host name"), "{why}"),
            other => panic!("{protocol:?}: {other:?}"),
        }
    }
    assert!(l.accept().is_err(), "a connection reached the parent");
}

#[test]
fn a_dead_first_parent_falls_over_to_the_second() {
    let Some(d) = dante("dfo", "none", closed_port().port()) else {
        return;
    };
    let echo = echo_server();
    let dead = closed_port();
    let hop = open(
        &connect_ask(Protocol::Socks5, Target::Addr(echo), None),
        &[dead, d.addr],
    )
    .unwrap();
    assert_eq!(hop.parent, d.addr);
    echoes(hop);
    // All dead: each named, with why.
    let (a, b) = (closed_port(), closed_port());
    match open(&connect_ask(Protocol::Socks5, Target::Addr(echo), None), &[a, b]) {
        Err(f @ Failed::Unreached(_)) => {
            assert_eq!(f.reason(), "parent-failed");
            assert_eq!(
                f.detail(),
                format!("parent {a}: Connection refused (os error 111); parent {b}: Connection refused (os error 111)")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refusing_parent_is_final_and_the_next_is_not_asked() {
    let blocked = closed_port();
    let p = socks4d(
        "s4r",
        &format!("deny 0/0 0/0 eq {}\npermit 127.0.0.0/8\n", blocked.port()),
    );
    let parent_addr = p.addr;
    let next = TcpListener::bind("127.0.0.1:0").unwrap();
    next.set_nonblocking(true).unwrap();
    let dead = closed_port();
    let result = open(
        &connect_ask(Protocol::Socks4, Target::Addr(blocked), None),
        &[dead, parent_addr, next.local_addr().unwrap()],
    );
    let Err(f) = result else { panic!("granted") };
    assert_eq!(f.reason(), "parent-refused");
    assert_eq!(
        f.detail(),
        format!(
            "parent {dead}: Connection refused (os error 111); parent {parent_addr} refused: SOCKS4 reply 0x5b \
             (rejected or failed)"
        )
    );
    assert!(next.accept().is_err(), "the parent after the refusing one was asked");
}

#[test]
fn a_parent_that_speaks_another_protocol_is_passed_over() {
    let echo = echo_server();
    let Some(d) = dante("dx", "none", closed_port().port()) else {
        return;
    };
    let Some(t) = tinyproxy("tpx", echo.port()) else { return };
    // Dante, asked for an HTTP CONNECT, closes: not a parent of this
    // line's protocol, so the next is asked.
    let hop = open(
        &connect_ask(Protocol::Http, Target::Addr(echo), None),
        &[d.addr, t.addr],
    )
    .unwrap();
    assert_eq!(hop.parent, t.addr);
    echoes(hop);
    match open(&connect_ask(Protocol::Http, Target::Addr(echo), None), &[d.addr]) {
        Err(Failed::Unreached(why)) => {
            assert_eq!(why, format!("parent {}: closed before its HTTP response", d.addr))
        }
        other => panic!("{other:?}"),
    }
    // socks4d, asked in SOCKS5, answers as it answers every SOCKS5
    // client: no acceptable method. That is an answer, and final.
    let p = socks4d("s4x", "permit 127.0.0.0/8\n");
    let s4 = p.addr;
    let detail = refused_detail(open(
        &connect_ask(Protocol::Socks5, Target::Addr(echo), None),
        &[s4, d.addr],
    ));
    assert_eq!(
        detail,
        format!("parent {s4} refused: SOCKS5 no acceptable method (offered none)")
    );
}

#[test]
fn a_silent_parent_has_its_share_of_the_time_and_no_more() {
    let echo = echo_server();
    let p = socks4d("s4t", "permit 127.0.0.0/8\n");
    let s4 = p.addr;
    // Accepts, reads nothing, answers nothing.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = l.local_addr().unwrap();
    let held = thread::spawn(move || (l.accept().map(|(s, _)| s), l.accept().map(|(s, _)| s)));
    let ask = connect_ask(Protocol::Socks4, Target::Addr(echo), None);
    // Two parents, two seconds: the silent one has one of them.
    let start = Instant::now();
    let hop = parent::open(&ask, &[silent, s4], |_| None, Deadline::after(Duration::from_secs(2))).unwrap();
    assert_eq!(hop.parent, s4);
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
    echoes(hop);
    // Alone, it has all the time, and then the walk is over.
    match parent::open(&ask, &[silent], |_| None, Deadline::after(Duration::from_millis(300))) {
        Err(f @ Failed::Timeout(_)) => {
            assert_eq!(f.reason(), "connect-timeout");
            assert_eq!(f.detail(), format!("parent {silent}: timed out"));
        }
        other => panic!("{other:?}"),
    }
    drop(held.join());
}

#[test]
fn the_source_address_of_the_connection_to_the_parent() {
    let echo = echo_server();
    let p = socks4d("s4src", "permit 127.0.0.0/8\n");
    let parent_addr = p.addr;
    let ask = connect_ask(Protocol::Socks4, Target::Addr(echo), None);
    let from = Ipv4Addr::new(127, 0, 0, 7);
    let hop = parent::open(&ask, &[parent_addr], |_| Some(from.into()), deadline()).unwrap();
    assert_eq!(hop.stream.local_addr().unwrap().ip(), from);
    echoes(hop);
    // The parent saw the client there.
    let log = p.log.wait_log(|l| l.contains("client=127.0.0.7:"));
    assert!(log.contains("reason=granted"), "{log}");
    // An address this host does not have: the walk ends, saying which.
    let foreign: std::net::IpAddr = "192.0.2.77".parse().unwrap();
    match parent::open(&ask, &[parent_addr], |_| Some(foreign), deadline()) {
        Err(f @ Failed::Source(_)) => {
            assert_eq!(f.reason(), "source-failed");
            assert!(
                f.detail()
                    .starts_with(&format!("parent {parent_addr}: source 192.0.2.77: ")),
                "{}",
                f.detail()
            );
        }
        other => panic!("{other:?}"),
    }
}
