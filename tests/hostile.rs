//! Hostile and faulty peers. Each case states its expected outcome (a
//! reply code, a closed socket, a log line) and checks that the process
//! exits; every wait has a deadline.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const ARGS: &[&str] = &["--ident", "off", "--log-stderr"];

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    ARGS.iter().chain(extra).copied().collect()
}

/// Makes `s` send RST on close.
fn rst_on_close(s: &TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::Linger, &linger).unwrap();
}

/// Sends `bytes`, reads the reply; returns (reply bytes or what came
/// before EOF, log, exit code).
fn one_shot(extra: &[&'static str], bytes: &[u8]) -> (Vec<u8>, String, Option<i32>) {
    let mut s = spawn_stdin(&args(extra));
    s.client.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let _ = s.client.read_to_end(&mut got);
    let (status, log) = finish(&mut s, EXIT);
    (got, log, status.code())
}

#[test]
fn http_request_gets_a_400_naming_socks4() {
    let (got, log, code) = one_shot(&[], b"GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n");
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{got}");
    assert!(got.contains("SOCKS4/4a proxy") && got.len() < 512, "{got}");
    assert_eq!(code, Some(0));
    assert!(
        line(&log, "decision").contains("reply=- reason=bad-version detail=\"version byte 0x47: HTTP, answered 400\""),
        "{log}"
    );
    // A proxy CONNECT gets the same.
    let (got, _, _) = one_shot(&[], b"CONNECT example.org:443 HTTP/1.1\r\n\r\n");
    assert!(got.starts_with(b"HTTP/1.0 400 "));
}

#[test]
fn socks5_greeting_gets_no_acceptable_method() {
    let (got, log, _) = one_shot(&[], &[5, 2, 0, 2]);
    assert_eq!(got, [5, 0xff]);
    assert!(
        line(&log, "decision").contains("version byte 0x05: SOCKS5, answered 05 FF"),
        "{log}"
    );
}

/// What real clients say when they speak the wrong protocol to socks4d.
#[test]
fn curl_says_why_when_it_speaks_socks5_or_http() {
    if !require("curl") {
        return;
    }
    let (_guard, addr) = spawn_listen(&args(&[]));
    let curl = |proxy: String| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-x", &proxy, "http://192.0.2.1/"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), said)
    };
    let (code, said) = curl(format!("socks5://{addr}"));
    assert_eq!(code, Some(97), "{said}");
    assert!(said.contains("No authentication method was acceptable"), "{said}");
    let (_, said) = curl(format!("http://{addr}"));
    assert!(said.contains("This is a SOCKS4/4a proxy, not an HTTP proxy"), "{said}");
}

#[test]
fn other_bytes_get_no_answer() {
    // A TLS ClientHello, and a zero byte.
    for first in [0x16u8, 0] {
        let (got, log, _) = one_shot(&[], &[first, 3, 1, 0, 5]);
        assert!(got.is_empty(), "{first}: {got:?}");
        assert!(line(&log, "decision").contains("reason=bad-version"), "{log}");
    }
}

#[test]
fn one_byte_a_second_ends_at_the_request_timeout() {
    let mut s = spawn_stdin(&args(&["--request-timeout", "3"]));
    let req = connect_req(closed_port(), b"slowloris");
    let t = Instant::now();
    for b in &req {
        if s.client.write_all(&[*b]).is_err() {
            break;
        }
        thread::sleep(Duration::from_secs(1));
        if t.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    assert!(closed(&mut s.client));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(9),
        "{waited:?}"
    );
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(
        line(&log, "decision").contains("reply=- reason=request-timeout"),
        "{log}"
    );
}

