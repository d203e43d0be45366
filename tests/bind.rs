//! BIND end to end: the two replies, the peer check, the timer, and the
//! relay of the inbound connection.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const EXIT: Duration = Duration::from_secs(20);
/// Extra socks4d arguments for every run here.
const ARGS: &[&str] = &["--ident", "off", "--log-stderr"];

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    ARGS.iter().chain(extra).copied().collect()
}

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
        userid: b"ftp".to_vec(),
        hostname: Some(host.as_bytes().to_vec()),
    })
}

fn addr_of(reply: &[u8; 8]) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]),
        u16::from_be_bytes([reply[2], reply[3]]),
    ))
}

#[test]
fn ftp_like_flow_relays_both_ways_with_half_close() {
    // The application server: a control port, and later a call back to
    // the address the client sends it over the control connection.
    let app = TcpListener::bind("127.0.0.1:0").unwrap();
    let app_addr = app.local_addr().unwrap();
    let down = payload(4 << 20, 11);
    let up = payload(3 << 20, 12);
    let (down2, up_sum) = (down.clone(), checksum(&up));
    let (tx, rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let (mut control, _) = app.accept().unwrap();
        control.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        // "PORT a,b,c,d,p1,p2": here just the 6 address bytes.
        let mut port_cmd = [0u8; 6];
        control.read_exact(&mut port_cmd).unwrap();
        let target = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(port_cmd[0], port_cmd[1], port_cmd[2], port_cmd[3]),
            u16::from_be_bytes([port_cmd[4], port_cmd[5]]),
        ));
        let mut data = TcpStream::connect(target).unwrap();
        data.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let local = data.local_addr().unwrap();
        data.write_all(&down2).unwrap();
        data.shutdown(Shutdown::Write).unwrap();
        let got = read_all(&mut data);
        tx.send((local, checksum(&got) == up_sum, got.len())).unwrap();
        control.write_all(b"226 done").unwrap();
    });

    // Control connection through one socks4d.
    let mut ctl = spawn_stdin(&args(&[]));
    ctl.client.write_all(&connect_req(app_addr, b"ftp")).unwrap();
    assert_eq!(&read_reply(&mut ctl.client)[..2], &[0, 0x5A]);

    // BIND through another.
    let mut b = spawn_stdin(&args(&[]));
    b.client
        .write_all(&bind_req(Ipv4Addr::LOCALHOST, app_addr.port(), b"ftp"))
        .unwrap();
    let first = read_reply(&mut b.client);
    assert_eq!(&first[..2], &[0, 0x5A]);
    let listen = addr_of(&first);
    assert_eq!(listen.ip(), Ipv4Addr::LOCALHOST);
    assert_ne!(listen.port(), 0);

    let SocketAddr::V4(l4) = listen else { unreachable!() };
    let mut port_cmd = l4.ip().octets().to_vec();
    port_cmd.extend_from_slice(&l4.port().to_be_bytes());
    ctl.client.write_all(&port_cmd).unwrap();

    let second = read_reply(&mut b.client);
    assert_eq!(&second[..2], &[0, 0x5A]);
    let caller = addr_of(&second);

    let mut writer = b.client.try_clone().unwrap();
    let up2 = up.clone();
    let w = thread::spawn(move || {
        writer.write_all(&up2).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_all(&mut b.client);
    w.join().unwrap();
    assert_eq!(checksum(&got), checksum(&down));
    let (server_local, up_ok, up_len) = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(up_ok && up_len == up.len(), "upload corrupted: {up_len} bytes");
    assert_eq!(caller, server_local, "second reply names the caller");

    let mut done = [0u8; 8];
    ctl.client.read_exact(&mut done).unwrap();
    assert_eq!(&done, b"226 done");
    server.join().unwrap();
    ctl.client.shutdown(Shutdown::Write).unwrap();
    let (status, _) = finish(&mut ctl, EXIT);
    assert_eq!(status.code(), Some(0));

    let (status, log) = finish(&mut b, EXIT);
    assert_eq!(status.code(), Some(0));
    let d = line(&log, "decision");
    assert!(d.contains("cmd=bind"), "{d}");
    assert!(
        d.contains(&format!("reason=granted detail=- bind={listen} expect=127.0.0.1")),
        "{d}"
    );
    let a = line(&log, "accept");
    assert!(a.contains(&format!("peer={caller} reply=5a reason=granted")), "{a}");
    let e = line(&log, "end");
    assert!(e.contains(&format!("up={} down={}", up.len(), down.len())), "{e}");
}

/// Every `accept` line of `log`.
fn accept_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("]: accept ")).collect()
}

