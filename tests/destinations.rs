//! Destinations as the rules see them: every spelling of an address,
//! both address families, each address of a name its own decision, and
//! no lookup or read for a request no rule could permit. Each attempt is
//! made for real in every start mode (inetd, a socket unit's fd 3,
//! `--listen`), against destinations that count the connections they
//! get: a denied destination must get none.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// The rules file of the finding: keep the proxy off its own host, then
/// permit loopback clients.
const OWN_HOST: &str = "deny 0.0.0.0/0 127.0.0.1/32\ndeny 0.0.0.0/0 ::1/128\npermit 127.0.0.0 255.0.0.0\n";

/// Listeners on 127.0.0.1 and ::1 at one port that count every connection
/// made to them.
struct Canary {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Canary {
    fn new() -> Canary {
        loop {
            let v6 = TcpListener::bind("[::1]:0").expect("an IPv6 loopback address");
            let port = v6.local_addr().unwrap().port();
            let Ok(v4) = TcpListener::bind(("127.0.0.1", port)) else {
                continue;
            };
            let hits = Arc::new(AtomicUsize::new(0));
            for l in [v4, v6] {
                let hits = hits.clone();
                thread::spawn(move || {
                    for s in l.incoming().flatten() {
                        hits.fetch_add(1, Ordering::SeqCst);
                        drop(s);
                    }
                });
            }
            return Canary { port, hits };
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// inetd: the connection on stdin.
    Inetd,
    /// A socket unit with Accept=yes: the connection on fd 3.
    SocketUnit,
    /// `--listen`: one long-running socks4d forking a handler per
    /// connection.
    Listen,
}

const STARTS: [Start; 3] = [Start::Inetd, Start::SocketUnit, Start::Listen];

/// A `--listen` process, its IPv4 and IPv6 addresses and its log.
type Listening = (Guard, (SocketAddr, SocketAddr), Log);

/// A socks4d started one way, whose log lines can be read per client.
struct Proxy {
    start: Start,
    args: Vec<String>,
    listen: Option<Listening>,
}

impl Proxy {
    fn new(start: Start, args: &[&str]) -> Proxy {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let listen = (start == Start::Listen).then(|| {
            let v6 = format!("[::1]:{}", free_v6_port());
            let mut refs: Vec<&str> = args.iter().map(String::as_str).collect();
            refs.extend(["--listen", &v6]);
            let (mut guard, addr) = spawn_listen(&refs);
            wait_listening(v6.parse().unwrap());
            let addr = (addr, v6.parse::<SocketAddr>().unwrap());
            let log = Log::of(&mut guard.0);
            (guard, addr, log)
        });
        Proxy { start, args, listen }
    }

    /// Sends `req` from a client at `from`, reads the reply (or none),
    /// and returns it with the log lines of this connection, once its end
    /// line is written.
    fn ask(&self, from: &str, req: &[u8]) -> (Option<u8>, String) {
        match &self.listen {
            Some((_, (v4, v6), log)) => {
                let mut c = connect_from_any(from, if from.contains(':') { *v6 } else { *v4 });
                let client = c.local_addr().unwrap();
                let _ = c.write_all(req);
                let code = reply_code(&mut c);
                drop(c);
                (code, log.wait_client(client))
            }
            None => {
                let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
                let mut s = match self.start {
                    Start::Inetd => spawn_on(pair_from(from), &refs, &[]),
                    _ => {
                        let (client, server) = pair_from(from);
                        let child = spawn_with_fd3(std::os::fd::OwnedFd::from(server), &refs);
                        Server { child, client }
                    }
                };
                let _ = s.client.write_all(req);
                let code = reply_code(&mut s.client);
                let _ = s.client.shutdown(std::net::Shutdown::Both);
                let (status, log) = finish(&mut s, EXIT);
                assert_eq!(status.code(), Some(0), "{log}");
                (code, log)
            }
        }
    }
}

/// The reply code, or `None` when the connection closed without one.
fn reply_code(c: &mut TcpStream) -> Option<u8> {
    let mut r = [0u8; 8];
    c.read_exact(&mut r).ok().map(|()| r[1])
}

/// A connected pair whose client end is at `from` (a loopback address of
/// either family).
fn pair_from(from: &str) -> (TcpStream, TcpStream) {
    let server_ip = if from.contains(':') { "::1" } else { "127.0.0.1" };
    let l = TcpListener::bind((server_ip, 0)).unwrap();
    let c = connect_from_any(from, l.local_addr().unwrap());
    let (s, _) = l.accept().unwrap();
    (c, s)
}

/// A free port on ::1.
fn free_v6_port() -> u16 {
    TcpListener::bind("[::1]:0").unwrap().local_addr().unwrap().port()
}

fn connect_from_any(from: &str, to: SocketAddr) -> TcpStream {
    let deadline = socks4d::net::Deadline::after(IO_TIMEOUT);
    let src = SocketAddr::new(from.parse().unwrap(), 0);
    let s = socks4d::net::connect(to, Some(src), deadline).unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// The `key=` field of the `event` line in `log`.
fn field<'a>(log: &'a str, event: &str, key: &str) -> &'a str {
    let l = line(log, event);
    let at = l
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {l}"));
    let v = &l[at + key.len() + 2..];
    if let Some(quoted) = v.strip_prefix('"') {
        let end = quoted.find('"').unwrap_or(quoted.len());
        return &quoted[..end];
    }
    v.split(' ').next().unwrap_or_default()
}

fn write_conf(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("socks4d.conf");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn args(conf: &str) -> Vec<&str> {
    vec!["--ident", "off", "--log-stderr", "-f", conf]
}

/// The spellings of this host's addresses that a request can carry: as
/// DSTIP, or as a SOCKS4a name (an address literal that the resolver
/// reads). Each must be refused and reach nothing.
fn own_host_spellings(port: u16) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![(
        "DSTIP 0.0.0.0".to_string(),
        connect_req(format!("0.0.0.0:{port}").parse().unwrap(), b"u"),
    )];
    for name in [
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "::FFFF:127.0.0.1",
        "0:0:0:0:0:ffff:7f00:1",
        "0.0.0.0",
        "0",
        "::ffff:0.0.0.0",
        "::",
        "::0",
        "0:0::0",
        "127.1",
        "0x7f000001",
        "::1",
        "127.0.0.1",
        "localhost",
    ] {
        v.push((format!("name {name}"), connect_4a(name, port, b"u")));
    }
    v
}

#[test]
fn no_spelling_of_a_denied_own_address_reaches_it_in_any_start_mode() {
    let canary = Canary::new();
    let dir = TempDir::new("dest-own");
    let conf = write_conf(&dir, OWN_HOST);
    for start in STARTS {
        let proxy = Proxy::new(start, &args(&conf));
        for (what, req) in own_host_spellings(canary.port) {
            let (code, log) = proxy.ask("127.0.0.1", &req);
            assert_eq!(code, Some(0x5b), "{start:?} {what}: {log}");
            assert_refused_for_the_destination(&log);
            let reason = field(&log, "decision", "reason");
            // A mapped spelling is named, and denied, as the IPv4 address.
            if what.contains("ffff:127") || what.contains("ffff:7f00") {
                assert_eq!(
                    field(&log, "decision", "dst"),
                    format!("127.0.0.1:{}", canary.port),
                    "{log}"
                );
                assert!(field(&log, "decision", "rule").ends_with(":1"), "{log}");
            }
            if what.contains("0.0.0.0") || what == "name ::" || what == "name ::0" || what == "name 0" {
                assert_eq!(reason, "dst-unspecified", "{start:?} {what}: {log}");
            }
            assert_eq!(
                canary.hits(),
                0,
                "{start:?} {what} reached the denied destination: {log}"
            );
        }
        // The same proxy still serves what the rules permit.
        let l = TcpListener::bind("127.0.0.2:0").unwrap();
        let other = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || echo(s));
            }
        });
        let (code, log) = proxy.ask("127.0.0.1", &connect_req(other, b"u"));
        assert_eq!(code, Some(0x5a), "{start:?}: {log}");
    }
}