#[test]
fn hundred_kilobytes_without_nul_gets_5b_and_the_reply_survives() {
    let mut bytes = vec![4, 1, 0, 80, 127, 0, 0, 1];
    bytes.extend(std::iter::repeat_n(b'A', 100_000));
    let (got, log, code) = one_shot(&[], &bytes);
    // The reply arrives intact although the client sent far more than
    // was read: the server drains before closing instead of resetting.
    assert_eq!(got, [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    assert_eq!(code, Some(0));
    assert!(line(&log, "decision").contains("reason=userid-too-long"));
}

#[test]
fn userid_of_exactly_512_is_served_and_513_refused() {
    let dst = echo_dest();
    let mut s = spawn_stdin(&args(&[]));
    s.client.write_all(&connect_req(dst.addr, &[b'u'; 512])).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    s.client.shutdown(Shutdown::Write).unwrap();
    let (_, log) = finish(&mut s, EXIT);
    // The log shows the first 256 bytes, marked as cut.
    assert!(
        line(&log, "decision").contains(&format!("user=\"{}\"...", "u".repeat(256))),
        "{log}"
    );

    let (got, log, _) = one_shot(&[], &connect_req(dst.addr, &[b'u'; 513]));
    assert_eq!(got[..2], [0, 0x5B]);
    assert!(line(&log, "decision").contains("reason=userid-too-long"));
}

#[test]
fn hostname_of_255_is_looked_up_and_256_refused() {
    let name255 = format!("{}.invalid", "a".repeat(247));
    assert_eq!(name255.len(), 255);
    let (got, log, _) = one_shot(&[], &connect_4a(&name255, 80, b""));
    assert_eq!(got[..2], [0, 0x5B]);
    assert!(line(&log, "decision").contains("reason=resolve-failed"), "{log}");

    let (got, log, _) = one_shot(&[], &connect_4a(&"b".repeat(256), 80, b""));
    assert_eq!(got[..2], [0, 0x5B]);
    assert!(line(&log, "decision").contains("reason=hostname-too-long"), "{log}");
}

#[test]
fn empty_hostname_gets_5b() {
    let bytes = [4, 1, 0, 80, 0, 0, 0, 1, b'u', 0, 0];
    let (got, log, _) = one_shot(&[], &bytes);
    assert_eq!(got[..2], [0, 0x5B]);
    assert!(line(&log, "decision").contains("reason=empty-hostname"), "{log}");
}

#[test]
fn control_and_high_bytes_in_userid_are_escaped() {
    let user = b"\x01\x7f\xff\xfe caf\xc3\xa9 \r\n\t\"\\";
    let (got, log, _) = one_shot(&[], &connect_req(closed_port(), user));
    assert_eq!(got[..2], [0, 0x5B]);
    let d = line(&log, "decision");
    assert!(
        d.contains(r#"user="\x01\x7f\xff\xfe caf\xc3\xa9 \x0d\x0a\x09\"\\""#),
        "{d}"
    );
    assert!(log.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b)), "{log}");
}

#[test]
fn reset_in_the_middle_of_the_request() {
    let mut s = spawn_stdin(&args(&[]));
    s.client.write_all(&[4, 1, 0, 80, 127]).unwrap();
    thread::sleep(Duration::from_millis(100));
    rst_on_close(&s.client);
    let client = std::mem::replace(&mut s.client, socket_pair().0);
    drop(client);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let d = line(&log, "decision");
    assert!(d.contains("reply=- reason=client-error") && d.contains("reset"), "{d}");
}

#[test]
fn client_reset_in_the_middle_of_the_relay_resets_the_destination() {
    let (tx, rx) = mpsc::channel();
    let dst = dest(move |mut s| {
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        let outcome = loop {
            match s.read(&mut buf) {
                Ok(0) => break "eof",
                Ok(n) => total += n,
                Err(_) => break "error",
            }
        };
        tx.send((outcome, total)).unwrap();
    });
    let mut s = spawn_stdin(&args(&[]));
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    s.client.write_all(&payload(100_000, 1)).unwrap();
    thread::sleep(Duration::from_millis(200));
    rst_on_close(&s.client);
    let client = std::mem::replace(&mut s.client, socket_pair().0);
    drop(client);
    let (outcome, _) = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(outcome, "error", "the destination must not see a clean EOF");
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(line(&log, "end").contains("end=client-error"), "{log}");
}

#[test]
fn blackholed_destination_ends_at_the_connect_timeout() {
    // A listener with backlog 0 that never accepts: once its queue is
    // full, the kernel drops further SYNs, as a blackhole does.
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        // Not inherited by what other tests start meanwhile: it would
        // outlive this test there.
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let addr = nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 0);
    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).unwrap();
    nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
    let listener = TcpListener::from(fd);
    let target = listener.local_addr().unwrap();
    // Fill the queue.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2_nonblocking_connect(target);
        fillers.push(s);
    }
    thread::sleep(Duration::from_millis(300));

    let t = Instant::now();
    let (got, log, code) = one_shot(&["--connect-timeout", "2"], &connect_req(target, b""));
    let waited = t.elapsed();
    assert_eq!(got[..2], [0, 0x5B]);
    assert_eq!(code, Some(0));
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(line(&log, "decision").contains("reason=connect-timeout"), "{log}");
    drop(listener);
}

