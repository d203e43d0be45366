//! A long-running socks4d applies edits: a changed rules file, user list
//! or route file applies to the next connection; SIGHUP reads them at
//! once and never stops the server; a malformed file grants nothing, with
//! its error line, until it is fixed; a compiled (frozen) file likewise.
//! The same for a listening socket passed in (Accept=no, inetd `wait`).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use crate::common::*;

/// A `--listen` socks4d's log, read as it comes.
struct Logged {
    guard: Guard,
    addr: SocketAddr,
    log: Log,
}

impl Logged {
    /// Once it serves: its port accepts as soon as it is bound, but
    /// until its `listening` line, signals are not yet its to handle
    /// (SIGHUP would end it).
    fn new(guard: Guard, addr: SocketAddr) -> Logged {
        let mut guard = guard;
        let log = Log::of(&mut guard.0);
        log.wait_contains("listening addr=");
        Logged { guard, addr, log }
    }

    fn text(&self) -> String {
        self.log.text()
    }

    fn wait_for(&self, what: &str, count: usize) -> String {
        self.log.wait_count(what, count)
    }

    /// One CONNECT as `user` to an echo server: the reply code, and the
    /// decision line of that connection.
    fn ask(&self, user: &[u8]) -> (u8, String) {
        let echo = echo_server();
        let mut c = connect_to(self.addr);
        let tag = format!("decision client={} ", socks4d::audit::addr(c.local_addr().unwrap()));
        c.write_all(&connect_req(echo, user)).unwrap();
        let code = read_reply(&mut c)[1];
        drop(c);
        let t = self.wait_for(&tag, 1);
        let line = t.lines().find(|l| l.contains(&tag)).unwrap().to_string();
        (code, line)
    }

    fn pid(&self) -> i32 {
        self.guard.0.id() as i32
    }
}

/// Replaces `path` by a new file with `text`, as editors and
/// configuration managers do (write, then rename).
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn hup(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP).unwrap();
}

#[test]
fn an_edited_rules_file_applies_to_the_next_connection() {
    let dir = TempDir::new("reload-edit");
    let conf = dir.path().join("socks4d.conf");
    std::fs::write(&conf, "permit 127.0.0.0/8\n").unwrap();
    let conf_s = conf.display().to_string();
    let (guard, addr) = spawn_listen(&["--ident", "off", "--log-stderr", "-f", &conf_s]);
    let p = Logged::new(guard, addr);
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5a, "{line}");
    assert!(line.contains(&format!("rule={conf_s}:1")), "{line}");

    // Edited in place (as `>` or sed -i would): the next connection is
    // denied, by the edited line.
    std::fs::write(&conf, "deny 127.0.0.0/8 0/0 eq 1\npermit 127.0.0.0/8\ndeny 0/0\n").unwrap();
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5a, "{line}");
    assert!(line.contains(&format!("rule={conf_s}:2")), "{line}");
    replace(&conf, "deny 0/0 0/0 eq 1\ndeny 127.0.0.0/8\n");
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5b, "{line}");
    assert!(
        line.contains(&format!("rule={conf_s}:2")) && line.contains("reason=denied"),
        "{line}"
    );
    let t = p.text();
    assert!(t.contains("reload why=\"") && t.contains("changed\""), "{t}");

    // A typo: no service, with its error, until it is fixed; the server
    // stays up.
    replace(&conf, "permit 127.0.0.0/8\npermti 10.0.0.0/8\n");
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5b, "{line}");
    assert!(line.contains("reason=config-error"), "{line}");
    let t = p.text();
    assert!(t.contains(&format!("config error: {conf_s}:2: unknown action")), "{t}");
    // One error line per change, not per connection.
    let (code, _) = p.ask(b"u");
    assert_eq!(code, 0x5b);
    assert_eq!(p.text().matches("]: config error: ").count(), 1, "{}", p.text());
    replace(&conf, "permit 127.0.0.0/8\n");
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5a, "{line}");
    // Removed: the built-in policy is for a file that was never there;
    // a named file that is gone is an error.
    std::fs::remove_file(&conf).unwrap();
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5b, "{line}");
    assert!(line.contains("reason=config-error"), "{line}");
}

#[test]
fn an_edited_user_list_applies_to_the_next_connection() {
    let dir = TempDir::new("reload-users");
    let users = dir.path().join("users");
    std::fs::write(&users, "alice\n").unwrap();
    let conf = dir.path().join("socks4d.conf");
    std::fs::write(&conf, format!("permit *={} 127.0.0.0/8\n", users.display())).unwrap();
    let conf_s = conf.display().to_string();
    let (guard, addr) = spawn_listen(&["--ident", "off", "--log-stderr", "-f", &conf_s]);
    let p = Logged::new(guard, addr);
    assert_eq!(p.ask(b"alice").0, 0x5a);
    assert_eq!(p.ask(b"mallory").0, 0x5b);
    replace(&users, "alice\nmallory\n");
    assert_eq!(p.ask(b"mallory").0, 0x5a);
    replace(&users, "bob\n");
    assert_eq!(p.ask(b"alice").0, 0x5b);
}

