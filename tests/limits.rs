//! One client cannot take the service: `--max-per-source` under
//! `--listen`, a trusted load balancer not counted as one source, and
//! the request timeout that frees a slot held by a silent client.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Whether the proxy closed `s` without a reply within a second (a held
/// connection stays open, waiting for its request).
fn closed_at_once(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut b = [0u8; 8];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("a reply of {n} bytes: {:?}", &b[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => false,
        Err(_) => true,
    }
}

fn conf(dir: &TempDir) -> String {
    let path = dir.path().join("socks4d.conf");
    std::fs::write(&path, "permit 127.0.0.0/8\n").unwrap();
    path.display().to_string()
}

/// One address opening many silent connections holds at most
/// `--max-per-source` handlers; the rest are closed at once and logged,
/// and another client is served meanwhile.
#[test]
fn one_address_holds_at_most_max_per_source_handlers() {
    let dir = TempDir::new("limits-source");
    let conf = conf(&dir);
    let (mut guard, addr) = spawn_listen(&["--ident", "off", "--log-stderr", "-f", &conf, "--max-per-source", "4"]);
    let log = Log::of(&mut guard.0);
    let hog = Ipv4Addr::new(127, 0, 0, 61);
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect_from(hog, addr)).collect();
    // The four are accepted and waiting for their requests.
    log.wait_count("listening", 1);
    thread::sleep(Duration::from_millis(300));
    for _ in 0..6 {
        let mut s = connect_from(hog, addr);
        assert!(
            closed_at_once(&mut s),
            "a connection over the per-source limit was kept"
        );
    }
    let text = log.wait_count("reason=max-per-source limit=4", 6);
    assert!(text.contains("refused client=127.0.0.61:"), "{text}");
    for s in &mut held {
        assert!(!closed_at_once(s), "a connection within the limit was closed");
    }
    // Another address is served while the hog holds its four.
    let echo = echo_server();
    let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 62), addr);
    c.write_all(&connect_req(echo, b"u")).unwrap();
    assert_eq!(read_reply(&mut c)[1], 0x5a);
    assert_eq!(send_and_read(&mut c, b"hello"), b"hello");
    // Once one of the hog's connections ends, it may open another.
    drop(held.pop());
    let start = Instant::now();
    loop {
        let mut s = connect_from(hog, addr);
        if !closed_at_once(&mut s) {
            break;
        }
        assert!(start.elapsed() < IO_TIMEOUT, "the freed slot was not given back");
    }
}

/// The default holds too: 100 silent connections from one address leave
/// the service to everybody else.
#[test]
fn the_default_per_source_limit_leaves_room_for_others() {
    let dir = TempDir::new("limits-default");
    let conf = conf(&dir);
    let (mut guard, addr) = spawn_listen(&["--ident", "off", "--log-stderr", "-f", &conf, "--max-children", "64"]);
    let log = Log::of(&mut guard.0);
    let hog = Ipv4Addr::new(127, 0, 0, 63);
    let conns: Vec<TcpStream> = (0..100).map(|_| connect_from(hog, addr)).collect();
    let text = log.wait_count("reason=max-per-source limit=32", 68);
    assert!(!text.contains("reason=max-children"), "{text}");
    let echo = echo_server();
    for i in 0..5 {
        let mut c = connect_from(Ipv4Addr::new(127, 0, 1, 10 + i), addr);
        c.write_all(&connect_req(echo, b"u")).unwrap();
        assert_eq!(read_reply(&mut c)[1], 0x5a, "client {i}");
    }
    drop(conns);
}

/// A load balancer trusted with --proxy-protocol speaks for many clients:
/// its connections are not held to the per-source limit.
#[test]
fn a_trusted_balancer_is_not_one_source() {
    let dir = TempDir::new("limits-balancer");
    let conf = conf(&dir);
    let (mut guard, addr) = spawn_listen(&[
        "--ident",
        "off",
        "--log-stderr",
        "-f",
        &conf,
        "--max-per-source",
        "2",
        "--proxy-protocol",
        "127.0.0.64",
    ]);
    let log = Log::of(&mut guard.0);
    let balancer = Ipv4Addr::new(127, 0, 0, 64);
    let echo = echo_server();
    // Six clients at once through the balancer, each holding its relay.
    let mut open = Vec::new();
    for i in 0..6u16 {
        let mut c = connect_from(balancer, addr);
        let header = format!(
            "PROXY TCP4 127.0.2.{} 127.0.0.1 {} {}\r\n",
            i + 1,
            40000 + i,
            addr.port()
        );
        c.write_all(header.as_bytes()).unwrap();
        c.write_all(&connect_req(echo, b"u")).unwrap();
        assert_eq!(read_reply(&mut c)[1], 0x5a, "client {i} through the balancer");
        open.push(c);
    }
    let text = log.text();
    assert!(!text.contains("reason=max-per-source"), "{text}");
    // A client connecting directly is held to the limit.
    let direct = Ipv4Addr::new(127, 0, 0, 65);
    let _held: Vec<TcpStream> = (0..2).map(|_| connect_from(direct, addr)).collect();
    thread::sleep(Duration::from_millis(300));
    let mut s = connect_from(direct, addr);
    assert!(closed_at_once(&mut s));
    log.wait_count("refused client=127.0.0.65:", 1);
}

/// A silent client's handler ends at the request timeout (10 s by
/// default), with its lines, and its slot is free again.
#[test]
fn a_silent_client_is_let_go_at_the_request_timeout() {
    let dir = TempDir::new("limits-silent");
    let conf = conf(&dir);
    let (mut guard, addr) = spawn_listen(&["--ident", "off", "--log-stderr", "-f", &conf, "--max-per-source", "1"]);
    let log = Log::of(&mut guard.0);
    let who = Ipv4Addr::new(127, 0, 0, 66);
    let started = Instant::now();
    let mut s = connect_from(who, addr);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut b = [0u8; 8];
    let n = s.read(&mut b).unwrap_or(0);
    let took = started.elapsed();
    assert_eq!(n, 0, "no reply to a request never sent");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "let go after {took:?}"
    );
    let text = log.wait_count("reason=request-timeout", 1);
    assert!(text.contains("decision client=127.0.0.66:"), "{text}");
    // The slot is free again, once the handler has exited.
    let echo = echo_server();
    let start = Instant::now();
    loop {
        let mut c = connect_from(who, addr);
        if c.write_all(&connect_req(echo, b"u")).is_ok() {
            let mut r = [0u8; 8];
            if c.read_exact(&mut r).is_ok() {
                assert_eq!(r[1], 0x5a);
                break;
            }
        }
        assert!(start.elapsed() < IO_TIMEOUT, "the slot was not given back");
        thread::sleep(Duration::from_millis(50));
    }
}
