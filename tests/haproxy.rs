//! socks4d(8), DEPLOYMENT, "Several hosts", run: socks4d listeners behind
//! a real HAProxy (Debian's package) in TCP mode, with `send-proxy-v2` and `send-proxy`,
//! its backend `source` set to 127.0.0.9, which socks4d trusts with
//! `--proxy-protocol`. curl clients from two loopback addresses; the rules
//! permit one and deny the other by the address HAProxy saw; the audit
//! lines name the real clients and, with `via=`, the balancer.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// The balancer's source address toward the socks4d hosts.
const BALANCER: &str = "127.0.0.9";
const PERMITTED: &str = "127.0.0.5";
const DENIED: &str = "127.0.0.6";

/// Whether something listens on IPv4 `addr`, from the kernel's table (a
/// test connection would go through to a backend).
fn listening(addr: SocketAddr) -> bool {
    let SocketAddr::V4(a) = addr else { panic!("IPv4 only") };
    let want = format!("{:08X}:{:04X}", u32::from_le_bytes(a.ip().octets()), a.port());
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        })
}

/// HAProxy with `config`, in the foreground, until dropped.
fn haproxy(program: &PathBuf, dir: &TempDir, config: &str, fronts: &[SocketAddr]) -> Guard {
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = Command::new(program).arg("-c").arg("-f").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(program)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let guard = Guard(child);
    let start = Instant::now();
    while !fronts.iter().all(|&a| listening(a)) {
        assert!(start.elapsed() < IO_TIMEOUT, "haproxy is not listening on {fronts:?}");
        thread::sleep(Duration::from_millis(20));
    }
    guard
}

/// curl from `src` through the SOCKS4 proxy at `proxy` to `url`: its
/// status and output.
fn curl_from(src: &str, proxy: SocketAddr, url: &str) -> std::process::Output {
    curl(Command::new("curl").args(["--interface", src, "--socks4", &proxy.to_string(), url]))
}

fn curl(cmd: &mut Command) -> std::process::Output {
    run_with_input(
        cmd.args(["-sS", "--max-time", "20"]),
        Vec::new(),
        IO_TIMEOUT + Duration::from_secs(5),
    )
}

/// The HAProxy configuration of socks4d(8)'s example, on loopback: one TCP
/// frontend, and a backend of `servers` (name, address) with `send`
/// (`send-proxy-v2` or `send-proxy`) and `check` options, from `BALANCER`.
fn config(frontend: SocketAddr, servers: &[(&str, SocketAddr)], send: &str) -> String {
    let mut c = format!(
        "global\n    maxconn 64\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n    timeout tunnel 2h\n\
         frontend socks\n    bind {frontend}\n    default_backend socks4d\n\
         backend socks4d\n    balance roundrobin\n    source {BALANCER}\n"
    );
    for (name, addr) in servers {
        c.push_str(&format!("    server {name} {addr} {send}\n"));
    }
    c
}

/// Stops a `--listen` socks4d and returns its log.
fn log_of(mut g: Guard) -> String {
    let _ = g.0.kill();
    let _ = g.0.wait();
    stderr_of(&mut g.0)
}

