//! BIND end to end through the real binary: the FTP-like call-back flow,
//! the peer check, the wait's deadline and its watch on the client,
//! --bind-ports, --bind-address, DSTIP 0.0.0.0 and SOCKS4a names.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const EXIT: Duration = Duration::from_secs(20);

fn bind_req(ip: Ipv4Addr, port: u16, user: &[u8]) -> Vec<u8> {
    encode(&Request {
        command: Cd::Bind,
        port,
        ip,
        userid: user.to_vec(),
        hostname: None,
    })
}

fn bind_4a(host: &str, port: u16) -> Vec<u8> {
    encode(&Request {
        command: Cd::Bind,
        port,
        ip: Ipv4Addr::new(0, 0, 0, 1),
        userid: b"bob".to_vec(),
        hostname: Some(host.as_bytes().to_vec()),
    })
}

/// The address a reply carries.
fn reply_addr(r: &[u8; 8]) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(r[4], r[5], r[6], r[7]), u16::from_be_bytes([r[2], r[3]]))
}

/// Starts socks4d on stdin, sends `req` and returns the first reply.
fn start(args: &[&str], req: &[u8]) -> (Server, [u8; 8]) {
    let mut s = spawn_stdin(args);
    s.client.write_all(req).unwrap();
    let first = read_reply(&mut s.client);
    (s, first)
}

