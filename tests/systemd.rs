//! socks4d the way most administrators run it: systemd 252 booted as PID 1
//! in a container (tests/container), socks4d installed there with
//! install.sh, and the shipped units driven by real programs — curl
//! downloads, BIND, ident against the container's oidentd, rule commands
//! and hooks that outlive their connection, the journal, bursts of a
//! thousand connections against the limits, the Accept=no unit, and the
//! inetd path in the same container.
//!
//! Slow (a minute or two; building the container root once takes another
//! minute or so). Skipped with the reason where the machine cannot boot a
//! container, except under CI=true, where it must run.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::container::{self, Container};

const PROXY: &str = "127.0.0.1:1080";
/// The inetd line's address in the container.
const INETD_PROXY: &str = "127.0.0.1:1081";
/// The uid of the container's user alice, whom oidentd names for sockets
/// the test makes with that file-system uid.
const ALICE: u32 = 2001;
/// How long the instances and commands of a step get to finish.
const SETTLE: Duration = Duration::from_secs(60);
const IO: Duration = Duration::from_secs(30);

/// The rules in the container. Clients from 127.0.1.0/24 (the bursts) need
/// no ident, nor does the user probe, whose command is the confinement
/// probe (its path and the collector's address are filled in); the rest
/// must be confirmed by oidentd. Every other command and hook first sleeps,
/// so each outlives its connection.
const RULES: &str = "\
permit ?=n 127.0.1.0/24
permit ?=n *=probe 127.0.0.0/8 : PROBE COLLECTOR %p
deny *=mallory 127.0.0.0/8 : sleep 1; logger -t socks4d-cmd \"deny %u %p\"
permit *=alice 127.0.0.0/8 : sleep 1; logger -t socks4d-cmd \"permit %u %p\"
permit 127.0.0.0/8
#BAD_ID: sleep 1; logger -t socks4d-cmd \"bad_id %u %p\"
#NO_IDENTD: sleep 1; logger -t socks4d-cmd \"no_identd %u %p\"
";

#[test]
fn socks4d_under_systemd_as_pid1() {
    if left_out(Slow::Container) {
        return;
    }
    let Some(c) = container::boot("socks4d-systemd-test") else {
        return;
    };
    let probes = Probes::start(&c);
    install(&c, &probes);
    let servers = Servers::start(&c);
    let mut ports = Vec::new();

    // Accept=yes: socks4d.socket with socks4d@.service.
    c.sh_ok("systemctl enable --now socks4d.socket");
    assert_eq!(c.sh_ok("systemctl is-active socks4d.socket").trim(), "active");
    downloads(&c, &servers, PROXY);
    confined(&c, &servers, &probes, PROXY, "socks4d.socket");
    ident_and_hooks(&c, &servers, PROXY, &mut ports);
    bind(&c, PROXY, &mut ports);
    commands_run_to_their_end(&c, &servers, PROXY, 20, &mut ports);
    settled(&c, "socks4d.socket");
    audit_lines(&c, &ports);
    burst(&c, &servers, PROXY, Burst::OneAddress, Expect::Served(32));
    settled(&c, "socks4d.socket");
    burst(&c, &servers, PROXY, Burst::ManyAddresses, Expect::Served(256));
    settled(&c, "socks4d.socket");
    assert_eq!(
        exchange(&c, &servers, PROXY, None, b"root"),
        0x5A,
        "served after the bursts"
    );

    // Accept=no: socks4d-listen.socket with one socks4d-listen.service.
    c.sh_ok("systemctl disable --now socks4d.socket && systemctl enable --now socks4d-listen.socket");
    downloads(&c, &servers, PROXY);
    confined(&c, &servers, &probes, PROXY, "socks4d-listen.socket");
    reloads(&c, &servers);
    let mut listen_ports = Vec::new();
    commands_run_to_their_end(&c, &servers, PROXY, 5, &mut listen_ports);
    burst(&c, &servers, PROXY, Burst::ManyAddresses, Expect::Served(256));
    assert_eq!(c.sh_ok("systemctl is-active socks4d-listen.service").trim(), "active");
    assert_eq!(
        exchange(&c, &servers, PROXY, None, b"root"),
        0x5A,
        "served after the burst"
    );
    audit_lines(&c, &listen_ports);
    c.sh_ok("systemctl stop socks4d-listen.socket socks4d-listen.service");
    assert_eq!(
        c.sh_ok("systemctl show -p Result --value socks4d-listen.service")
            .trim(),
        "success"
    );
    let journal = c.journal("socks4d");
    assert!(journal.contains("stopping children="), "{journal}");
    assert!(
        !journal.contains("confine gap="),
        "a handler was not fully confined:\n{journal}"
    );

    // inetd, with the line from examples/inetd.conf.
    inetd(&c, &servers, &probes);
    settled(&c, "inetd.service");
}