#[test]
fn two_socks4d_behind_haproxy_see_the_real_clients() {
    let Some(program) = require_program("haproxy", &["haproxy"]) else {
        return;
    };
    if !require("curl") {
        return;
    }
    let dir = TempDir::new("haproxy");
    let rules = dir.path().join("socks4d.conf");
    std::fs::write(
        &rules,
        format!("permit {PERMITTED}/32\ndeny {DENIED}/32\ndeny 0.0.0.0/0\n"),
    )
    .unwrap();
    let rules = rules.display().to_string();
    // What socks4d(8) says to set on each host.
    let args = [
        "--proxy-protocol",
        BALANCER,
        "--ident",
        "off",
        "--log-stderr",
        "-f",
        &rules,
    ];
    let (host1, addr1) = spawn_listen(&args);
    let (host2, addr2) = spawn_listen(&args);

    let body = payload(300 << 10, 41);
    let web = http_server(body.clone());
    let url = format!("http://{web}/file");

    let (v2, v1) = (free_port(), free_port());
    let config = format!(
        "global\n\
         \x20   maxconn 64\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         \x20   timeout tunnel 2h\n\
         frontend socks-v2\n\
         \x20   bind 127.0.0.1:{v2}\n\
         \x20   default_backend socks4d-v2\n\
         backend socks4d-v2\n\
         \x20   balance roundrobin\n\
         \x20   source {BALANCER}\n\
         \x20   server host1 {addr1} send-proxy-v2 check inter 300ms\n\
         \x20   server host2 {addr2} send-proxy-v2 check inter 300ms\n\
         frontend socks-v1\n\
         \x20   bind 127.0.0.1:{v1}\n\
         \x20   default_backend socks4d-v1\n\
         backend socks4d-v1\n\
         \x20   balance roundrobin\n\
         \x20   source {BALANCER}\n\
         \x20   server host1 {addr1} send-proxy\n\
         \x20   server host2 {addr2} send-proxy\n"
    );
    let front_v2: SocketAddr = format!("127.0.0.1:{v2}").parse().unwrap();
    let front_v1: SocketAddr = format!("127.0.0.1:{v1}").parse().unwrap();
    let balancer = haproxy(&program, &dir, &config, &[front_v2, front_v1]);

    let mut granted = 0;
    for front in [front_v2, front_v2, front_v2, front_v2, front_v1, front_v1] {
        let out = curl_from(PERMITTED, front, &url);
        assert!(
            out.status.success(),
            "curl from {PERMITTED} via {front}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(checksum(&out.stdout), checksum(&body));
        granted += 1;
    }
    for front in [front_v2, front_v1] {
        let out = curl_from(DENIED, front, &url);
        assert!(!out.status.success(), "{DENIED} got through {front}");
        assert!(out.stdout.is_empty());
    }
    // Let a few health checks happen.
    thread::sleep(Duration::from_millis(700));
    drop(balancer);
    let logs = [log_of(host1), log_of(host2)];

    let decisions = |log: &str, what: &str| -> usize {
        log.lines()
            .filter(|l| l.contains("]: decision ") && l.contains(what))
            .inspect(|l| assert!(l.contains(&format!(" via={BALANCER}:")), "{l}"))
            .count()
    };
    let permitted = format!("client={PERMITTED}:");
    let denied = format!("client={DENIED}:");
    let per_host: Vec<usize> = logs.iter().map(|l| decisions(l, &permitted)).collect();
    assert_eq!(per_host.iter().sum::<usize>(), granted, "{logs:?}");
    // Round robin over both hosts, in each frontend.
    assert_eq!(per_host, [3, 3], "{logs:?}");
    for log in &logs {
        for l in log
            .lines()
            .filter(|l| l.contains("]: decision ") && l.contains(&permitted))
        {
            assert!(l.contains(" reason=granted "), "{l}");
        }
        for l in log.lines().filter(|l| l.contains("]: end ") && l.contains(&permitted)) {
            assert!(l.contains(&format!("cmd=connect dst={web} ")), "{l}");
            assert!(l.contains(" end=dest-eof ") || l.contains(" end=client-eof "), "{l}");
            assert!(l.contains(&format!(" via={BALANCER}:")), "{l}");
        }
        // HAProxy's v2 health checks: LOCAL, one line each, no decision.
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("]: health via={BALANCER}:")) && l.ends_with(" proxy=v2-local")),
            "{log}"
        );
        assert!(!log.contains("reason=proxy-"), "{log}");
    }
    let refused: Vec<&str> = logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("]: decision ") && l.contains(&denied))
        .collect();
    assert_eq!(refused.len(), 2, "{logs:?}");
    for l in refused {
        assert!(l.contains(" reply=5b reason=denied "), "{l}");
        assert!(l.contains(&format!(" rule={rules}:2 ")), "{l}");
        assert!(l.contains(&format!(" via={BALANCER}:")), "{l}");
    }
}