#[test]
fn a_port_deny_holds_for_every_spelling_and_family() {
    let canary = Canary::new();
    let dir = TempDir::new("dest-port");
    let conf = write_conf(&dir, &format!("deny 0/0 0/0 eq {}\npermit 0/0\n", canary.port));
    let proxy = Proxy::new(Start::Inetd, &args(&conf));
    for from in ["127.0.0.1", "::1"] {
        for (what, req) in own_host_spellings(canary.port) {
            let (code, log) = proxy.ask(from, &req);
            assert_eq!(code, Some(0x5b), "from {from}, {what}: {log}");
            assert_refused_for_the_destination(&log);
            assert_eq!(canary.hits(), 0, "from {from}, {what}: {log}");
        }
    }
    // Another port is served, from both families.
    let echo = echo_server();
    for from in ["127.0.0.1", "::1"] {
        let (code, log) = proxy.ask(from, &connect_4a("127.0.0.1", echo.port(), b"u"));
        assert_eq!(code, Some(0x5a), "from {from}: {log}");
    }
}

/// The log says the destination was refused (by a rule or whatever the
/// rules say), not that the rules could not be read.
fn assert_refused_for_the_destination(log: &str) {
    let reason = field(log, "decision", "reason");
    assert!(
        ["denied", "dst-unspecified", "dst-ipv4-compatible"].contains(&reason),
        "{log}"
    );
}