/// install.sh run inside, as an administrator would: it creates the user
/// and reloads systemd. Then the rules, a user for ident, and drop-ins
/// that let the handlers run the probe (`--readable` its directory; the
/// confinement is otherwise the shipped one).
fn install(c: &Container, probes: &Probes) {
    let top = env!("CARGO_MANIFEST_DIR");
    let out = c.sh_ok(&format!("SOCKS4D_BIN={} {top}/install.sh", bin().display()));
    assert!(out.contains("user socks4d is there"), "{out}");
    assert!(c.sh_ok("id -u socks4d").trim().parse::<u32>().is_ok());
    let rules = RULES
        .replace("PROBE", &probes.path.display().to_string())
        .replace("COLLECTOR", &probes.addr.to_string());
    c.sh_ok(&format!(
        "cat > /etc/socks4d.conf <<'EOF'\n{rules}EOF\nuseradd -u {ALICE} -M -s /usr/sbin/nologin alice"
    ));
    let readable = probes.readable();
    for (unit, args) in [
        ("socks4d@.service", readable.clone()),
        ("socks4d-listen.service", format!("--max-children 256 {readable}")),
    ] {
        c.sh_ok(&format!(
            "mkdir -p /etc/systemd/system/{unit}.d && \
             printf '[Service]\\nExecStart=\\nExecStart=/usr/sbin/socks4d {args}\\n' > /etc/systemd/system/{unit}.d/probe.conf"
        ));
    }
    c.sh_ok("systemctl daemon-reload");
}

/// The probe reports of a round: (handler pid, lines).
type Reports = Vec<(u32, Vec<String>)>;

/// The collector of the confinement probe's reports (tests/probe), in the
/// container's network. Each probe says `hello PID` (its handler's pid) and
/// is told `other PID`: the handler of the round's first probe, or 0.
struct Probes {
    path: std::path::PathBuf,
    addr: SocketAddr,
    /// (handler pid, lines) of the reports of this round.
    reports: Arc<Mutex<Reports>>,
}

impl Probes {
    fn start(c: &Container) -> Probes {
        let reports: Arc<Mutex<Reports>> = Arc::new(Mutex::new(Vec::new()));
        let r = reports.clone();
        let addr = c.in_net(None, move || {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            thread::spawn(move || {
                for s in l.incoming().flatten() {
                    let r = r.clone();
                    thread::spawn(move || collect(s, &r));
                }
            });
            addr
        });
        // A copy inside the container: the repository's own path may be
        // under /tmp or /home, which the sandboxed Accept=no service has
        // private or hidden.
        let path = std::path::PathBuf::from("/usr/local/libexec/socks4d-test/confine-probe");
        c.sh_ok(&format!("install -D -m 755 {} {}", probe().display(), path.display()));
        Probes { path, addr, reports }
    }

    /// The option that lets handlers run the probe.
    fn readable(&self) -> String {
        format!("--readable {}", self.path.parent().unwrap().display())
    }
}