/// Ident through the balancer, with the real oidentd: socks4d asks the
/// client's host about the client's port and the port the client reached
/// on the balancer (127.0.0.12), from that address, which this host has
/// (the balancer runs here), not from its own (127.0.0.1). oidentd finds
/// the client's connection and names its owner; asked from another
/// address, it finds none, which is why ident through a balancer on
/// another host fails against it.
#[test]
fn ident_through_haproxy_with_the_real_oidentd() {
    // Root, to run oidentd on port 113.
    if !require_root() {
        return;
    }
    let Some(program) = require_program("haproxy", &["haproxy"]) else {
        return;
    };
    if !require("curl") || !require("oidentd") {
        return;
    }
    let identd_addr = format!("{PERMITTED}:{IDENT_PORT}");
    let taken = TcpStream::connect(&identd_addr).is_ok();
    if !require_that(!taken, format!("something else listens on {identd_addr}")) {
        return;
    }
    let user = "socks4dtest";
    let u = system_user(user);
    let _oidentd = oidentd(PERMITTED.parse().unwrap());

    let dir = TempDir::new("haproxy-ident");
    let rules = dir.path().join("socks4d.conf");
    std::fs::write(&rules, format!("permit ?=I {PERMITTED}/32\ndeny 0.0.0.0/0\n")).unwrap();
    let rules = rules.display().to_string();
    let (host, addr) = spawn_listen(&["--proxy-protocol", BALANCER, "--log-stderr", "-f", &rules]);
    let body = payload(64 << 10, 42);
    let url = format!("http://{}/", http_server(body.clone()));
    let front: SocketAddr = format!("127.0.0.12:{}", free_port()).parse().unwrap();
    let balancer = haproxy(
        &program,
        &dir,
        &config(front, &[("host1", addr)], "send-proxy-v2"),
        &[front],
    );

    // curl as `user`, claiming `claim` as its SOCKS4 user-id.
    let fetch = |claim: &str| {
        let mut cmd = Command::new("curl");
        cmd.args([
            "--interface",
            PERMITTED,
            "-x",
            &format!("socks4://{claim}@{front}"),
            &url,
        ])
        .uid(u.uid.as_raw())
        .gid(u.gid.as_raw());
        curl(&mut cmd)
    };
    let out = fetch(user);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(checksum(&out.stdout), checksum(&body));
    let out = fetch("mallory");
    assert!(!out.status.success());

    // What oidentd answers about a live connection through the balancer,
    // asked from the frontend's address and from another one.
    let held = connect_from(PERMITTED.parse().unwrap(), front);
    let ask = |from: &str| {
        let mut q = connect_from(from.parse().unwrap(), identd_addr.parse().unwrap());
        let ports = format!("{} , {}", held.local_addr().unwrap().port(), front.port());
        std::io::Write::write_all(&mut q, format!("{ports}\r\n").as_bytes()).unwrap();
        String::from_utf8(read_all(&mut q)).unwrap()
    };
    let (here, elsewhere) = (ask("127.0.0.12"), ask("127.0.0.1"));
    assert!(
        here.contains(":USERID:UNIX:root"),
        "asked from the frontend address: {here:?}"
    );
    assert!(
        elsewhere.contains(":ERROR:NO-USER"),
        "asked from another address: {elsewhere:?}"
    );
    drop(held);
    drop(balancer);
    let log = log_of(host);
    let decisions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("]: decision ") && l.contains(&format!("client={PERMITTED}:")))
        .filter(|l| l.contains(" cmd=connect "))
        .collect();
    assert_eq!(decisions.len(), 2, "{log}");
    assert!(
        decisions[0].contains(&format!("ident=\"ok\" ident_user=\"{user}\" reply=5a reason=granted")),
        "{}",
        decisions[0]
    );
    assert!(
        decisions[1].contains(&format!("ident=\"mismatch: {user}\" ident_user=\"{user}\" reply=5d")),
        "{}",
        decisions[1]
    );
    for d in decisions {
        assert!(d.contains(&format!(" via={BALANCER}:")), "{d}");
    }
}