/// Every spelling of this host as a destination, asked from 127.0.0.1 and
/// from ::1, is refused, and the canary never hears of it.
fn assert_own_host_refused_from_both_loopbacks(proxy: &Proxy, canary: &Canary) {
    for from in ["127.0.0.1", "::1"] {
        for (what, req) in own_host_spellings(canary.port) {
            let (code, log) = proxy.ask(from, &req);
            assert_eq!(code, Some(0x5b), "from {from}, {what}: {log}");
            assert_refused_for_the_destination(&log);
        }
    }
    assert_eq!(canary.hits(), 0);
}

#[test]
fn an_ipv6_client_and_an_ipv4_client_are_kept_off_both_loopbacks() {
    let canary = Canary::new();
    let dir = TempDir::new("dest-fam");
    let conf = write_conf(&dir, "deny 0/0 127.0.0.0/8\ndeny 0/0 ::1/128\npermit 0/0\n");
    let proxy = Proxy::new(Start::Listen, &args(&conf));
    assert_own_host_refused_from_both_loopbacks(&proxy, &canary);
}

/// examples/socks4d.conf with its rules uncommented and its documentation
/// networks (192.0.2.0/24, 2001:db8:1::/48) replaced by loopback clients:
/// what the shipped file keeps away, it keeps away from both families.
#[test]
fn the_shipped_example_holds_in_both_families() {
    let text = std::fs::read_to_string(top().join("examples/socks4d.conf")).unwrap();
    let rules: String = text
        .lines()
        .map(|l| {
            l.strip_prefix('#')
                .filter(|r| r.starts_with("deny") || r.starts_with("permit"))
                .unwrap_or(l)
        })
        .map(|l| {
            l.replace("*=/etc/socks4d.users", "*=alice")
                .replace("192.0.2.0 255.255.255.0", "127.0.0.0 255.0.0.0")
                .replace("192.0.2.0/24", "127.0.0.0/8")
                .replace("2001:db8:1::/48", "::1/128")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(rules.contains("\ndeny"), "{rules}");
    let canary = Canary::new();
    let dir = TempDir::new("dest-example");
    let conf = write_conf(&dir, &rules);
    let proxy = Proxy::new(Start::Listen, &args(&conf));
    assert_own_host_refused_from_both_loopbacks(&proxy, &canary);
    // Mail, from either family to either family, by --explain.
    for (src, dst) in [
        ("127.0.0.1", "198.51.100.7"),
        ("::1", "198.51.100.7"),
        ("127.0.0.1", "2001:db8:9::7"),
        ("::1", "2001:db8:9::7"),
        ("::1", "::ffff:198.51.100.7"),
    ] {
        let out = Command::new(bin())
            .args(["--explain", "-f", &conf, "u", src, dst, "smtp"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("decision: deny"), "{src} -> {dst}:25: {said}");
    }
}

/// The example of socks4d.conf(5) that keeps the proxy away from its own
/// host and from mail, taken from the page, decided by --explain.
#[test]
fn the_manual_pages_example_holds_in_both_families() {
    let page = std::fs::read_to_string(top().join("man/socks4d.conf.5")).unwrap();
    let start = page
        .find("# Not the proxy host itself")
        .expect("the example in socks4d.conf(5)");
    let end = start + page[start..].find("\n.Ed").unwrap();
    let rules = page[start..end]
        .replace("\\-", "-")
        .replace("*=/etc/socks4d.lab", "*=alice");
    let dir = TempDir::new("dest-man");
    let conf = write_conf(&dir, &rules);
    let explain = |user: &str, src: &str, dst: &str, port: &str| {
        let out = Command::new(bin())
            .args(["--explain", "-f", &conf, user, src, dst, port])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for src in ["192.0.2.10", "2001:db8:1::10", "::ffff:192.0.2.10"] {
        for dst in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::"] {
            let said = explain("alice", src, dst, "80");
            assert!(said.contains("decision: deny"), "{src} -> {dst}: {said}");
        }
        for dst in ["198.51.100.7", "2001:db8:9::7"] {
            let said = explain("alice", src, dst, "25");
            assert!(said.contains("decision: deny"), "{src} -> {dst}:25: {said}");
        }
    }
    // And it still serves what it is for.
    assert!(explain("alice", "192.0.2.10", "198.51.100.7", "80").contains("decision: permit"));
    assert!(explain("alice", "2001:db8:1::10", "2001:db8:9::7", "443").contains("decision: permit"));
    // --check-config has no family warning left on it.
    let (_, err) = check_config(&conf);
    assert!(!err.contains("family") && !err.contains("only"), "{err}");
}

/// `socks4d --check-config -f conf`: its exit status and standard error.
fn check_config(conf: &str) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(["--check-config", "-f", conf])
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_config_warns_of_a_deny_that_leaves_the_other_family_open() {
    let dir = TempDir::new("dest-warn");
    // The pair of OWN_HOST covers both families; either alone does not.
    let conf = write_conf(&dir, OWN_HOST);
    let (_, err) = check_config(&conf);
    assert!(!err.contains("warning"), "{err}");
    let conf = write_conf(&dir, "deny 0.0.0.0/0 127.0.0.1/32\npermit 127.0.0.0 255.0.0.0\n");
    let (status, err) = check_config(&conf);
    assert_eq!(status, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "{conf}:1: warning: this line denies IPv4 destinations only, and line 2 permits IPv6"
        )),
        "{err}"
    );
    let conf = write_conf(
        &dir,
        "deny ::/0 ::1/128\ndeny 0.0.0.0 0.0.0.0 0.0.0.0 0.0.0.0 eq smtp\npermit 0/0\n",
    );
    let (_, err) = check_config(&conf);
    assert!(
        err.contains(":1: warning: this line denies IPv6 clients only, and line 3 permits IPv4"),
        "{err}"
    );
    assert!(
        err.contains(":2: warning: this line denies IPv4 destinations only"),
        "{err}"
    );
    assert!(err.contains(":2: warning: this line denies IPv4 clients only"), "{err}");
    // Mapped and NAT64 spellings in the file itself.
    let conf = write_conf(
        &dir,
        "deny 0/0 ::ffff:127.0.0.0/104\ndeny 0/0 64:ff9b::/96\npermit 0/0\n",
    );
    let (_, err) = check_config(&conf);
    assert!(
        err.contains(":1: warning: destination ::ffff:127.0.0.0/104 is written as IPv4-mapped"),
        "{err}"
    );
    assert!(err.contains("so this is 127.0.0.0/8"), "{err}");
    assert!(
        err.contains(":2: warning: destination 64:ff9b::/96 is within the NAT64 prefix"),
        "{err}"
    );
}

#[test]
fn explain_reads_every_spelling_as_a_connection_does() {
    let dir = TempDir::new("dest-explain");
    let conf = write_conf(&dir, OWN_HOST);
    let explain = |dst: &str| {
        let out = Command::new(bin())
            .args(["--explain", "-f", &conf, "u", "127.0.0.1", dst, "80"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = explain("::ffff:127.0.0.1");
    assert!(
        said.contains(&format!("{conf}:1:")) && said.contains("decision: deny"),
        "{said}"
    );
    for dst in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
        let said = explain(dst);
        assert!(
            said.contains("refused whatever the rules say") && said.contains("decision: deny"),
            "{said}"
        );
    }
    // A NAT64 address is judged as the IPv4 address it embeds.
    let said = explain("64:ff9b::7f00:1");
    assert!(
        said.contains("judged as 127.0.0.1") && said.contains(&format!("{conf}:1:")),
        "{said}"
    );
}

/// The same attempts with the rules compiled: the frozen file decides as
/// the text does.
#[test]
fn frozen_rules_refuse_every_spelling_too() {
    if !require_root() {
        return;
    }
    let canary = Canary::new();
    let dir = TempDir::new("dest-frozen");
    let conf = write_conf(&dir, OWN_HOST);
    // The compile step waits until the file is two seconds old.
    let out = Command::new(bin())
        .args(["--check-config", "--compile", "-f", &conf])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let proxy = Proxy::new(Start::Listen, &args(&conf));
    for (what, req) in own_host_spellings(canary.port) {
        let (code, log) = proxy.ask("127.0.0.1", &req);
        assert_eq!(code, Some(0x5b), "{what}: {log}");
        assert!(!log.contains(".frozen not used"), "{log}");
    }
    assert_eq!(canary.hits(), 0);
    // Compiled, a client that no line could permit is refused before its
    // request too, and no name is looked up for a request no line could
    // permit.
    let conf = write_conf(&dir, "deny 127.0.0.1/32\npermit 127.0.0.0/8 0/0 eq 1\n");
    let out = Command::new(bin())
        .args(["--check-config", "--compile", "-f", &conf])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let proxy = Proxy::new(Start::Inetd, &args(&conf));
    let (code, log) = proxy.ask("127.0.0.1", b"");
    assert_eq!(code, Some(0x5b), "{log}");
    assert_eq!(field(&log, "decision", "user"), "-", "{log}");
    assert!(field(&log, "decision", "rule").ends_with(":1"), "{log}");
    let (code, log) = proxy.ask("127.0.0.2", &connect_4a("localhost", 5, b"u"));
    assert_eq!(code, Some(0x5b), "{log}");
    assert!(
        line(&log, "decision").contains(" dst=- host=\"localhost\" rule=default"),
        "{log}"
    );
    assert!(!log.contains(".frozen not used"), "{log}");
}

/// A SOCKS4a name with two addresses, each permitted by a line of its
/// own: the first refuses connections, the second needs ident for
/// "admin". The request must not reach the second on the first line's
/// terms.
#[test]
fn each_address_of_a_name_is_decided_on_its_own_line() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("dest-two");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.2 twohomed\n127.0.0.3 twohomed\n").unwrap();
    // 127.0.0.3 answers; nothing listens on 127.0.0.2 at that port.
    let l = TcpListener::bind("127.0.0.3:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || echo(s));
        }
    });
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    std::fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let m = marks.display();
    let conf = write_conf(
        &dir,
        &format!(
            "permit ?=n 127.0.0.0/8 127.0.0.2/32 : /bin/sh -c 'echo one >> {m}/line1'\n\
             permit ?=I *=admin 127.0.0.0/8 127.0.0.3/32 : /bin/sh -c 'echo two >> {m}/line2'\n"
        ),
    );
    let writable = marks.display().to_string();
    // The client comes from 127.0.0.44, where no identd answers.
    let run = |user: &[u8]| {
        let mut a = args(&conf);
        a.extend(["--writable", &writable, "--ident-timeout", "2"]);
        let pair = pair_from("127.0.0.44");
        let mut s = spawn_on_with(pair, &a, &[], |cmd| bind_over(cmd, &hosts, "/etc/hosts"));
        s.client.write_all(&connect_4a("twohomed", port, user)).unwrap();
        let code = reply_code(&mut s.client);
        let _ = s.client.shutdown(std::net::Shutdown::Both);
        let (_, log) = finish(&mut s, EXIT);
        (code, log)
    };
    let (code, log) = run(b"admin");
    assert_eq!(code, Some(0x5c), "{log}");
    assert_eq!(field(&log, "decision", "dst"), format!("127.0.0.3:{port}"), "{log}");
    assert!(field(&log, "decision", "rule").ends_with(":2"), "{log}");
    assert!(field(&log, "decision", "ident").starts_with("unreachable"), "{log}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "{log}");
    // Line 2's command ran; line 1's did not (its address was not the
    // one the request ended with).
    let start = Instant::now();
    while !marks.join("line2").exists() && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(marks.join("line2").exists(), "line 2's command did not run: {log}");
    assert!(!marks.join("line1").exists());
    // Another user: line 2 does not permit 127.0.0.3, and line 1's
    // address refuses connections.
    let (code, log) = run(b"mallory");
    assert_eq!(code, Some(0x5b), "{log}");
    assert_eq!(field(&log, "decision", "reason"), "connect-refused", "{log}");
    assert!(field(&log, "decision", "rule").ends_with(":1"), "{log}");
    assert_eq!(field(&log, "decision", "ident"), "off", "{log}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "{log}");
}

/// BIND to a name whose addresses two lines decide: the call is expected
/// only from the addresses of the line that decided, with its terms.
#[test]
fn bind_expects_only_the_addresses_of_the_deciding_line() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("dest-bind");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.2 twohomed\n127.0.0.3 twohomed\n127.0.0.4 twohomed\n").unwrap();
    let conf = write_conf(
        &dir,
        "permit ?=n 127.0.0.0/8 127.0.0.2/32\npermit ?=I 127.0.0.0/8 127.0.0.3/32\npermit ?=n 127.0.0.0/8 127.0.0.4/32\n",
    );
    let req = encode(&Request {
        command: Cd::Bind,
        port: 21,
        ip: std::net::Ipv4Addr::new(0, 0, 0, 1),
        userid: b"u".to_vec(),
        hostname: Some(b"twohomed".to_vec()),
    });
    let mut s = spawn_on_with(pair_from("127.0.0.1"), &args(&conf), &[], |cmd| {
        bind_over(cmd, &hosts, "/etc/hosts")
    });
    s.client.write_all(&req).unwrap();
    let first = read_reply(&mut s.client);
    assert_eq!(first[1], 0x5a);
    let _ = s.client.shutdown(std::net::Shutdown::Both);
    let (_, log) = finish(&mut s, EXIT);
    assert_eq!(field(&log, "decision", "expect"), "127.0.0.2", "{log}");
    assert!(field(&log, "decision", "rule").ends_with(":1"), "{log}");
    assert_eq!(field(&log, "decision", "ident"), "off", "{log}");
}

/// A client that no line could permit is refused before it sends a byte,
/// in every start mode; one for which a line runs a command is read on.
#[test]
fn a_client_no_rule_could_permit_is_refused_before_its_request() {
    let dir = TempDir::new("dest-early");
    let conf = write_conf(&dir, "deny 127.0.0.0/8\npermit 192.0.2.0/24\n");
    for start in STARTS {
        let proxy = Proxy::new(start, &args(&conf));
        // Nothing sent at all: the reply comes anyway, at once.
        let began = Instant::now();
        let (code, log) = proxy.ask("127.0.0.1", b"");
        assert_eq!(code, Some(0x5b), "{start:?}: {log}");
        assert!(began.elapsed() < Duration::from_secs(10), "{start:?}: {log}");
        assert_eq!(field(&log, "decision", "reason"), "denied", "{log}");
        assert!(field(&log, "decision", "rule").ends_with(":1"), "{log}");
        assert_eq!(field(&log, "decision", "user"), "-", "{log}");
    }
    // A deny line with a command needs the request: it is read, and the
    // command runs.
    let marks = TempDir::new("dest-early-marks");
    std::fs::set_permissions(marks.path(), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let m = marks.path().display().to_string();
    let conf = write_conf(&dir, &format!("deny 127.0.0.0/8 : /bin/sh -c 'echo %u >> {m}/seen'\n"));
    let mut a = args(&conf);
    a.extend(["--writable", &m]);
    let proxy = Proxy::new(Start::Inetd, &a);
    let (code, log) = proxy.ask("127.0.0.1", &connect_req("192.0.2.1:80".parse().unwrap(), b"carol"));
    assert_eq!(code, Some(0x5b), "{log}");
    assert_eq!(field(&log, "decision", "user"), "carol", "{log}");
    let start = Instant::now();
    while !marks.path().join("seen").exists() && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(marks.path().join("seen").exists(), "{log}");
}

/// A SOCKS4a name is not looked up for a request that no line could
/// permit whatever it resolves to: the log names the name and no address.
#[test]
fn no_name_is_looked_up_for_a_request_no_rule_could_permit() {
    let dir = TempDir::new("dest-nolookup");
    let conf = write_conf(&dir, "permit 127.0.0.0/8 0/0 eq 1\n");
    for start in STARTS {
        let proxy = Proxy::new(start, &args(&conf));
        let (code, log) = proxy.ask("127.0.0.1", &connect_4a("localhost", 5, b"u"));
        assert_eq!(code, Some(0x5b), "{log}");
        let d = line(&log, "decision");
        assert!(d.contains(" dst=- host=\"localhost\" rule=default"), "{start:?}: {d}");
        assert_eq!(field(&log, "decision", "reason"), "denied");
    }
    // With only `deny 127.0.0.0/8` the client is refused before the
    // request, and no name is read.
    let conf = write_conf(&dir, "deny 127.0.0.0/8\n");
    let proxy = Proxy::new(Start::Listen, &args(&conf));
    let (code, log) = proxy.ask("127.0.0.1", &connect_4a("localhost", 5, b"u"));
    assert_eq!(code, Some(0x5b), "{log}");
    assert!(line(&log, "decision").contains(" dst=- host=- rule="), "{log}");
}
