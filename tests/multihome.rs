//! The outgoing address on a host with several: `--route` (the classic
//! sockd.route form), `--outgoing-address ADDR|same`, BIND on the route's
//! address, the `src=` log key, and keepalive on the destination socket.
//! Loopback has every 127.0.0.0/8 address, so 127.0.0.2, 127.0.0.3, ...
//! stand in for a multi-homed host's interfaces; destination servers
//! record the peer they see.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::common::*;

const EXIT: Duration = Duration::from_secs(20);

/// A destination on `ip` that records the peer it sees, then echoes.
fn recording_dest(ip: &str) -> (SocketAddr, mpsc::Receiver<SocketAddr>, thread::JoinHandle<()>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let (s, peer) = l.accept().unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tx.send(peer).unwrap();
        echo(s);
    });
    (addr, rx, handle)
}

fn reply_addr(r: &[u8; 8]) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(r[4], r[5], r[6], r[7]),
        u16::from_be_bytes([r[2], r[3]]),
    ))
}

/// Sends `data` through `client` after a granted reply and checks that
/// the echo comes back whole.
fn echo_check(client: &mut TcpStream, len: usize, seed: u64) {
    let data = payload(len, seed);
    let mut w = client.try_clone().unwrap();
    let d2 = data.clone();
    let t = thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let back = read_all(client);
    t.join().unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(checksum(&back), checksum(&data));
}

/// One CONNECT through an inetd-style socks4d with `args` to `dst`
/// (SOCKS4, or SOCKS4a when `host` is given); returns the reply and the
/// log, having relayed 1 MiB each way.
fn connect_through(args: &[&str], dst: SocketAddr, host: Option<&str>) -> ([u8; 8], String) {
    let mut all = vec!["--ident", "off", "--log-stderr"];
    all.extend_from_slice(args);
    let mut s = spawn_stdin(&all);
    let req = match host {
        None => connect_req(dst, b"u"),
        Some(h) => connect_4a(h, dst.port(), b"u"),
    };
    s.client.write_all(&req).unwrap();
    let reply = read_reply(&mut s.client);
    if reply[1] == 0x5A {
        echo_check(&mut s.client, 1 << 20, u64::from(dst.port()));
    }
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0), "{log}");
    (reply, log)
}

