//! Rules on SOCKS4a names: a `.domain` destination matches the name as
//! the client sent it (any case, a trailing dot ignored), before any
//! lookup; a deny by name also refuses requests that carry only an
//! address; a permit by name lets a name through to whatever it resolves
//! to. In inetd mode and under `--listen`, from the text and from a
//! compiled file, and in `--explain` and `--check-config`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::thread;

use crate::common::*;

const EXIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Names in the test's own /etc/hosts; `x.blocked.example` is in no
/// resolver at all, so that a refusal by name shows no lookup was made.
const HOSTS: &str =
    "127.0.0.1 localhost\n127.0.0.2 www.allowed.example\n127.0.0.2 www.other.example\n127.0.0.3 xblocked.example\n";

fn rules(port: u16) -> String {
    format!(
        "deny 0/0 .blocked.example\n\
         permit 127.0.0.0/8 .allowed.example\n\
         deny 0/0 127.0.0.2/32\n\
         permit 127.0.0.0/8 0/0 eq {port}\n"
    )
}

/// An echo server on 127.0.0.2, and on 127.0.0.3 at the same port.
fn echo_at_2() -> SocketAddr {
    loop {
        let l = TcpListener::bind("127.0.0.2:0").unwrap();
        let addr = l.local_addr().unwrap();
        let Ok(l3) = TcpListener::bind(("127.0.0.3", addr.port())) else {
            continue;
        };
        for l in [l, l3] {
            thread::spawn(move || {
                for s in l.incoming().flatten() {
                    thread::spawn(move || echo(s));
                }
            });
        }
        return addr;
    }
}

/// One request through an inetd-style socks4d with the test's hosts file:
/// the reply code and the log.
fn ask(conf: &str, hosts: &std::path::Path, req: &[u8]) -> (u8, String) {
    let args = ["--ident", "off", "--log-stderr", "-f", conf];
    let mut s = spawn_on_with(socket_pair(), &args, &[], |cmd| bind_over(cmd, hosts, "/etc/hosts"));
    s.client.write_all(req).unwrap();
    let mut reply = [0u8; 8];
    s.client.read_exact(&mut reply).unwrap();
    let _ = s.client.shutdown(std::net::Shutdown::Both);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0), "{log}");
    (reply[1], log)
}

struct Setup {
    _dir: TempDir,
    conf: String,
    hosts: std::path::PathBuf,
    echo: SocketAddr,
}

fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let echo = echo_at_2();
    let conf = dir.path().join("socks4d.conf");
    std::fs::write(&conf, rules(echo.port())).unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, HOSTS).unwrap();
    Setup {
        conf: conf.display().to_string(),
        hosts,
        echo,
        _dir: dir,
    }
}

/// The cases every start mode and rules source must decide alike: (what,
/// request, reply, deciding line, whether the name was looked up).
fn cases(echo: SocketAddr) -> Vec<(&'static str, Vec<u8>, u8, &'static str, bool)> {
    let port = echo.port();
    vec![
        // Denied by name, before any lookup: x.blocked.example resolves nowhere.
        (
            "a blocked name",
            connect_4a("x.blocked.example", port, b"u"),
            0x5b,
            ":1 ",
            false,
        ),
        (
            "the blocked domain itself",
            connect_4a("blocked.example", port, b"u"),
            0x5b,
            ":1 ",
            false,
        ),
        (
            "in capitals, with a trailing dot",
            connect_4a("X.BLOCKED.Example.", port, b"u"),
            0x5b,
            ":1 ",
            false,
        ),
        // Permitted by name, to the address it resolves to, though line 3
        // denies that address.
        (
            "an allowed name",
            connect_4a("www.allowed.example", port, b"u"),
            0x5a,
            ":2 ",
            true,
        ),
        // Another name for the same host is judged by its address.
        (
            "another name for it",
            connect_4a("www.other.example", port, b"u"),
            0x5b,
            ":3 ",
            true,
        ),
        // A request that carries only an address could be going anywhere:
        // the deny by name refuses it.
        ("an address", connect_req(echo, b"u"), 0x5b, ":1 ", false),
        (
            "an address written as the name",
            connect_4a("127.0.0.2", port, b"u"),
            0x5b,
            ":1 ",
            false,
        ),
        // Not in the domain, though it ends alike.
        (
            "a name that only ends alike",
            connect_4a("xblocked.example", port, b"u"),
            0x5a,
            ":4 ",
            true,
        ),
    ]
}

