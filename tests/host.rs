//! Faults of the host around socks4d, each provoked for real: a logger
//! that is stuck, restarted or missing (a private /dev with a /dev/log of
//! the test's own), descriptor, memory, pipe and process limits, a name
//! server that never answers. Each case checks the reply, the log lines,
//! and that the process ends within its bound.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const EXIT: Duration = Duration::from_secs(30);
/// The log timeout the logger cases use.
const LOG_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack on top of a bound: two vCPUs shared with other work.
const SLACK: Duration = Duration::from_secs(6);

fn syslog_args() -> Vec<&'static str> {
    vec!["--ident", "off", "--log-timeout", "2"]
}

/// Reads whatever the destination gets until EOF or an error.
fn drain(mut s: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn a_stuck_logger_turns_a_grant_into_5b_within_the_log_timeout_and_recovery_brings_service_back() {
    if !require_root() {
        return;
    }
    let syslog = FakeSyslog::start();
    syslog.stall();
    let (tx, rx) = std::sync::mpsc::channel();
    let dst = dest(move |s| tx.send(drain(s)).unwrap());
    let mut s = spawn_on_with(socket_pair(), &syslog_args(), &[], |c| {
        private_dev(c, Some(&syslog.path))
    });
    let t = Instant::now();
    s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
    s.client.write_all(b"must not reach the destination").unwrap();
    let reply = read_reply(&mut s.client);
    let waited = t.elapsed();
    assert_eq!(reply[1], 0x5B, "no relay without its decision line");
    assert!(waited < LOG_TIMEOUT + SLACK, "{waited:?}");
    let status = wait_exit(&mut s.child, LOG_TIMEOUT + SLACK);
    assert_eq!(status.code(), Some(0));
    assert!(
        t.elapsed() >= LOG_TIMEOUT - Duration::from_millis(200),
        "it gave up before the bound"
    );
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), b"", "the destination got bytes");

    // The logger reads again: the next connection is served and logged.
    syslog.resume();
    let dst = echo_dest();
    let mut s = spawn_on_with(socket_pair(), &syslog_args(), &[], |c| {
        private_dev(c, Some(&syslog.path))
    });
    s.client.write_all(&connect_req(dst.addr, b"bob")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    s.client.write_all(b"ping").unwrap();
    s.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s.client), b"ping");
    assert_eq!(wait_exit(&mut s.child, EXIT).code(), Some(0));
    let log = syslog.wait_for(IO_TIMEOUT, |t| t.contains("]: end ") && t.contains("user=\"bob\""));
    assert!(line(&log, "decision").contains("user=\"bob\"") || log.contains("user=\"bob\" cmd=connect"));
    assert!(log.contains("reason=granted"), "{log}");
    // syslog(3) format: priority, no hostname, ident and pid.
    assert!(
        log.lines().any(|l| l.starts_with("<30>") && l.contains(" socks4d[")),
        "{log}"
    );
}

#[test]
fn without_dev_log_every_request_is_refused_at_once() {
    if !require_root() {
        return;
    }
    let dst = echo_dest();
    let mut s = spawn_on_with(socket_pair(), &syslog_args(), &[], |c| private_dev(c, None));
    let t = Instant::now();
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5B);
    // At once: nothing to wait for, so well inside the log timeout.
    assert!(t.elapsed() < LOG_TIMEOUT, "{:?}", t.elapsed());
    assert_eq!(wait_exit(&mut s.child, EXIT).code(), Some(0));
}

#[test]
fn an_end_line_the_logger_does_not_take_is_given_up_and_the_process_exits() {
    if !require_root() {
        return;
    }
    let syslog = FakeSyslog::start();
    let dst = echo_dest();
    let mut s = spawn_on_with(socket_pair(), &syslog_args(), &[], |c| {
        private_dev(c, Some(&syslog.path))
    });
    s.client.write_all(&connect_req(dst.addr, b"carol")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    syslog.wait_for(IO_TIMEOUT, |t| t.contains("reason=granted"));
    // The logger gets stuck during the relay.
    syslog.stall();
    let data = payload(1 << 20, 14);
    let mut w = s.client.try_clone().unwrap();
    let d2 = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let back = read_all(&mut s.client);
    writer.join().unwrap();
    assert_eq!(checksum(&back), checksum(&data), "the relay itself is not held up");
    let t = Instant::now();
    let status = wait_exit(&mut s.child, LOG_TIMEOUT + SLACK);
    assert_eq!(status.code(), Some(0));
    assert!(t.elapsed() < LOG_TIMEOUT + SLACK);
    syslog.resume();
    thread::sleep(Duration::from_millis(300));
    assert!(!syslog.text().contains("]: end "), "{}", syslog.text());
}

#[test]
fn a_restarted_logger_gets_the_next_lines() {
    if !require_root() {
        return;
    }
    let syslog = FakeSyslog::start();
    let mut args = syslog_args();
    args.push("--max-children");
    args.push("8");
    let (_guard, proxy) = spawn_listen_with(&args, |c| private_dev(c, Some(&syslog.path)));
    let echo = echo_server();
    for user in ["before", "after"] {
        if user == "after" {
            // The socket the --listen parent (and so each child) holds now
            // leads nowhere: ECONNREFUSED, then a new connection.
            syslog.restart();
        }
        let mut c = connect_to(proxy);
        c.write_all(&connect_req(echo, user.as_bytes())).unwrap();
        assert_eq!(read_reply(&mut c)[1], 0x5A, "{user}");
        c.shutdown(Shutdown::Write).unwrap();
        read_all(&mut c);
        let tag = format!("user=\"{user}\"");
        syslog.wait_for(IO_TIMEOUT, |t| t.contains(&tag) && t.contains("reason=granted"));
    }
}

#[test]
fn listen_mode_with_a_stuck_logger_leaves_no_handler_behind() {
    if !require_root() {
        return;
    }
    const CLIENTS: usize = 20;
    let syslog = FakeSyslog::start();
    let (guard, proxy) = spawn_listen_with(&syslog_args(), |c| private_dev(c, Some(&syslog.path)));
    let parent = guard.0.id();
    let echo = echo_server();
    syslog.stall();
    let t = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let mut c = connect_to(proxy);
                c.write_all(&connect_req(echo, format!("u{i}").as_bytes())).unwrap();
                let r = read_reply(&mut c);
                (r[1], Instant::now())
            })
        })
        .collect();
    for c in clients {
        let (code, _) = c.join().unwrap();
        assert_eq!(code, 0x5B);
    }
    // Every handler gives up its lines within the bound and exits.
    let deadline = Instant::now() + LOG_TIMEOUT * 2 + SLACK;
    while !live_children(parent).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} handlers still alive {:?} after the clients were answered",
            live_children(parent).len(),
            t.elapsed()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // And the listener still serves once the logger reads again.
    syslog.resume();
    let mut c = connect_to(proxy);
    c.write_all(&connect_req(echo, b"later")).unwrap();
    assert_eq!(read_reply(&mut c)[1], 0x5A);
}