fn collect(s: TcpStream, reports: &Mutex<Reports>) {
    use std::io::BufRead;
    s.set_read_timeout(Some(IO)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut lines = std::io::BufReader::new(s).lines();
    let Some(Ok(hello)) = lines.next() else { return };
    let Some(pid) = hello.strip_prefix("hello ").and_then(|p| p.parse::<u32>().ok()) else {
        return;
    };
    let other = reports.lock().unwrap().first().map_or(0, |r| r.0);
    if w.write_all(format!("other {other}\n").as_bytes()).is_err() {
        return;
    }
    let index = {
        let mut all = reports.lock().unwrap();
        all.push((pid, Vec::new()));
        all.len() - 1
    };
    for line in lines.map_while(Result::ok) {
        reports.lock().unwrap()[index].1.push(line);
    }
}

/// The probe as the rule's command of two connections held open at once
/// under `what`: what the second one may do, to the system and to the
/// first handler. The checks of tests/confine.rs, under the real units.
fn confined(c: &Container, s: &Servers, probes: &Probes, proxy: &str, what: &str) {
    probes.reports.lock().unwrap().clear();
    let proxy: SocketAddr = proxy.parse().unwrap();
    let hold = s.hold;
    let open = |n: usize| {
        let t = c.in_net(None, move || {
            let mut t = TcpStream::connect(proxy).unwrap();
            t.set_read_timeout(Some(IO)).unwrap();
            t.write_all(&connect_req(hold, b"probe")).unwrap();
            let mut r = [0u8; 8];
            t.read_exact(&mut r).unwrap();
            assert_eq!(r[1], 0x5A, "probe connection");
            t
        });
        let start = Instant::now();
        while !probes
            .reports
            .lock()
            .unwrap()
            .get(n)
            .is_some_and(|r| r.1.iter().any(|l| l == "done"))
        {
            assert!(start.elapsed() < IO, "{what}: probe {n} did not report");
            thread::sleep(Duration::from_millis(50));
        }
        t
    };
    let first = open(0);
    let second = open(1);
    let (first_pid, report) = {
        let all = probes.reports.lock().unwrap();
        (all[0].0, all[1].1.clone())
    };
    drop((first, second));
    s.held.lock().unwrap().clear();
    let outcome = |name: &str| -> String {
        report
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{what}: no {name} in the probe's report:\n{report:#?}"))
            .to_string()
    };
    for name in [
        "write_tmp",
        "write_var_tmp",
        "write_etc",
        "write_dev_shm",
        "list_home",
        "read_root",
        "list_var",
        "list_sys",
        "proc_1",
        "proc_self",
        "proc_other",
        "ptrace_other",
        "process_vm_readv_other",
        "kill_other",
        "pidfd_signal_other",
        "kill_init",
    ]
    .iter()
    .chain(SECCOMP_DENIED)
    {
        let o = outcome(name);
        assert!(
            o.starts_with("denied "),
            "{what}: {name} {o} (other handler {first_pid})"
        );
    }
    for name in [
        "tcp_connect",
        "read_etc",
        "write_dev_null",
        "kill_handler",
        "socket_udp",
        "socket_unix",
        "mmap_rw",
    ] {
        assert_eq!(outcome(name), "allowed", "{what}: {name}");
    }
    assert_eq!(outcome("no_new_privs"), "1", "{what}");
    assert_eq!(outcome("seccomp_mode"), "2", "{what}");
    assert_ne!(outcome("uid"), "0", "{what}");
}

/// Destinations in the container's network: a web server for curl, an echo
/// server, and a holder that keeps every connection open until released.
struct Servers {
    body: Vec<u8>,
    web: SocketAddr,
    echo: SocketAddr,
    hold: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Servers {
    fn start(c: &Container) -> Servers {
        let body = payload(4 << 20, 90);
        let b = body.clone();
        let web = c.in_net(None, move || http_server(b));
        let echo = c.in_net(None, echo_server);
        let (hold, held) = c.in_net(None, holder);
        Servers {
            body,
            web,
            echo,
            hold,
            held,
        }
    }
}

/// curl through `proxy` by address and by name, byte for byte. curl runs as
/// root, whom oidentd names, so it claims root.
fn downloads(c: &Container, s: &Servers, proxy: &str) {
    for (scheme, host) in [("socks4", "127.0.0.1"), ("socks4a", "localhost")] {
        let url = format!("http://{host}:{}/file", s.web.port());
        let out = c
            .net_cmd("curl")
            .args(["-sS", "--max-time", "30", "--proxy"])
            .arg(format!("{scheme}://root@{proxy}"))
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {scheme} {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), s.body.len(), "curl {scheme}");
        assert_eq!(checksum(&out.stdout), checksum(&s.body), "curl {scheme}: bytes differ");
    }
}

/// One CONNECT to the echo server claiming `user`, from a socket of file-system
/// uid `fsuid`. When granted, a message goes through and back. Returns
/// the reply code.
fn exchange(c: &Container, s: &Servers, proxy: &str, fsuid: Option<u32>, user: &[u8]) -> u8 {
    exchange_port(c, s, proxy, fsuid, user).0
}

/// As [`exchange`], also returning the client's port.
fn exchange_port(c: &Container, s: &Servers, proxy: &str, fsuid: Option<u32>, user: &[u8]) -> (u8, u16) {
    let req = connect_req(s.echo, user);
    let proxy: SocketAddr = proxy.parse().unwrap();
    c.in_net(fsuid, move || {
        let mut t = TcpStream::connect(proxy).expect("connect to the proxy");
        t.set_read_timeout(Some(IO)).unwrap();
        let port = t.local_addr().unwrap().port();
        t.write_all(&req).unwrap();
        let mut reply = [0u8; 8];
        t.read_exact(&mut reply).expect("a reply");
        if reply[1] == 0x5A {
            let msg = payload(100_000, u64::from(port));
            t.write_all(&msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            t.read_exact(&mut back).unwrap();
            assert!(back == msg, "echo through the proxy differs");
        }
        (reply[1], port)
    })
}

/// The Accept=no unit applies an edit of the rules to the next
/// connection, and `systemctl reload` reads them at once, with a journal
/// line, the service staying up.
fn reloads(c: &Container, s: &Servers) {
    assert_eq!(exchange(c, s, PROXY, None, b"root"), 0x5A);
    c.sh_ok("sed -i '1i deny *=root 127.0.0.0/8' /etc/socks4d.conf");
    assert_eq!(exchange(c, s, PROXY, None, b"root"), 0x5B, "the edit applied");
    c.sh_ok("sed -i '1d' /etc/socks4d.conf");
    assert_eq!(exchange(c, s, PROXY, None, b"root"), 0x5A, "the edit undone");
    c.sh_ok("systemctl reload socks4d-listen.service");
    let start = Instant::now();
    loop {
        let journal = c.journal("socks4d");
        if journal.contains("reload why=\"SIGHUP\"") {
            assert!(journal.contains("outcome=ok"), "{journal}");
            break;
        }
        assert!(start.elapsed() < IO, "no reload line:\n{journal}");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.sh_ok("systemctl is-active socks4d-listen.service").trim(), "active");
    assert_eq!(exchange(c, s, PROXY, None, b"root"), 0x5A, "served after the reload");
}

/// Ident required, against the container's oidentd: a match is 5A, a
/// mismatch 5D (and the #BAD_ID: hook runs), no identd 5C (and the
/// #NO_IDENTD: hook runs); a denied user gets 5B and its rule's command.
fn ident_and_hooks(c: &Container, s: &Servers, proxy: &str, ports: &mut Vec<u16>) {
    let mut one = |fsuid, user: &[u8], want: u8| {
        let (code, port) = exchange_port(c, s, proxy, fsuid, user);
        assert_eq!(
            code,
            want,
            "{} claiming {:?}",
            fsuid.map_or("root".into(), |u: u32| u.to_string()),
            String::from_utf8_lossy(user)
        );
        ports.push(port);
    };
    one(Some(ALICE), b"alice", 0x5A);
    one(None, b"root", 0x5A);
    one(Some(ALICE), b"bob", 0x5D);
    one(None, b"mallory", 0x5B);
    c.sh_ok("systemctl stop oidentd.socket oidentd.service");
    one(Some(ALICE), b"alice", 0x5C);
    c.sh_ok("systemctl start oidentd.socket");
    one(Some(ALICE), b"alice", 0x5A);

    let cmds = c
        .wait_journal("socks4d-cmd", SETTLE, |j| {
            j.contains("bad_id bob") && j.contains("no_identd alice") && j.contains("deny mallory")
        })
        .unwrap_or_else(|j| panic!("hooks missing; the command journal:\n{j}"));
    assert!(cmds.contains("permit alice"), "{cmds}");
}

/// BIND: the first reply names where to call, the call from the
/// application server's address gets the second reply, then bytes flow
/// both ways.
fn bind(c: &Container, proxy: &str, ports: &mut Vec<u16>) {
    let proxy: SocketAddr = proxy.parse().unwrap();
    let port = c.in_net(None, move || {
        let mut t = TcpStream::connect(proxy).unwrap();
        t.set_read_timeout(Some(IO)).unwrap();
        let port = t.local_addr().unwrap().port();
        t.write_all(&encode(&Request {
            command: Cd::Bind,
            port: 21,
            ip: Ipv4Addr::LOCALHOST,
            userid: b"root".to_vec(),
            hostname: None,
        }))
        .unwrap();
        let mut first = [0u8; 8];
        t.read_exact(&mut first).unwrap();
        assert_eq!(first[1], 0x5A, "BIND first reply {first:02x?}");
        let at = SocketAddrV4::new(Ipv4Addr::LOCALHOST, u16::from_be_bytes([first[2], first[3]]));
        let mut app = TcpStream::connect(at).expect("call the BIND address");
        app.set_read_timeout(Some(IO)).unwrap();
        let mut second = [0u8; 8];
        t.read_exact(&mut second).unwrap();
        assert_eq!(second[1], 0x5A, "BIND second reply {second:02x?}");
        let (up, down) = (payload(300_000, 1), payload(500_000, 2));
        let u = up.clone();
        let mut t2 = t.try_clone().unwrap();
        let w = thread::spawn(move || {
            t2.write_all(&u).unwrap();
            t2.shutdown(Shutdown::Write).unwrap();
        });
        let mut got_up = vec![0u8; up.len()];
        app.read_exact(&mut got_up).unwrap();
        app.write_all(&down).unwrap();
        app.shutdown(Shutdown::Write).unwrap();
        let mut got_down = Vec::new();
        t.read_to_end(&mut got_down).unwrap();
        w.join().unwrap();
        assert_eq!(checksum(&got_up), checksum(&up), "BIND: upstream bytes");
        assert_eq!(checksum(&got_down), checksum(&down), "BIND: downstream bytes");
        port
    });
    ports.push(port);
}

/// `n` connections whose rule runs a command that sleeps a second, then
/// logs: every one of them must log, long after its socks4d has exited.
fn commands_run_to_their_end(c: &Container, s: &Servers, proxy: &str, n: usize, ports: &mut Vec<u16>) {
    let before = c.journal("socks4d-cmd").matches("permit alice").count();
    for _ in 0..n {
        let (code, port) = exchange_port(c, s, proxy, Some(ALICE), b"alice");
        assert_eq!(code, 0x5A);
        ports.push(port);
    }
    let want = before + n;
    c.wait_journal("socks4d-cmd", SETTLE, |j| j.matches("permit alice").count() >= want)
        .unwrap_or_else(|j| {
            panic!(
                "{} of {n} commands ran to their end:\n{j}",
                j.matches("permit alice").count() - before
            )
        });
}

/// Waits until no socks4d instance is left and nothing failed; `unit`
/// must still be active.
fn settled(c: &Container, unit: &str) {
    let start = Instant::now();
    loop {
        let left = c.sh_ok("systemctl list-units --all --no-legend --plain 'socks4d@*'");
        let procs = c.sh("pgrep -x socks4d");
        let running = String::from_utf8_lossy(&procs.stdout).trim().to_string();
        if left.trim().is_empty() && running.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < SETTLE,
            "instances left after {SETTLE:?}:\n{left}\nprocesses: {running}"
        );
        thread::sleep(Duration::from_millis(250));
    }
    let failed = c.sh_ok("systemctl --failed --no-legend --plain");
    assert!(failed.trim().is_empty(), "failed units: {failed}");
    assert_eq!(c.sh_ok(&format!("systemctl is-active {unit}")).trim(), "active");
}

/// A decision line and an end line in the journal for each client port.
fn audit_lines(c: &Container, ports: &[u16]) {
    let j = c
        .wait_journal("socks4d", SETTLE, |j| {
            ports.iter().all(|p| {
                let client = format!("client=127.0.0.1:{p} ");
                j.lines().any(|l| l.starts_with("decision ") && l.contains(&client))
                    && j.lines().any(|l| l.starts_with("end ") && l.contains(&client))
            })
        })
        .unwrap_or_else(|j| panic!("audit lines missing for some of {ports:?}:\n{j}"));
    assert!(!j.contains("confine gap="), "a handler was not fully confined:\n{j}");
}

/// 1000 connections within about 2 s through `proxy` (see
/// [`crate::common::burst`]), from the container's network; checks what was served.
fn burst(c: &Container, s: &Servers, proxy: &str, kind: Burst, expect: Expect) {
    let proxy: SocketAddr = proxy.parse().unwrap();
    // Held connections go to the holder; the others to the echo server,
    // which closes when the client does.
    let dest = if matches!(expect, Expect::Served(_)) {
        s.hold
    } else {
        s.echo
    };
    let outcome = c.in_net(None, move || crate::common::burst(proxy, dest, kind, expect));
    s.held.lock().unwrap().clear();
    outcome.check(kind, expect);
}

/// The inetd line of examples/inetd.conf, on 127.0.0.1:1081: downloads, a
/// command run to its end, and a burst of 1000 short connections that
/// leaves the service on.
fn inetd(c: &Container, s: &Servers, probes: &Probes) {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/inetd.conf")).unwrap();
    let line = example
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("an active line in examples/inetd.conf");
    let mut fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "socks");
    fields[0] = INETD_PROXY;
    c.sh_ok(&format!(
        "echo '{} {}' > /etc/inetd.conf && systemctl restart inetd.service",
        fields.join("\t"),
        probes.readable()
    ));
    let addr: SocketAddr = INETD_PROXY.parse().unwrap();
    let start = Instant::now();
    while c.in_net(None, move || TcpStream::connect(addr).is_err()) {
        assert!(start.elapsed() < IO, "inetd does not listen on {INETD_PROXY}");
        thread::sleep(Duration::from_millis(100));
    }
    downloads(c, s, INETD_PROXY);
    confined(c, s, probes, INETD_PROXY, "inetd");
    let mut ports = Vec::new();
    commands_run_to_their_end(c, s, INETD_PROXY, 5, &mut ports);
    ident_and_hooks(c, s, INETD_PROXY, &mut ports);
    audit_lines(c, &ports);
    burst(c, s, INETD_PROXY, Burst::OneAddress, Expect::All);
    assert_eq!(
        exchange(c, s, INETD_PROXY, None, b"root"),
        0x5A,
        "inetd serves after the burst"
    );
}