/// Connects to `to` from `from` (port chosen by the kernel).
fn call_from(from: Ipv4Addr, to: SocketAddrV4) -> TcpStream {
    let from = SocketAddr::new(from.into(), 0);
    let deadline = socks4d::net::Deadline::after(IO_TIMEOUT);
    let s = socks4d::net::connect(to.into(), Some(from), deadline).unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

#[test]
fn ftp_like_flow_carries_bytes_both_ways_with_half_close() {
    // The application server: a control port, and a data connection it
    // opens itself to the address the client names in a PORT command.
    let control = TcpListener::bind("127.0.0.1:0").unwrap();
    let control_addr = control.local_addr().unwrap();
    let up_data = payload(4 << 20, 11);
    let down_data = payload(8 << 20, 12);
    let (up_sum, down_for_server) = (checksum(&up_data), down_data.clone());
    let server = thread::spawn(move || {
        let (ctl, _) = control.accept().unwrap();
        ctl.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut ctl_in = BufReader::new(ctl.try_clone().unwrap());
        let mut line = String::new();
        ctl_in.read_line(&mut line).unwrap();
        let target: SocketAddrV4 = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
        let mut data = call_from(Ipv4Addr::LOCALHOST, target);
        let local = data.local_addr().unwrap();
        // Read the upload to EOF first: the client's half-close must
        // arrive while the download has not started.
        let got = read_all(&mut data);
        assert_eq!(got.len(), 4 << 20);
        assert_eq!(checksum(&got), up_sum);
        data.write_all(&down_for_server).unwrap();
        data.shutdown(Shutdown::Write).unwrap();
        let mut ctl = ctl;
        ctl.write_all(b"226 done\r\n").unwrap();
        local
    });

    // Control connection through one socks4d, BIND through another.
    let (mut ctl, first) = start(&["--log-stderr"], &connect_req(control_addr, b"bob"));
    assert_eq!(&first[..2], &[0, 0x5A]);
    let SocketAddr::V4(server_v4) = control_addr else {
        unreachable!()
    };
    let (mut data, first) = start(&["--log-stderr"], &bind_req(*server_v4.ip(), server_v4.port(), b"bob"));
    assert_eq!(&first[..2], &[0, 0x5A], "first reply {first:02x?}");
    let listen_at = reply_addr(&first);
    assert_eq!(*listen_at.ip(), Ipv4Addr::LOCALHOST);
    assert_ne!(listen_at.port(), 0);

    ctl.client
        .write_all(format!("PORT {listen_at}\r\n").as_bytes())
        .unwrap();
    let second = read_reply(&mut data.client);
    assert_eq!(&second[..2], &[0, 0x5A], "second reply {second:02x?}");
    let peer = reply_addr(&second);

    data.client.write_all(&up_data).unwrap();
    data.client.shutdown(Shutdown::Write).unwrap();
    let got = read_all(&mut data.client);
    assert_eq!(got.len(), down_data.len());
    assert_eq!(checksum(&got), checksum(&down_data));
    let mut done = [0u8; 10];
    ctl.client.read_exact(&mut done).unwrap();
    assert_eq!(&done, b"226 done\r\n");

    let server_data_addr = server.join().unwrap();
    assert_eq!(SocketAddr::V4(peer), server_data_addr);
    ctl.client.shutdown(Shutdown::Both).unwrap();
    let (status, _) = finish(&mut ctl, EXIT);
    assert_eq!(status.code(), Some(0));
    let (status, log) = finish(&mut data, EXIT);
    assert_eq!(status.code(), Some(0));

    let decision = line(&log, "decision");
    assert!(decision.contains("user=\"bob\" cmd=bind"), "{decision}");
    assert!(decision.contains("reply=5a reason=granted"), "{decision}");
    assert!(
        decision.ends_with(&format!("bind={listen_at} expect=127.0.0.1")),
        "{decision}"
    );
    let accept = line(&log, "accept");
    assert!(
        accept.contains(&format!(
            "bind={listen_at} peer={peer} expect=127.0.0.1 reply=5a reason=granted"
        )),
        "{accept}"
    );
    let end = line(&log, "end");
    assert!(end.contains("cmd=bind"), "{end}");
    assert!(end.contains(&format!("up={} down={}", 4 << 20, 8 << 20)), "{end}");
    assert!(end.contains("end=client-eof"), "{end}");
}

#[test]
fn call_from_the_wrong_address_gets_5b_and_both_sockets_close() {
    let (mut s, first) = start(&["--log-stderr"], &bind_req(Ipv4Addr::new(127, 0, 0, 2), 21, b""));
    assert_eq!(&first[..2], &[0, 0x5A]);
    let mut caller = call_from(Ipv4Addr::LOCALHOST, reply_addr(&first));
    let second = read_reply(&mut s.client);
    assert_eq!(&second[..2], &[0, 0x5B]);
    assert!(closed(&mut s.client), "client socket left open");
    assert!(closed(&mut caller), "inbound socket left open");
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let accept = line(&log, "accept");
    assert!(
        accept.contains("expect=127.0.0.2 reply=5b reason=peer-mismatch"),
        "{accept}"
    );
    assert!(
        accept.contains("detail=\"expected 127.0.0.2 got 127.0.0.1\""),
        "{accept}"
    );
    assert!(line(&log, "end").contains("end=peer-mismatch"), "{log}");
}

#[test]
fn no_call_within_the_connect_timeout_closes_the_client_without_a_second_reply() {
    let (mut s, first) = start(
        &["--log-stderr", "--connect-timeout", "2"],
        &bind_req(Ipv4Addr::LOCALHOST, 21, b""),
    );
    assert_eq!(&first[..2], &[0, 0x5A]);
    let t = Instant::now();
    let rest = read_all(&mut s.client);
    let waited = t.elapsed();
    assert!(rest.is_empty(), "a second reply was sent: {rest:02x?}");
    assert!(waited >= Duration::from_millis(1900), "closed after {waited:?}");
    assert!(waited < Duration::from_secs(8), "closed after {waited:?}");
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(
        line(&log, "accept").contains("peer=- expect=127.0.0.1 reply=- reason=timeout"),
        "{log}"
    );
    assert!(line(&log, "end").contains("end=timeout"), "{log}");
}

#[test]
fn client_closing_while_waiting_ends_the_process_and_frees_the_port() {
    let (mut s, first) = start(&["--log-stderr"], &bind_req(Ipv4Addr::LOCALHOST, 21, b""));
    assert_eq!(&first[..2], &[0, 0x5A]);
    let at = reply_addr(&first);
    let t = Instant::now();
    s.client.shutdown(Shutdown::Both).unwrap();
    let status = wait_exit(&mut s.child, EXIT);
    assert!(t.elapsed() < Duration::from_secs(5), "exited after {:?}", t.elapsed());
    assert_eq!(status.code(), Some(0));
    TcpListener::bind(at).unwrap_or_else(|e| panic!("{at} not released: {e}"));
    let log = stderr_of(&mut s.child);
    assert!(line(&log, "accept").contains("reason=client-closed"), "{log}");
    assert!(line(&log, "end").contains("end=client-closed"), "{log}");
}

#[test]
fn client_sending_while_waiting_ends_the_wait() {
    let (mut s, first) = start(&["--log-stderr"], &bind_req(Ipv4Addr::LOCALHOST, 21, b""));
    assert_eq!(&first[..2], &[0, 0x5A]);
    s.client.write_all(b"too early").unwrap();
    assert!(closed(&mut s.client));
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(line(&log, "accept").contains("reason=client-data"), "{log}");
}

/// `n` consecutive free loopback ports.
fn free_ports(n: u16) -> u16 {
    for _ in 0..50 {
        let p = free_port();
        if p.checked_add(n).is_none() {
            continue;
        }
        if (p..p + n).all(|q| TcpListener::bind(("127.0.0.1", q)).is_ok()) {
            return p;
        }
    }
    panic!("no {n} consecutive free ports");
}

#[test]
fn bind_ports_picks_a_port_in_range_and_refuses_when_exhausted() {
    let lo = free_ports(3);
    // Take the first port of the range, so the second must be chosen.
    let taken = TcpListener::bind(("127.0.0.1", lo)).unwrap();
    let range = format!("{lo}-{}", lo + 2);
    let (mut s, first) = start(
        &["--log-stderr", "--bind-ports", &range],
        &bind_req(Ipv4Addr::LOCALHOST, 21, b""),
    );
    assert_eq!(&first[..2], &[0, 0x5A]);
    assert_eq!(reply_addr(&first).port(), lo + 1);
    let mut caller = call_from(Ipv4Addr::LOCALHOST, reply_addr(&first));
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    caller.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    s.client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    drop(caller);
    s.client.shutdown(Shutdown::Write).unwrap();
    assert!(read_all(&mut s.client).is_empty());
    let (status, _) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));

    let only = format!("{lo}-{lo}");
    let (mut s, first) = start(
        &["--log-stderr", "--bind-ports", &only],
        &bind_req(Ipv4Addr::LOCALHOST, 21, b""),
    );
    assert_eq!(&first[..2], &[0, 0x5B]);
    assert!(closed(&mut s.client));
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let decision = line(&log, "decision");
    assert!(decision.contains("reply=5b reason=bind-failed"), "{decision}");
    assert!(decision.contains(&format!("no free port in {only}")), "{decision}");
    drop(taken);
}