/// Whether `s` was closed by the other side: EOF or a reset, with no data.
fn turned_away(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Someone who is not the application server calls first (anyone who can
/// reach the port can): the call is closed and logged, the client hears
/// nothing of it, and the application server's call still gets through.
#[test]
fn a_stranger_calling_first_is_turned_away_and_the_server_still_gets_through() {
    let mut b = spawn_stdin(&args(&[]));
    b.client
        .write_all(&bind_req(Ipv4Addr::new(127, 0, 0, 2), 21, b""))
        .unwrap();
    let first = read_reply(&mut b.client);
    assert_eq!(&first[..2], &[0, 0x5A]);
    let listen = addr_of(&first);
    for _ in 0..2 {
        let mut stranger = connect_from(Ipv4Addr::LOCALHOST, listen);
        assert!(turned_away(&mut stranger), "a stranger's call was not closed");
    }
    let mut caller = connect_from(Ipv4Addr::new(127, 0, 0, 2), listen);
    let second = read_reply(&mut b.client);
    assert_eq!(&second[..2], &[0, 0x5A], "second reply");
    assert_eq!(
        addr_of(&second),
        caller.local_addr().unwrap(),
        "second reply names the caller"
    );
    caller.write_all(b"from the server").unwrap();
    caller.shutdown(Shutdown::Write).unwrap();
    b.client.write_all(b"from the client").unwrap();
    b.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut b.client), b"from the server");
    assert_eq!(read_all(&mut caller), b"from the client");
    let (status, log) = finish(&mut b, EXIT);
    assert_eq!(status.code(), Some(0));
    let accepts = accept_lines(&log);
    assert_eq!(accepts.len(), 3, "{log}");
    for a in &accepts[..2] {
        assert!(a.contains("expect=127.0.0.2 peer=127.0.0.1:"), "{a}");
        assert!(
            a.contains("reply=- reason=peer-mismatch detail=\"expected 127.0.0.2, got 127.0.0.1; turned away\""),
            "{a}"
        );
    }
    assert!(
        accepts[2].contains(&format!(
            "peer={} reply=5a reason=granted",
            caller.local_addr().unwrap()
        )),
        "{}",
        accepts[2]
    );
    assert!(line(&log, "end").contains("up=15 down=15"), "{log}");
}

/// Strangers calling again and again neither end the wait early nor make
/// it last past `--connect-timeout`; the client gets no second reply, and
/// the log does not grow with every call.
#[test]
fn strangers_calling_all_along_do_not_move_the_deadline() {
    let mut b = spawn_stdin(&args(&["--connect-timeout", "2"]));
    b.client
        .write_all(&bind_req(Ipv4Addr::new(127, 0, 0, 2), 21, b""))
        .unwrap();
    let listen = addr_of(&read_reply(&mut b.client));
    let t = Instant::now();
    let calling = thread::spawn(move || {
        let mut calls = 0;
        while t.elapsed() < Duration::from_secs(3) {
            let Ok(mut s) = TcpStream::connect_timeout(&listen, Duration::from_millis(200)) else {
                break;
            };
            calls += 1;
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.read(&mut [0u8; 1]);
            thread::sleep(Duration::from_millis(50));
        }
        calls
    });
    assert!(read_all(&mut b.client).is_empty(), "no second reply at the deadline");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    let calls = calling.join().unwrap();
    assert!(calls > 12, "only {calls} calls");
    let (status, log) = finish(&mut b, EXIT);
    assert_eq!(status.code(), Some(0));
    let accepts = accept_lines(&log);
    // One line for each of the first ten, the last saying so; then the
    // timeout's.
    assert_eq!(accepts.len(), 11, "{log}");
    assert!(
        accepts[9].contains("detail=\"expected 127.0.0.2, got 127.0.0.1; turned away; later ones not logged\""),
        "{}",
        accepts[9]
    );
    assert!(accepts[10].contains("reply=- reason=timeout"), "{log}");
    assert!(line(&log, "end").contains("end=bind-timeout"), "{log}");
}