#[test]
fn an_edited_route_file_applies_to_the_next_connection() {
    let dir = TempDir::new("reload-route");
    let route = dir.path().join("route");
    std::fs::write(&route, "127.0.0.1 0.0.0.0 0.0.0.0\n").unwrap();
    let conf = dir.path().join("socks4d.conf");
    std::fs::write(&conf, "permit 127.0.0.0/8\n").unwrap();
    let (conf_s, route_s) = (conf.display().to_string(), route.display().to_string());
    let (guard, addr) = spawn_listen(&["--ident", "off", "--log-stderr", "-f", &conf_s, "--route", &route_s]);
    let p = Logged::new(guard, addr);
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5a, "{line}");
    assert!(line.contains(" src=127.0.0.1:"), "{line}");
    replace(&route, "127.0.0.7 0.0.0.0 0.0.0.0\n");
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5a, "{line}");
    assert!(line.contains(" src=127.0.0.7:"), "{line}");
    replace(&route, "no such route\n");
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5b, "{line}");
    assert!(line.contains("reason=config-error"), "{line}");
}

/// SIGHUP reads the files at once, with a line, and does not stop the
/// server (it used to kill it). Host names in the rules are looked up
/// again then.
#[test]
fn sighup_reloads_and_never_stops_the_server() {
    let dir = TempDir::new("reload-hup");
    let conf = dir.path().join("socks4d.conf");
    std::fs::write(&conf, "permit 127.0.0.0/8\n").unwrap();
    let conf_s = conf.display().to_string();
    let (guard, addr) = spawn_listen(&["--ident", "off", "--log-stderr", "-f", &conf_s]);
    let mut p = Logged::new(guard, addr);
    for n in 1..=3 {
        hup(p.pid());
        p.wait_for("reload why=\"SIGHUP\"", n);
        assert_eq!(p.ask(b"u").0, 0x5a);
    }
    assert!(p.guard.0.try_wait().unwrap().is_none(), "SIGHUP stopped it");
    let t = p.text();
    assert!(
        t.contains(&format!("reload why=\"SIGHUP\" rules={conf_s} outcome=ok")),
        "{t}"
    );
}

/// A compiled rules file: recompiling, or making it stale, applies to the
/// next connection as the text does.
#[test]
fn a_recompiled_frozen_file_applies_to_the_next_connection() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("reload-frozen");
    let conf = dir.path().join("socks4d.conf");
    std::fs::write(&conf, "permit 127.0.0.0/8\n").unwrap();
    let conf_s = conf.display().to_string();
    let compile = || {
        let out = Command::new(bin())
            .args(["--check-config", "--compile", "--log-stderr", "-f", &conf_s])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    };
    compile();
    let (guard, addr) = spawn_listen(&["--ident", "off", "--log-stderr", "-f", &conf_s]);
    let p = Logged::new(guard, addr);
    assert_eq!(p.ask(b"u").0, 0x5a);
    replace(&conf, "deny 127.0.0.0/8\n");
    // The text changed: the stale frozen file is not used, the text is.
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5b, "{line}");
    compile();
    let (code, line) = p.ask(b"u");
    assert_eq!(code, 0x5b, "{line}");
    assert!(!p.text().contains(".frozen not used: it is damaged"), "{}", p.text());
}

/// A listening socket passed in (inetd `wait`, Accept=no) is served the
/// same way: edits apply, SIGHUP reloads.
#[test]
fn a_passed_listening_socket_applies_edits_too() {
    let dir = TempDir::new("reload-passed");
    let conf = dir.path().join("socks4d.conf");
    std::fs::write(&conf, "permit 127.0.0.0/8\n").unwrap();
    let conf_s = conf.display().to_string();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["--ident", "off", "--log-stderr", "-f", &conf_s])
        .stdin(Stdio::from(OwnedFd::from(l)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let p = Logged::new(Guard(cmd.spawn().unwrap()), addr);
    assert_eq!(p.ask(b"u").0, 0x5a);
    replace(&conf, "deny 127.0.0.0/8\n");
    assert_eq!(p.ask(b"u").0, 0x5b);
    hup(p.pid());
    p.wait_for("reload why=\"SIGHUP\"", 1);
    assert_eq!(p.ask(b"u").0, 0x5b);
}