#[test]
fn bind_address_is_used_for_the_listening_socket() {
    let (mut s, first) = start(
        &["--log-stderr", "--bind-address", "127.0.0.3"],
        &bind_req(Ipv4Addr::LOCALHOST, 21, b""),
    );
    assert_eq!(&first[..2], &[0, 0x5A]);
    let at = reply_addr(&first);
    assert_eq!(*at.ip(), Ipv4Addr::new(127, 0, 0, 3));
    let mut caller = call_from(Ipv4Addr::LOCALHOST, at);
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    s.client.write_all(b"hello").unwrap();
    s.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut caller), b"hello");
    drop(caller);
    assert!(read_all(&mut s.client).is_empty());
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(
        line(&log, "decision").ends_with(&format!("bind={at} expect=127.0.0.1")),
        "{log}"
    );
}

#[test]
fn dstip_zero_gets_5b() {
    let (mut s, first) = start(&["--log-stderr"], &bind_req(Ipv4Addr::UNSPECIFIED, 21, b""));
    assert_eq!(&first[..2], &[0, 0x5B]);
    assert!(closed(&mut s.client));
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let decision = line(&log, "decision");
    assert!(decision.contains("cmd=bind"), "{decision}");
    assert!(decision.contains("reply=5b reason=bind-no-peer"), "{decision}");
    assert!(decision.ends_with("bind=- expect=-"), "{decision}");
    assert!(line(&log, "end").contains("end=refused"), "{log}");
}

#[test]
fn socks4a_name_expects_its_resolved_address() {
    let (mut s, first) = start(&["--log-stderr"], &bind_4a("localhost", 21));
    assert_eq!(&first[..2], &[0, 0x5A]);
    let mut caller = call_from(Ipv4Addr::LOCALHOST, reply_addr(&first));
    let second = read_reply(&mut s.client);
    assert_eq!(&second[..2], &[0, 0x5A]);
    assert_eq!(SocketAddr::V4(reply_addr(&second)), caller.local_addr().unwrap());
    let data = payload(1 << 20, 5);
    caller.write_all(&data).unwrap();
    caller.shutdown(Shutdown::Write).unwrap();
    let got = read_all(&mut s.client);
    assert_eq!(checksum(&got), checksum(&data));
    s.client.shutdown(Shutdown::Write).unwrap();
    assert!(read_all(&mut caller).is_empty());
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let decision = line(&log, "decision");
    assert!(decision.contains("host=\"localhost\""), "{decision}");
    assert!(decision.contains("expect=127.0.0.1"), "{decision}");
    assert!(line(&log, "end").contains(&format!("down={}", 1 << 20)), "{log}");
}