fn check_case(what: &str, code: u8, log: &str, want: u8, rule: &str, looked_up: bool) {
    assert_eq!(code, want, "{what}: {log}");
    let d = line(log, "decision");
    assert!(d.contains(&format!("/socks4d.conf{rule}")), "{what}: {d}");
    // A SOCKS4a name refused before its lookup shows no address.
    if d.contains(" host=\"") {
        assert_eq!(d.contains(" dst=- "), !looked_up, "{what}: {d}");
    }
}

#[test]
fn names_decide_socks4a_requests_in_inetd_mode() {
    if !require_root() {
        return;
    }
    let s = setup("names-inetd");
    for (what, req, want, rule, looked_up) in cases(s.echo) {
        let (code, log) = ask(&s.conf, &s.hosts, &req);
        check_case(what, code, &log, want, rule, looked_up);
    }
    // A blocked name is refused with reason=denied, not resolve-failed:
    // no lookup was tried.
    let (_, log) = ask(&s.conf, &s.hosts, &connect_4a("nowhere.blocked.example", 80, b"u"));
    assert!(line(&log, "decision").contains("reason=denied"), "{log}");
}

#[test]
fn names_decide_alike_under_listen_and_from_a_compiled_file() {
    if !require_root() {
        return;
    }
    let s = setup("names-listen");
    let out = Command::new(bin())
        .args(["--check-config", "--compile", "-f", &s.conf])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Compiled, in inetd mode.
    for (what, req, want, rule, looked_up) in cases(s.echo) {
        let (code, log) = ask(&s.conf, &s.hosts, &req);
        check_case(what, code, &log, want, rule, looked_up);
        assert!(!log.contains(".frozen not used"), "{log}");
    }
    // Under --listen.
    let args = ["--ident", "off", "--log-stderr", "-f", &s.conf];
    let (mut guard, addr) = spawn_listen_with(&args, |cmd| bind_over(cmd, &s.hosts, "/etc/hosts"));
    let log = Log::of(&mut guard.0);
    for (what, req, want, rule, looked_up) in cases(s.echo) {
        let mut c = connect_to(addr);
        let client = c.local_addr().unwrap();
        c.write_all(&req).unwrap();
        let mut reply = [0u8; 8];
        c.read_exact(&mut reply).unwrap();
        drop(c);
        let mine = log.wait_client(client);
        check_case(what, reply[1], &mine, want, rule, looked_up);
    }
}

#[test]
fn explain_takes_a_name_and_check_config_says_what_names_cannot_promise() {
    let s = setup("names-explain");
    let explain = |dst: &str| {
        let out = Command::new(bin())
            .args([
                "--explain",
                "-f",
                &s.conf,
                "u",
                "127.0.0.1",
                dst,
                &s.echo.port().to_string(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = explain("WWW.Blocked.Example.");
    assert!(
        said.contains("destination: www.blocked.example, decided by its name"),
        "{said}"
    );
    assert!(
        said.contains("/socks4d.conf:1: deny 0/0 .blocked.example") && said.contains("decision: deny"),
        "{said}"
    );
    let said = explain("www.allowed.example");
    assert!(
        said.contains("decided by its name") && said.contains("decision: permit"),
        "{said}"
    );
    // A name the lines by address must judge is looked up, each address
    // explained.
    let said = explain("localhost");
    assert!(said.contains("destination: localhost resolves to"), "{said}");
    assert!(
        said.contains("address 127.0.0.1:") && said.contains(":4: permit"),
        "{said}"
    );
    // An address: the deny by name.
    assert!(explain("127.0.0.2").contains(":1: deny 0/0 .blocked.example"));
    // Neither an address nor a name.
    let out = Command::new(bin())
        .args(["--explain", "-f", &s.conf, "u", "127.0.0.1", "a..b", "80"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));

    let out = Command::new(bin())
        .args(["--check-config", "-f", &s.conf])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(":1: warning: this line denies by the name a SOCKS4a client sends")
            && err.contains("deny the host's addresses as well"),
        "{err}"
    );
    assert!(
        err.contains(":2: warning: this line permits by the name a SOCKS4a client sends, to whatever address"),
        "{err}"
    );
    // A bad domain is an error naming the line.
    std::fs::write(&s.conf, "deny 0/0 .bad..example\n").unwrap();
    let out = Command::new(bin())
        .args(["--check-config", "-f", &s.conf])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(":1: destination \".bad..example\" is not a domain name"),
        "{err}"
    );
}