fn route_file(dir: &TempDir, text: &str) -> String {
    let p = dir.path().join("socks4d.route");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn route_lines_decide_the_source_first_match_wins() {
    let dir = TempDir::new("route");
    let routes = route_file(
        &dir,
        "# classic form, then the prefix form\n\
         127.0.0.2 127.0.0.1 255.255.255.255\n\
         127.0.0.3\t127.0.0.0/8   # the rest of loopback\n",
    );
    for (dst_ip, want) in [("127.0.0.1", "127.0.0.2"), ("127.0.0.4", "127.0.0.3")] {
        let (dst, seen, h) = recording_dest(dst_ip);
        let (reply, log) = connect_through(&["--route", &routes], dst, None);
        assert_eq!(reply[1], 0x5A, "{log}");
        let peer = seen.recv_timeout(IO_TIMEOUT).unwrap();
        h.join().unwrap();
        assert_eq!(peer.ip().to_string(), want, "the destination saw {peer}");
        // The reply names socks4d's end of the destination connection.
        assert_eq!(reply_addr(&reply), peer);
        let d = line(&log, "decision");
        assert!(
            d.contains(&format!(
                "reason=granted detail=- bind=- expect=- src={peer} hop=- via=-"
            )),
            "{d}"
        );
        let e = line(&log, "end");
        assert!(e.contains(&format!("up={n} down={n}", n = 1 << 20)), "{e}");
        assert!(e.ends_with(&format!("src={peer} hop=- via=-")), "{e}");
    }
    // Without the file, the kernel picks 127.0.0.1 for a loopback peer.
    let (dst, seen, h) = recording_dest("127.0.0.1");
    let (reply, log) = connect_through(&[], dst, None);
    assert_eq!(reply[1], 0x5A, "{log}");
    assert_eq!(seen.recv_timeout(IO_TIMEOUT).unwrap().ip(), Ipv4Addr::LOCALHOST);
    h.join().unwrap();
}

#[test]
fn outgoing_address_decides_what_no_route_does_in_each_family() {
    let dir = TempDir::new("route");
    let routes = route_file(&dir, "127.0.0.3 127.0.0.4/32\n0.0.0.0 127.0.0.6/32\n");
    let out = [
        "--route",
        routes.as_str(),
        "--outgoing-address",
        "127.0.0.5",
        "--outgoing-address",
        "::1",
    ];
    for (dst_ip, want) in [
        ("127.0.0.4", "127.0.0.3"),
        ("127.0.0.1", "127.0.0.5"),
        // A line with an unspecified interface: as if none matched.
        ("127.0.0.6", "127.0.0.5"),
    ] {
        let (dst, seen, h) = recording_dest(dst_ip);
        let (reply, log) = connect_through(&out, dst, None);
        assert_eq!(reply[1], 0x5A, "{log}");
        assert_eq!(seen.recv_timeout(IO_TIMEOUT).unwrap().ip().to_string(), want, "{log}");
        h.join().unwrap();
    }
    // IPv6 through a SOCKS4a name: the IPv6 --outgoing-address.
    let (dst, seen, h) = recording_dest("::1");
    let (reply, log) = connect_through(&out, dst, Some("::1"));
    assert_eq!(reply[1], 0x5A, "{log}");
    let peer = seen.recv_timeout(IO_TIMEOUT).unwrap();
    h.join().unwrap();
    assert_eq!(peer.ip(), "::1".parse::<IpAddr>().unwrap());
    assert!(
        line(&log, "decision").contains(&format!("src={} hop=- via=-", socks4d::audit::addr(peer))),
        "{log}"
    );
}

#[test]
fn ipv6_route_lines() {
    let dir = TempDir::new("route");
    let routes = route_file(&dir, "127.0.0.2 0.0.0.0 0.0.0.0\n::1 ::1/128\n");
    let (dst, seen, h) = recording_dest("::1");
    let (reply, log) = connect_through(&["--route", &routes], dst, Some("::1"));
    assert_eq!(reply[1], 0x5A, "{log}");
    let peer = seen.recv_timeout(IO_TIMEOUT).unwrap();
    h.join().unwrap();
    assert_eq!(peer.ip(), "::1".parse::<IpAddr>().unwrap());
    // SOCKS4 replies carry IPv4 only: the address is zero, the log has it.
    assert_eq!(&reply[2..], &[0; 6]);
    let d = line(&log, "decision");
    assert!(d.contains(&format!("dst=[::1]:{}", dst.port())), "{d}");
    assert!(d.contains(&format!("src=[::1]:{}", peer.port())), "{d}");
}

/// `--outgoing-address same` with socks4d listening on two addresses:
/// each client's connection leaves from the address that client reached.
#[test]
fn outgoing_same_keeps_each_client_on_the_address_it_reached() {
    let port = free_port();
    let (a, b): (SocketAddr, SocketAddr) = (
        format!("127.0.0.2:{port}").parse().unwrap(),
        format!("127.0.0.3:{port}").parse().unwrap(),
    );
    let child = Command::new(bin())
        .args(["--listen", &a.to_string(), "--listen", &b.to_string()])
        .args(["--outgoing-address", "same", "--ident", "off", "--log-stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    wait_listening(a);
    wait_listening(b);
    for (proxy, round) in [(a, 0), (b, 1), (a, 2)] {
        let (dst, seen, h) = recording_dest("127.0.0.1");
        let mut c = connect_to(proxy);
        c.write_all(&connect_req(dst, b"")).unwrap();
        let reply = read_reply(&mut c);
        assert_eq!(reply[1], 0x5A);
        let peer = seen.recv_timeout(IO_TIMEOUT).unwrap();
        assert_eq!(
            peer.ip(),
            proxy.ip(),
            "round {round}: client reached {proxy}, destination saw {peer}"
        );
        assert_eq!(reply_addr(&reply), peer);
        echo_check(&mut c, 256 << 10, round);
        h.join().unwrap();
    }
    let _ = guard.0.kill();
    let _ = guard.0.wait();
    let log = stderr_of(&mut guard.0);
    // wait_listening's probes end as client-closed, without a command.
    let ends: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("]: end ") && l.contains(" cmd=connect "))
        .collect();
    assert_eq!(ends.len(), 3, "{log}");
    for (e, ip) in ends.iter().zip(["127.0.0.2", "127.0.0.3", "127.0.0.2"]) {
        assert!(e.contains(&format!("src={ip}:")), "{e}");
    }
}

#[test]
fn a_source_this_host_lacks_gets_5b() {
    let dir = TempDir::new("route");
    // TEST-NET-1: never an address of this host; nothing is sent there.
    let routes = route_file(&dir, "192.0.2.1 0.0.0.0/0\n");
    let dst = closed_port();
    let (reply, log) = connect_through(&["--route", &routes], dst, None);
    assert_eq!(reply, [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    let d = line(&log, "decision");
    assert!(d.contains("reply=5b reason=source-failed"), "{d}");
    assert!(d.contains(&format!("detail=\"192.0.2.1 for {dst}: ")), "{d}");
    assert!(d.contains("src=192.0.2.1:0 hop=- via=-"), "{d}");
}

#[test]
fn a_bad_or_missing_route_file_means_no_service() {
    let dir = TempDir::new("route");
    let bad = route_file(&dir, "127.0.0.2 127.0.0.0/8\n127.0.0.2 10.0.0.0\n");
    let dst = echo_server();
    let (reply, log) = connect_through(&["--route", &bad], dst, None);
    assert_eq!(reply[1], 0x5B, "{log}");
    assert!(
        log.contains(&format!(
            "config error: {bad}:2: no dst_mask after dst_addr \"10.0.0.0\""
        )),
        "{log}"
    );
    let d = line(&log, "decision");
    assert!(
        d.contains("reason=config-error") && d.contains(&format!("{bad}:2")),
        "{d}"
    );

    let missing = dir.path().join("absent.route").display().to_string();
    let (reply, log) = connect_through(&["--route", &missing], dst, None);
    assert_eq!(reply[1], 0x5B, "{log}");
    assert!(log.contains(&format!("config error: {missing}: cannot read")), "{log}");
}

#[test]
fn check_config_and_explain_cover_the_route_file() {
    let dir = TempDir::new("route");
    let rules = dir.path().join("socks4d.conf");
    std::fs::write(&rules, "permit 0.0.0.0/0\n").unwrap();
    let rules = rules.display().to_string();
    let good = route_file(&dir, "127.0.0.2 10.0.0.0 255.0.0.0\n192.0.2.1 192.0.2.0/24\n");
    let run = |args: &[&str]| {
        let out = Command::new(bin()).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--check-config", "-f", &rules, "--route", &good]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("{good}: 2 routes, OK, 1 warning")), "{out}");
    assert!(
        err.contains(&format!(
            "{good}:2: warning: interface_addr 192.0.2.1 cannot be used here"
        )),
        "{err}"
    );

    let bad = dir.path().join("bad.route").display().to_string();
    std::fs::write(&bad, "# ok\n127.0.0.2 10.0.0.0/8\nnonsense\n").unwrap();
    let (code, out, err) = run(&["--check-config", "-f", &rules, "--route", &bad]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains(&format!("{bad}: 1 error(s); no service until fixed")),
        "{out}"
    );
    assert!(err.contains(&format!("{bad}:3: a route needs")), "{err}");

    let (code, out, _) = run(&[
        "--explain",
        "-f",
        &rules,
        "--route",
        &good,
        "u",
        "127.0.0.1",
        "10.1.2.3",
        "80",
    ]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&format!(
            "route: {good}:1: 127.0.0.2 10.0.0.0 255.0.0.0\nsource: 127.0.0.2\n"
        )),
        "{out}"
    );
    let (_, out, _) = run(&[
        "--explain",
        "-f",
        &rules,
        "--route",
        &good,
        "--outgoing-address",
        "127.0.0.9",
        "u",
        "127.0.0.1",
        "198.51.100.1",
        "80",
    ]);
    assert!(
        out.contains("route: no line matches\nsource: 127.0.0.9 (--outgoing-address)\n"),
        "{out}"
    );
    let (_, out, _) = run(&[
        "--explain",
        "-f",
        &rules,
        "--outgoing-address",
        "same",
        "u",
        "127.0.0.1",
        "198.51.100.1",
        "80",
    ]);
    assert!(
        out.contains("source: the address the client connected to (--outgoing-address same)"),
        "{out}"
    );
    let (_, out, _) = run(&["--explain", "-f", &rules, "u", "127.0.0.1", "198.51.100.1", "80"]);
    assert!(out.ends_with("source: chosen by the kernel\n"), "{out}");
    let (code, _, err) = run(&[
        "--explain",
        "-f",
        &rules,
        "--route",
        &bad,
        "u",
        "127.0.0.1",
        "10.1.2.3",
        "80",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("{bad}:3:")), "{err}");
}

/// BIND listens on the route line's address for the application server,
/// names it in the first reply, and the server's call back is relayed.
#[test]
fn bind_listens_on_the_route_address_and_the_call_back_works() {
    let dir = TempDir::new("route");
    let routes = route_file(&dir, "127.0.0.7 127.0.0.2 255.255.255.255\n");
    let mut b = spawn_stdin(&["--ident", "off", "--log-stderr", "--route", &routes]);
    b.client
        .write_all(&encode(&Request {
            command: Cd::Bind,
            port: 21,
            ip: Ipv4Addr::new(127, 0, 0, 2),
            userid: b"ftp".to_vec(),
            hostname: None,
        }))
        .unwrap();
    let first = read_reply(&mut b.client);
    assert_eq!(&first[..2], &[0, 0x5A]);
    let listen = reply_addr(&first);
    assert_eq!(listen.ip(), Ipv4Addr::new(127, 0, 0, 7));
    let mut caller = connect_from(Ipv4Addr::new(127, 0, 0, 2), listen);
    let second = read_reply(&mut b.client);
    assert_eq!(&second[..2], &[0, 0x5A]);
    assert_eq!(reply_addr(&second), caller.local_addr().unwrap());
    let down = payload(2 << 20, 7);
    let d2 = down.clone();
    let server = thread::spawn(move || {
        caller.write_all(&d2).unwrap();
        caller.shutdown(Shutdown::Write).unwrap();
        read_all(&mut caller)
    });
    let up = payload(1 << 20, 8);
    let got = send_and_read(&mut b.client, &up);
    assert_eq!(checksum(&got), checksum(&down));
    assert_eq!(checksum(&server.join().unwrap()), checksum(&up));
    let (status, log) = finish(&mut b, EXIT);
    assert_eq!(status.code(), Some(0));
    let d = line(&log, "decision");
    assert!(
        d.contains(&format!("bind={listen} expect=127.0.0.2 src={listen} hop=- via=-")),
        "{d}"
    );
    let e = line(&log, "end");
    assert!(e.contains(&format!("up={} down={}", up.len(), down.len())), "{e}");
}

/// The destination socket has TCP keepalive on, with a first probe after
/// 120 s of silence: the kernel's own table shows the keepalive timer
/// armed on socks4d's end of the destination connection.
#[test]
fn the_destination_socket_has_keepalive() {
    let dst = echo_server();
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&connect_req(dst, b"")).unwrap();
    let reply = read_reply(&mut s.client);
    assert_eq!(reply[1], 0x5A);
    let ours = reply_addr(&reply);
    let (timer, when) = tcp_timer(ours, dst).expect("socks4d's destination socket in /proc/net/tcp");
    assert_eq!(timer, 2, "timer kind 2 is keepalive");
    assert!(when > 0 && when <= 120 * 100, "first probe in {when} ticks");
    // The client side is left as it was: no keepalive there.
    let client_side = s.client.local_addr().unwrap();
    let (timer, _) = tcp_timer(s.client.peer_addr().unwrap(), client_side).unwrap();
    assert_eq!(timer, 0);
    s.client.shutdown(Shutdown::Write).unwrap();
    let (status, _) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
}

/// The timer kind and its time left (in clock ticks) of the IPv4 socket
/// from `local` to `remote`, from /proc/net/tcp.
fn tcp_timer(local: SocketAddr, remote: SocketAddr) -> Option<(u32, u64)> {
    let hex = |a: SocketAddr| {
        let SocketAddr::V4(v4) = a else { panic!("IPv4 only") };
        format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port())
    };
    let (l, r) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|row| {
        let f: Vec<&str> = row.split_whitespace().collect();
        if f.get(1) != Some(&l.as_str()) || f.get(2) != Some(&r.as_str()) {
            return None;
        }
        let (tr, when) = f[5].split_once(':')?;
        Some((u32::from_str_radix(tr, 16).ok()?, u64::from_str_radix(when, 16).ok()?))
    })
}
