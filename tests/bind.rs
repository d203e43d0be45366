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