#[test]
fn no_call_before_the_timer_closes_without_a_second_reply() {
    let mut b = spawn_stdin(&args(&["--connect-timeout", "2"]));
    b.client.write_all(&bind_req(Ipv4Addr::LOCALHOST, 21, b"")).unwrap();
    assert_eq!(&read_reply(&mut b.client)[..2], &[0, 0x5A]);
    let t = Instant::now();
    assert!(read_all(&mut b.client).is_empty(), "no second reply on timeout");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    let (status, log) = finish(&mut b, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(line(&log, "accept").contains("reply=- reason=timeout"));
    assert!(line(&log, "end").contains("end=bind-timeout"));
}

#[test]
fn client_leaving_ends_the_wait_and_frees_the_port() {
    let mut b = spawn_stdin(&args(&[]));
    b.client.write_all(&bind_req(Ipv4Addr::LOCALHOST, 21, b"")).unwrap();
    let first = read_reply(&mut b.client);
    let listen = addr_of(&first);
    b.client.shutdown(Shutdown::Both).unwrap();
    let t = Instant::now();
    let status = wait_exit(&mut b.child, EXIT);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(status.code(), Some(0));
    TcpListener::bind(listen).expect("listening port released");
    let log = stderr_of(&mut b.child);
    assert!(
        line(&log, "accept").contains("reason=client-gone detail=\"client closed\""),
        "{log}"
    );
}

/// `n` consecutive ports on `ip` that are free now, below the ephemeral
/// range (32768 and up), so that no other test's connection takes one
/// between the check and the bind.
fn free_ports(ip: Ipv4Addr, n: u16) -> u16 {
    (20000..32000 - n)
        .step_by(89)
        .find(|&p| (p..p + n).all(|q| TcpListener::bind((ip, q)).is_ok()))
        .expect("a run of free ports")
}

#[test]
fn bind_ports_range_is_used_and_exhaustion_gets_5b() {
    let ip = Ipv4Addr::LOCALHOST;
    let base = free_ports(ip, 2);
    let range = format!("{base}-{}", base + 1);
    let range: &'static str = Box::leak(range.into_boxed_str());
    let _hold = TcpListener::bind((ip, base)).unwrap();

    let mut b = spawn_stdin(&args(&["--bind-ports", range]));
    b.client.write_all(&bind_req(ip, 21, b"")).unwrap();
    let first = read_reply(&mut b.client);
    assert_eq!(&first[..2], &[0, 0x5A]);
    assert_eq!(addr_of(&first).port(), base + 1);

    // Both ports now taken: the next BIND has nowhere to listen.
    let mut c = spawn_stdin(&args(&["--bind-ports", range]));
    c.client.write_all(&bind_req(ip, 21, b"")).unwrap();
    assert_eq!(&read_reply(&mut c.client)[..2], &[0, 0x5B]);
    let (_, log) = finish(&mut c, EXIT);
    let d = line(&log, "decision");
    assert!(d.contains("reason=bind-failed") && d.contains(range), "{d}");
    drop(b);
}

/// BINDs one after another, each done before the next, do not all get
/// the first port of the range: the port is chosen at random, so that a
/// stranger cannot know it beforehand.
#[test]
fn bind_ports_are_spread_over_the_range() {
    let ip = Ipv4Addr::LOCALHOST;
    let base = free_ports(ip, 32);
    let range = format!("{base}-{}", base + 31);
    let range: &'static str = Box::leak(range.into_boxed_str());
    let mut ports = Vec::new();
    for _ in 0..8 {
        let mut b = spawn_stdin(&args(&["--bind-ports", range]));
        b.client.write_all(&bind_req(ip, 21, b"")).unwrap();
        let first = read_reply(&mut b.client);
        assert_eq!(&first[..2], &[0, 0x5A]);
        ports.push(addr_of(&first).port());
        b.client.shutdown(Shutdown::Both).unwrap();
        assert_eq!(wait_exit(&mut b.child, EXIT).code(), Some(0));
    }
    assert!(ports.iter().all(|p| (base..=base + 31).contains(p)), "{ports:?}");
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    // All eight on two ports or fewer: about 3 in 10 million by chance.
    assert!(distinct.len() >= 3, "ports {ports:?} of {range}");
}

#[test]
fn bind_address_is_honoured() {
    let mut b = spawn_stdin(&args(&["--bind-address", "127.0.0.5", "--connect-timeout", "5"]));
    b.client.write_all(&bind_req(Ipv4Addr::LOCALHOST, 21, b"")).unwrap();
    let first = read_reply(&mut b.client);
    assert_eq!(&first[..2], &[0, 0x5A]);
    assert_eq!(addr_of(&first).ip(), Ipv4Addr::new(127, 0, 0, 5));
    let _caller = connect_from(Ipv4Addr::LOCALHOST, addr_of(&first));
    assert_eq!(&read_reply(&mut b.client)[..2], &[0, 0x5A]);
}

#[test]
fn zero_dstip_gets_5b() {
    let mut b = spawn_stdin(&args(&[]));
    b.client.write_all(&bind_req(Ipv4Addr::UNSPECIFIED, 21, b"")).unwrap();
    assert_eq!(read_all(&mut b.client), [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    let (_, log) = finish(&mut b, EXIT);
    assert!(line(&log, "decision").contains("reply=5b reason=bind-no-peer"));
}

#[test]
fn bind_with_a_socks4a_name() {
    let mut b = spawn_stdin(&args(&[]));
    b.client.write_all(&bind_4a("localhost", 21)).unwrap();
    let first = read_reply(&mut b.client);
    assert_eq!(&first[..2], &[0, 0x5A]);
    let mut caller = connect_from(Ipv4Addr::LOCALHOST, addr_of(&first));
    assert_eq!(&read_reply(&mut b.client)[..2], &[0, 0x5A]);
    caller.write_all(b"data from the server").unwrap();
    caller.shutdown(Shutdown::Write).unwrap();
    b.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut b.client), b"data from the server");
    let (_, log) = finish(&mut b, EXIT);
    assert!(line(&log, "decision").contains("host=\"localhost\""));
}

/// The Python that has pyftpdlib: Debian's, not one a user put first on PATH.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Whether pyftpdlib can be run (a skip, or a failure under CI).
fn require_pyftpdlib() -> bool {
    let ok = std::process::Command::new(DEBIAN_PYTHON)
        .args(["-c", "import pyftpdlib"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require_that(ok, "python3-pyftpdlib is not installed")
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
    let tmp = TempDir::new("bind-ftp");
    let dir = tmp.path();
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let down = payload(3 << 20, 21);
    std::fs::write(root.join("down.bin"), &down).unwrap();
    let up = payload(2 << 20, 22);
    std::fs::write(dir.join("up.bin"), &up).unwrap();

    let (mut proxy, proxy_addr) = spawn_listen(&args(&[]));
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
    let binds: Vec<&str> = log.lines().filter(|l| l.contains("]: accept ")).collect();
    assert_eq!(binds.len(), 2, "{log}");
    for accept in binds {
        assert!(accept.contains("expect=127.0.0.2 peer=127.0.0.2:"), "{accept}");
        assert!(accept.contains("reply=5a reason=granted"), "{accept}");
    }
    assert!(log.contains(&format!("cmd=bind dst={ftp_addr}")), "{log}");
    assert!(
        log.contains(&format!("cmd=bind dst={ftp_addr} up=0 down={}", 3 << 20)),
        "{log}"
    );
    assert!(log.contains(&format!("up={} down=0", 2 << 20)), "{log}");
}