/// The Python that has pyftpdlib: Debian's, not one a user put first on PATH.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Whether pyftpdlib can be run; fails under CI, where .ci/run installs it.
fn require_pyftpdlib() -> bool {
    let ok = std::process::Command::new(DEBIAN_PYTHON)
        .args(["-c", "import pyftpdlib"])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("python3-pyftpdlib is not installed; .ci/run should install it");
    }
    if !ok {
        eprintln!("SKIPPED: python3-pyftpdlib is not installed");
    }
    ok
}

/// Runs `socksify curl ARGS` with `conf`, within `limit`; true on success.
fn socksified_curl(conf: &std::path::Path, args: &[&str], limit: Duration) -> bool {
    let mut child = std::process::Command::new("socksify")
        .arg("curl")
        .args(["-sS", "--ftp-port", "-"])
        .args(args)
        .env("SOCKS_CONF", conf)
        // Dante sends loopback and LAN destinations direct unless told not to.
        .env("SOCKS_AUTOADD_LANROUTES", "no")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start socksify curl");
    wait_exit(&mut child, limit).success()
}

/// Active-mode FTP through socks4d with real programs: curl under Dante's
/// socksify (CONNECT for the control connection, BIND for the data one)
/// against pyftpdlib on 127.0.0.2, a download and an upload.
#[test]
fn active_ftp_through_socksify_and_pyftpdlib() {
    if !require("socksify") || !require("curl") || !require_pyftpdlib() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("socks4d-bind-ftp-{}", std::process::id()));
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let down = payload(3 << 20, 21);
    std::fs::write(root.join("down.bin"), &down).unwrap();
    let up = payload(2 << 20, 22);
    std::fs::write(dir.join("up.bin"), &up).unwrap();

    let (mut proxy, proxy_addr) = spawn_listen(&["--log-stderr"]);
    let ftp_port = free_port();
    let ftp_addr: SocketAddr = format!("127.0.0.2:{ftp_port}").parse().unwrap();
    let ftpd = std::process::Command::new(DEBIAN_PYTHON)
        .args([
            "-m",
            "pyftpdlib",
            "-w",
            "-i",
            "127.0.0.2",
            "-p",
            &ftp_port.to_string(),
            "-d",
        ])
        .arg(&root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pyftpdlib");
    let _ftpd = Guard(ftpd);
    wait_listening(ftp_addr);

    let conf = dir.join("socks.conf");
    std::fs::write(
        &conf,
        format!(
            "route {{\n from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = {}\n proxyprotocol: socks_v4\n command: bind connect\n}}\n",
            proxy_addr.port()
        ),
    )
    .unwrap();

    let out = dir.join("down.out");
    let url = format!("ftp://{ftp_addr}/down.bin");
    assert!(
        socksified_curl(&conf, &["-o", out.to_str().unwrap(), &url], EXIT),
        "download failed"
    );
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), down.len());
    assert_eq!(checksum(&got), checksum(&down));

    let url = format!("ftp://{ftp_addr}/up.bin");
    let src = dir.join("up.bin");
    assert!(
        socksified_curl(&conf, &["-T", src.to_str().unwrap(), &url], EXIT),
        "upload failed"
    );
    let stored = std::fs::read(root.join("up.bin")).unwrap();
    assert_eq!(checksum(&stored), checksum(&up));

    // Stop the proxy and read what its sessions logged.
    let _ = proxy.0.kill();
    let _ = proxy.0.wait();
    let log = stderr_of(&mut proxy.0);
    let _ = std::fs::remove_dir_all(&dir);
    let binds: Vec<&str> = log.lines().filter(|l| l.contains("]: accept ")).collect();
    assert_eq!(binds.len(), 2, "{log}");
    for accept in binds {
        assert!(accept.contains("expect=127.0.0.2 reply=5a reason=granted"), "{accept}");
    }
    assert!(log.contains(&format!("cmd=bind dst={ftp_addr}")), "{log}");
    assert!(
        log.contains(&format!("cmd=bind dst={ftp_addr} up=0 down={}", 3 << 20)),
        "{log}"
    );
    assert!(log.contains(&format!("up={} down=0", 2 << 20)), "{log}");
}