/// Starts a connect that may never finish, without waiting for it.
fn socket2_nonblocking_connect(to: SocketAddr) -> std::os::fd::OwnedFd {
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let _ = nix::sys::socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &nix::sys::socket::SockaddrStorage::from(to),
    );
    fd
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn destination_that_never_reads_neither_grows_memory_nor_spins() {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let dst = dest(move |s| {
        // Hold the connection open and read nothing.
        let _ = stop_rx.recv_timeout(Duration::from_secs(60));
        drop(s);
    });
    let mut s = spawn_stdin(&args(&[]));
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    let pid = s.child.id();
    let rss_start = rss_kib(pid);
    let cpu_start = cpu_ticks(pid);

    // Keep sending until everything is full, for 10 s.
    s.client.set_nonblocking(true).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        match s.client.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
    let rss_end = rss_kib(pid);
    let cpu = cpu_ticks(pid) - cpu_start;
    // Relay buffers are bounded: the kernel buffers fill, socks4d's stays
    // at its fixed size, and poll sleeps while nothing can move.
    assert!(sent > 0);
    assert!(
        rss_end < rss_start + 2048,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as u64;
    assert!(cpu * 1000 / hz < 500, "{cpu} ticks of CPU in 10 s");
    stop_tx.send(()).unwrap();
    s.client.set_nonblocking(false).unwrap();
    let _ = s.client.shutdown(Shutdown::Both);
    finish(&mut s, EXIT);
}

/// A fake identd that misbehaves in `how`, on port 113 of a loopback
/// address of its own; returns that address, which the client must
/// connect from (`None` when not root).
fn bad_identd(how: &'static str) -> Option<Ipv4Addr> {
    let (l, ip) = identd_listener()?;
    thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut q = [0u8; 64];
        let n = s.read(&mut q).unwrap_or(0);
        let ports = String::from_utf8_lossy(&q[..n]).trim_end().to_string();
        match how {
            "trickle" => {
                for b in format!("{ports} : USERID : UNIX : alice\r\n").bytes() {
                    if s.write_all(&[b]).is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_secs(1));
                }
            }
            "flood" => {
                let junk = vec![b'x'; 1 << 20];
                for _ in 0..10 {
                    if s.write_all(&junk).is_err() {
                        return;
                    }
                }
            }
            "nul" => {
                let _ = s.write_all(format!("{ports} : USERID : UNIX : ali\0ce\r\n").as_bytes());
            }
            "early-close" => {}
            _ => unreachable!(),
        }
    });
    Some(ip)
}

#[test]
fn misbehaving_identd_ends_within_the_ident_timeout_with_5c() {
    for how in ["trickle", "flood", "nul", "early-close"] {
        let Some(ip) = bad_identd(how) else {
            return;
        };
        let dst = echo_dest();
        let mut s = spawn_on(
            socket_pair_from(ip, "127.0.0.1"),
            &["--ident", "required", "--ident-timeout", "2", "--log-stderr"],
            &[],
        );
        let t = Instant::now();
        s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
        assert_eq!(read_reply(&mut s.client)[1], 0x5C, "{how}");
        assert!(t.elapsed() < Duration::from_secs(6), "{how}: {:?}", t.elapsed());
        let (status, log) = finish(&mut s, EXIT);
        assert_eq!(status.code(), Some(0));
        assert!(
            line(&log, "decision").contains("reason=ident-unavailable"),
            "{how}: {log}"
        );
    }
}

#[test]
fn ten_megabyte_rules_file_is_refused_by_name() {
    let dir = TempDir::new("hostile");
    let conf = dir.file("huge.conf");
    std::fs::write(&conf, vec![b'#'; 10 << 20]).unwrap();
    let conf: &'static str = Box::leak(conf.into_boxed_str());
    let (got, log, _) = one_shot(&["-f", conf], &connect_req(closed_port(), b""));
    assert_eq!(got[..2], [0, 0x5B]);
    let d = line(&log, "decision");
    assert!(
        d.contains("reason=config-error") && d.contains(conf) && d.contains("larger than"),
        "{d}"
    );
}
