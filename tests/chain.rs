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

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use socks4d::net::Deadline;
use socks4d::parent::{self, Ask, Call, Credentials, Failed, Hop, Protocol, Target};
use socks4d::request::Command as Cd;

/// A directory of root's for one test's files (0755, under the sticky
/// temp dir, so that socks4d believes a rules file in it), removed when
/// dropped.
fn scratch(tag: &str) -> TempDir {
    TempDir::with_mode(&format!("chain-{tag}"), 0o755)
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
    _dir: TempDir,
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
    dante_with(tag, method, blocked, |_| {})
}

/// [`dante`], with `setup` applied to its command.
fn dante_with(tag: &str, method: &str, blocked: u16, setup: impl FnOnce(&mut Command)) -> Option<Daemon> {
    if !require_root() || !require("danted") {
        return None;
    }
    let dir = scratch(tag);
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
    setup(&mut cmd);
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

/// tinyproxy on a free loopback port, allowing CONNECT to `port` only
/// (0: to any port).
fn tinyproxy(tag: &str, port: u16) -> Option<Daemon> {
    if !require_root() || !require("tinyproxy") {
        return None;
    }
    let dir = scratch(tag);
    let listen = free_port();
    let log = dir.join("tinyproxy.log");
    let conf = dir.join("tinyproxy.conf");
    write(
        &conf,
        &format!(
            "User nobody\nGroup nogroup\nPort {listen}\nListen 127.0.0.1\nTimeout 30\nLogLevel Info\n\
             MaxClients 20\nAllow 127.0.0.1\n{connect}DisableViaHeader Yes\n",
            connect = if port == 0 {
                String::new()
            } else {
                format!("ConnectPort {port}\n")
            }
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
    _dir: TempDir,
}

fn socks4d(tag: &str, rules: &str) -> Socks4d {
    let dir = scratch(tag);
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

// ---------------------------------------------------------------------
// socks4d with `--chain`: what its clients get, and what it logs.

/// socks4d `--listen` with rules `rules` and chain file `chain`, its log
/// collected; `setup` changes its command first.
struct Chained {
    _guard: Guard,
    addr: SocketAddr,
    log: Log,
    dir: TempDir,
}

fn chained(tag: &str, rules: &str, chain: &str, setup: impl FnOnce(&mut Command)) -> Chained {
    let dir = scratch(tag);
    let (conf, file) = (dir.join("socks4d.conf"), dir.join("socks4d.chain"));
    write(&conf, rules);
    write(&file, chain);
    let args = [
        "--ident",
        "off",
        "--log-stderr",
        "-f",
        conf.to_str().unwrap(),
        "--chain",
        file.to_str().unwrap(),
    ];
    let (mut guard, addr) = spawn_listen_with(&args, setup);
    let log = Log::of(&mut guard.0);
    Chained {
        _guard: guard,
        addr,
        log,
        dir,
    }
}

impl Chained {
    /// The first line of `event` that contains `text`, once logged.
    fn line(&self, event: &str, text: &str) -> String {
        let event = format!(": {event} ");
        let find = |log: &str| {
            log.lines()
                .find(|l| l.contains(&event) && l.contains(text))
                .map(str::to_string)
        };
        find(&self.log.wait_for(|log| find(log).is_some())).unwrap()
    }

    fn decision(&self, text: &str) -> String {
        self.line("decision", text)
    }

    /// One request: the reply code, or `None` when the connection closed
    /// without one; the connection, for the relay.
    fn ask(&self, req: &[u8]) -> (Option<u8>, TcpStream) {
        let mut c = connect_to(self.addr);
        c.write_all(req).unwrap();
        let mut reply = [0u8; 8];
        let code = c.read_exact(&mut reply).ok().map(|()| reply[1]);
        (code, c)
    }
}

/// An HTTP/1.0 server on 127.0.0.1 that answers every request with a
/// body, and the addresses its requests came from.
struct Web {
    addr: SocketAddr,
    peers: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

impl Web {
    /// The address the last request came from.
    fn last_peer(&self) -> SocketAddr {
        *self.peers.lock().unwrap().last().expect("a request came")
    }
}

fn web_server(body: Vec<u8>) -> Web {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let body = std::sync::Arc::new(body);
    let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = peers.clone();
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            seen.lock().unwrap().extend(s.peer_addr().ok());
            let body = body.clone();
            thread::spawn(move || {
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(&body));
            });
        }
    });
    Web { addr, peers }
}

/// curl through `proxy` (a URL: `socks4://`, `socks4a://`) for `url`: the
/// body, which must come whole.
fn curl(proxy: &str, url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "30", "--proxy", proxy, url])
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl --proxy {proxy} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `git ls-remote git://HOST:PORT/r.git` through socks4d at `proxy`, the
/// connection made by socat in SOCKS4a (the name sent): its output.
fn git_ls_remote(dir: &Path, proxy: SocketAddr, host: &str, port: u16) -> String {
    let script = dir.join("socks4a-proxy");
    socks4a_proxy_command(&script, proxy);
    let out = Command::new("git")
        .args(["ls-remote", &format!("git://{host}:{port}/r.git")])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_PROXY_COMMAND", &script)
        .env("LOGNAME", "carol")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The rules of the tests below: loopback clients to anywhere, decided
/// by the source alone (so whatever the destination's name or address).
const PERMIT_LOOPBACK: &str = "permit 127.0.0.0/8 0/0\n";

#[test]
fn curl_and_git_through_socks4d_chained_to_dante_in_socks4() {
    if !require("curl") || !require("git") || !require("socat") {
        return;
    }
    let blocked = closed_port();
    let Some(d) = dante("e2e4", "none", blocked.port()) else {
        return;
    };
    let body = payload(300_000, 11);
    let web = web_server(body.clone());
    // socks4d leaves from 127.0.0.5 (--outgoing-address), for the parent
    // too; Dante from 127.0.0.1.
    let s = chained("e2e4", PERMIT_LOOPBACK, &format!("sockd @={} 0/0\n", d.addr), |cmd| {
        cmd.args(["--outgoing-address", "127.0.0.5"]);
    });
    let hop = format!("hop=sockd:{}", d.addr);

    let got = curl(&format!("socks4://{}", s.addr), &format!("http://{}/f", web.addr));
    assert_eq!(checksum(&got), checksum(&body));
    assert_eq!(web.last_peer().ip(), Ipv4Addr::LOCALHOST);
    let line = s.decision(&format!("dst={}", web.addr));
    assert!(
        line.contains("reason=granted") && line.contains(" src=127.0.0.5:") && line.contains(&hop),
        "{line}"
    );
    let end = s.line("end", &format!("dst={}", web.addr));
    let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
    assert!(
        end.contains(&format!(" down={} ", head.len() + body.len())) && end.contains(&hop),
        "{end}"
    );

    // git by name: a SOCKS4 parent takes addresses only, so socks4d looks
    // the name up and asks by address.
    let tmp = scratch("e2e4-git");
    let head = git_repo(&tmp.0);
    let (_daemon, git) = git_daemon(&tmp.0);
    let port = git.port();
    let listed = git_ls_remote(&tmp.0, s.addr, "localhost", port);
    assert!(listed.contains(&head), "{listed}");
    let line = s.decision(r#"host="localhost""#);
    assert!(
        line.contains(&format!("dst=127.0.0.1:{port}")) && line.contains(&hop) && line.contains(r#"user="carol""#),
        "{line}"
    );

    // Dante refuses: 91, and the parent's answer in detail=.
    let (code, _) = s.ask(&connect_req(blocked, b"alice"));
    assert_eq!(code, Some(0x5B));
    let line = s.decision(&format!("dst={blocked}"));
    assert!(
        line.contains("reason=parent-refused")
            && line.contains(&format!(
                r#"detail="parent {} refused: SOCKS4 reply 0x5b (rejected or failed)""#,
                d.addr
            )),
        "{line}"
    );
}

/// A file of the test's own for a password, `owner:group` and `mode`.
fn secret(path: &Path, text: &str, group: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    let gid = nix::unistd::Group::from_name(group).unwrap().unwrap().gid;
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn names_go_unresolved_to_a_socks5_parent_with_a_password_past_a_dead_one() {
    if !require("curl") || !require("git") || !require("socat") {
        return;
    }
    // Only the parent knows the names under chain.example.
    let hosts_dir = scratch("e2e5-hosts");
    let hosts = hosts_dir.join("hosts");
    write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 web.chain.example\n127.0.0.1 git.chain.example\n",
    );
    let Some(d) = dante_with("e2e5", "username", closed_port().port(), |cmd| {
        bind_over(cmd, &hosts, "/etc/hosts")
    }) else {
        return;
    };
    let _user = ParentUser::new();
    let body = payload(100_000, 12);
    let web = web_server(body.clone());
    let dead = closed_port();
    let s = chained("e2e5", PERMIT_LOOPBACK, "direct 0/0\n", |_| {});
    let pw = s.dir.join("parent.secret");
    let credentials = format!("{PARENT_USER}:{PARENT_PASSWORD}\n");
    // Mode 0600 for root alone: a --listen socks4d reads its files as
    // --user (nobody), which cannot. No service, and the log says why.
    secret(&pw, &credentials, "root", 0o600);
    write(
        &s.dir.join("socks4d.chain"),
        &format!(
            "socks5 @={dead},{} %={} .chain.example\ndirect 0/0\n",
            d.addr,
            pw.display()
        ),
    );
    let (code, _) = s.ask(&connect_4a("web.chain.example", web.addr.port(), b"alice"));
    assert_eq!(code, Some(0x5B));
    let line = s.decision("reason=config-error");
    assert!(
        line.contains("socks4d reads it as uid 65534") && line.contains("root:GROUP mode 0640"),
        "{line}"
    );
    // Root's, readable by the group socks4d serves as: read again at the
    // next connection.
    secret(&pw, &credentials, "nogroup", 0o640);

    let url = format!("http://web.chain.example:{}/f", web.addr.port());
    let got = curl(&format!("socks4a://{}", s.addr), &url);
    assert_eq!(checksum(&got), checksum(&body));
    let line = s.decision("reason=granted");
    assert!(
        line.contains(r#"host="web.chain.example""#)
            && line.contains(" dst=- ")
            && line.contains(&format!("hop=socks5:{}", d.addr)),
        "{line}"
    );
    // git by a name only the parent knows.
    let tmp = scratch("e2e5-git");
    let head = git_repo(&tmp.0);
    let (_daemon, git) = git_daemon(&tmp.0);
    let port = git.port();
    let listed = git_ls_remote(&tmp.0, s.addr, "git.chain.example", port);
    assert!(listed.contains(&head), "{listed}");
    s.decision(r#"host="git.chain.example""#);
    // Other names are looked up here and leave directly.
    let got = curl(
        &format!("socks4a://{}", s.addr),
        &format!("http://localhost:{}/f", web.addr.port()),
    );
    assert_eq!(checksum(&got), checksum(&body));
    let line = s.decision(r#"host="localhost""#);
    assert!(
        line.contains(&format!("dst={}", web.addr)) && line.contains("hop=direct"),
        "{line}"
    );
    // A password the parent does not take: 91, with its answer.
    secret(&pw, &format!("{PARENT_USER}:not it\n"), "nogroup", 0o640);
    let (code, _) = s.ask(&connect_4a("web.chain.example", web.addr.port(), b"alice"));
    assert_eq!(code, Some(0x5B));
    let line = s.decision("reason=parent-refused");
    assert!(
        line.contains(&format!(
            "parent {dead}: Connection refused (os error 111); parent {} refused: SOCKS5 user/password not \
             accepted (status 0x01)",
            d.addr
        )),
        "{line}"
    );
    let log = s.log.text();
    assert!(!log.contains("pass word") && !log.contains("not it"), "{log}");
}

#[test]
fn curl_and_git_through_a_second_socks4d_and_tinyproxy() {
    if !require("curl") || !require("git") || !require("socat") {
        return;
    }
    let Some(t) = tinyproxy("e2e-tp", 0) else { return };
    let p = socks4d("e2e-s4", "permit 127.0.0.0/8\n");
    let body = payload(150_000, 13);
    let web = web_server(body.clone());
    let s = chained(
        "e2e-s4tp",
        PERMIT_LOOPBACK,
        &format!("socks4a @={} .localhost\nhttp @={} 0/0\n", p.addr, t.addr),
        |_| {},
    );
    let tmp = scratch("e2e-s4tp-git");
    let head = git_repo(&tmp.0);
    let (_daemon, git) = git_daemon(&tmp.0);
    let port = git.port();

    // By name, to the second socks4d, which looks the name up itself.
    let url = format!("http://localhost:{}/f", web.addr.port());
    assert_eq!(checksum(&curl(&format!("socks4a://{}", s.addr), &url)), checksum(&body));
    let line = s.decision(r#"host="localhost""#);
    assert!(
        line.contains(" dst=- ") && line.contains(&format!("hop=socks4a:{}", p.addr)),
        "{line}"
    );
    let parent = p
        .log
        .wait_log(|l| l.contains(r#"host="localhost""#) && l.contains("reason=granted"));
    assert!(parent.contains(&format!("dst={}", web.addr)), "{parent}");
    assert!(git_ls_remote(&tmp.0, s.addr, "localhost", port).contains(&head));
    p.log.wait_log(|l| l.contains(&format!("dst=127.0.0.1:{port}")));

    // By address, to tinyproxy's CONNECT.
    let url = format!("http://{}/f", web.addr);
    assert_eq!(checksum(&curl(&format!("socks4://{}", s.addr), &url)), checksum(&body));
    let line = s.decision(&format!("dst={}", web.addr));
    assert!(line.contains(&format!("hop=http:{}", t.addr)), "{line}");
    t.wait_log(&format!("CONNECT 127.0.0.1:{}", web.addr.port()));
    assert!(git_ls_remote(&tmp.0, s.addr, "127.0.0.1", port).contains(&head));
    t.wait_log(&format!("CONNECT 127.0.0.1:{port}"));

    // BIND through an HTTP parent: refused, saying why.
    let (code, _) = s.ask(&bind_request(Ipv4Addr::LOCALHOST, 21));
    assert_eq!(code, Some(0x5B));
    let line = s.decision("cmd=bind");
    assert!(
        line.contains("reason=parent-unusable") && line.contains("an HTTP parent cannot BIND"),
        "{line}"
    );
}

/// A SOCKS4 BIND request as `alice`, for an application server at `ip`.
fn bind_request(ip: Ipv4Addr, port: u16) -> Vec<u8> {
    socks4d::request::encode(&socks4d::request::Request {
        command: Cd::Bind,
        port,
        ip,
        userid: b"alice".to_vec(),
        hostname: None,
    })
}

#[test]
fn bind_through_socks4d_and_a_dante_parent() {
    let Some(d) = dante("e2eb", "none", closed_port().port()) else {
        return;
    };
    for protocol in ["sockd", "socks5"] {
        let s = chained(
            "e2eb",
            PERMIT_LOOPBACK,
            &format!("{protocol} @={} 0/0\n", d.addr),
            |_| {},
        );
        let (code, mut c) = s.ask(&bind_request(Ipv4Addr::LOCALHOST, 21));
        assert_eq!(code, Some(0x5A));
        let line = s.decision("cmd=bind");
        assert!(line.contains(&format!("hop={protocol}:{}", d.addr)), "{line}");
        // Where Dante listens, as the first reply said.
        let bound = line
            .split(" bind=")
            .nth(1)
            .and_then(|b| b.split(' ').next())
            .and_then(|b| b.parse::<SocketAddr>().ok())
            .expect("bind= in the decision line");
        let mut server = TcpStream::connect(bound).unwrap();
        server.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        server.write_all(b"150 data follows\r\n").unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let second = read_reply(&mut c);
        assert_eq!(second[1], 0x5A, "{protocol}");
        let mut got = [0u8; 18];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"150 data follows\r\n");
        let data = payload(64_000, 14);
        c.write_all(&data).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        let mut buf = [0u8; 8192];
        while back.len() < data.len() {
            match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => back.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(checksum(&back), checksum(&data), "{protocol}");
        let accept = s.line("accept", "reason=granted");
        assert!(accept.contains(&format!("hop={protocol}:{}", d.addr)), "{accept}");
    }
}

#[test]
fn the_chain_refuses_what_no_line_sends_and_what_a_deny_line_names() {
    let echo = echo_server();
    let s = chained(
        "e2ed",
        PERMIT_LOOPBACK,
        &format!("deny .evil.example\ndirect 127.0.0.1/32 eq {}\n", echo.port()),
        |_| {},
    );
    // A deny line by name: refused before any lookup (the name is in no
    // resolver; a lookup would fail as resolve-failed).
    let (code, _) = s.ask(&connect_4a("www.evil.example", echo.port(), b"alice"));
    assert_eq!(code, Some(0x5B));
    let line = s.decision(r#"host="www.evil.example""#);
    let file = s.dir.join("socks4d.chain");
    assert!(
        line.contains("reason=chain-denied") && line.contains(&format!("{}:1: deny .evil.example", file.display())),
        "{line}"
    );
    // No line: refused.
    let other = closed_port();
    let (code, _) = s.ask(&connect_req(other, b"alice"));
    assert_eq!(code, Some(0x5B));
    let line = s.decision(&format!("dst={other}"));
    assert!(
        line.contains("reason=chain-denied") && line.contains(&format!("{}: no line matches", file.display())),
        "{line}"
    );
    // The direct line: relayed.
    let (code, mut c) = s.ask(&connect_req(echo, b"alice"));
    assert_eq!(code, Some(0x5A));
    assert_eq!(send_and_read(&mut c, b"ping"), b"ping");
    assert!(s.decision(&format!("dst={echo}")).contains("hop=direct"));
    // Other spellings of what the lines name, in every start mode: the
    // name in capitals with a trailing dot is still denied by name; the
    // mapped spelling of 127.0.0.1 takes the direct line; the unspecified
    // address is refused before the chain is asked.
    let conf = s.dir.join("socks4d.conf");
    let args = [
        "--ident",
        "off",
        "--log-stderr",
        "-f",
        conf.to_str().unwrap(),
        "--chain",
        file.to_str().unwrap(),
    ];
    let spellings = [
        ("WWW.Evil.EXAMPLE.", 0x5B, "reason=chain-denied"),
        ("::ffff:127.0.0.1", 0x5A, "hop=direct"),
        ("::FFFF:7f00:1", 0x5A, "hop=direct"),
        ("0.0.0.0", 0x5B, "reason=dst-unspecified"),
    ];
    for (name, want, says) in spellings {
        let req = connect_4a(name, echo.port(), b"alice");
        let host = format!("host={name:?}");
        let (code, mut c) = s.ask(&req);
        assert_eq!(code, Some(want), "--listen, {name}");
        if want == 0x5A {
            assert_eq!(send_and_read(&mut c, b"ping"), b"ping");
        }
        let decided = s.decision(&host);
        assert!(decided.contains(says), "--listen, {name}: {decided}");
        for (mode, mut server) in [("inetd", spawn_stdin(&args)), ("fd 3", spawn_fd3(&args))] {
            server.client.write_all(&req).unwrap();
            let reply = read_reply(&mut server.client);
            assert_eq!(reply[1], want, "{mode}, {name}");
            if want == 0x5A {
                assert_eq!(send_and_read(&mut server.client, b"ping"), b"ping");
            }
            let (status, log) = finish(&mut server, EXIT);
            assert_eq!(status.code(), Some(0), "{mode}, {name}: {log}");
            let line = crate::common::line(&log, "decision");
            assert!(line.contains(&host) && line.contains(says), "{mode}, {name}: {line}");
        }
    }
    // A long-running socks4d reads the chain file again when it changes.
    write(&file, "deny 0/0\n");
    let (code, _) = s.ask(&connect_req(echo, b"bob"));
    assert_eq!(code, Some(0x5B));
    let line = s.decision(r#"user="bob""#);
    assert!(
        line.contains("reason=chain-denied") && line.contains(":1: deny 0/0"),
        "{line}"
    );
    // A chain file with an error: no service, as for the rules.
    write(&file, "sockd @=nowhere:99999 0/0\n");
    let (code, _) = s.ask(&connect_req(echo, b"carol"));
    assert_eq!(code, Some(0x5B));
    assert!(s.decision(r#"user="carol""#).contains("reason=config-error"));
}

/// socks4d with `args`, not serving: its status and both outputs.
fn socks4d_says(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_and_explain_cover_the_chain_file() {
    let dir = scratch("e2ex");
    let (conf, chain) = (dir.join("socks4d.conf"), dir.join("socks4d.chain"));
    write(&conf, PERMIT_LOOPBACK);
    write(
        &chain,
        "socks5 @=192.0.2.1,192.0.2.2:1081 .corp.example\n\
         sockd @=192.0.2.3 10.0.0.0/8\n\
         deny 0/0 eq 25\n\
         direct 0/0\n\
         direct 192.0.2.0/24\n",
    );
    let (c, f) = (conf.to_str().unwrap(), chain.to_str().unwrap());
    let (status, out, err) = socks4d_says(&["--check-config", "-f", c, "--chain", f]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{f}: 5 lines (2 through parents), OK, 1 warning")),
        "{out}"
    );
    assert!(
        err.contains(&format!("{f}:5: warning: never used: line 4 matches every request")),
        "{err}"
    );

    let explain = |dst: &str, port: &str| {
        let (status, out, err) = socks4d_says(&["--explain", "-f", c, "--chain", f, "alice", "127.0.0.1", dst, port]);
        assert_eq!(status, 0, "{out}{err}");
        out
    };
    let out = explain("www.corp.example", "443");
    assert!(out.contains("decided by its name"), "{out}");
    assert!(
        out.contains(&format!(
            "chain: {f}:1: socks5 @=192.0.2.1,192.0.2.2:1081 .corp.example"
        )),
        "{out}"
    );
    assert!(
        out.contains("hop: socks5 parent 192.0.2.1:1080, 192.0.2.2:1081, tried in order, asked for www.corp.example, not looked up here"),
        "{out}"
    );
    let out = explain("10.1.2.3", "80");
    assert!(
        out.contains("hop: sockd parent 192.0.2.3:1080, tried in order, asked for 10.1.2.3"),
        "{out}"
    );
    let out = explain("192.0.2.9", "25");
    assert!(out.contains("chain-denied"), "{out}");
    let out = explain("192.0.2.9", "80");
    assert!(out.contains("hop: direct") && out.contains("source: "), "{out}");

    // Errors name their lines; the status says the file cannot be used.
    write(&chain, "sockd @=192.0.2.1\nsocks9 @=192.0.2.1 0/0\n");
    let (status, out, err) = socks4d_says(&["--check-config", "-f", c, "--chain", f]);
    assert_eq!(status, 1, "{out}{err}");
    assert!(
        out.contains(&format!("{f}: 2 error(s); no service until fixed")),
        "{out}"
    );
    assert!(
        err.contains(&format!("{f}:1: ")) && err.contains(&format!("{f}:2: ")),
        "{err}"
    );
}
