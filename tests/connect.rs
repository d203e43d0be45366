//! CONNECT end to end through the real binary: stdin, fd 3 and --listen
//! intake, relay integrity, half-close, refusals and audit lines.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const EXIT: Duration = Duration::from_secs(20);

/// Sends `data` and reads the echo concurrently; returns what came back.
fn echo_through(client: &mut TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut writer = client.try_clone().unwrap();
    let t = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let back = read_all(client);
    t.join().unwrap();
    back
}

#[test]
fn stdin_connect_relays_32_mib_each_way_and_exits() {
    let dst = echo_dest();
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
    let r = read_reply(&mut s.client);
    assert_eq!(&r[..2], &[0, 0x5A]);

    let data = payload(32 << 20, 1);
    let back = echo_through(&mut s.client, data.clone());
    assert_eq!(back.len(), data.len());
    assert_eq!(checksum(&back), checksum(&data));

    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    dst.handle.join().unwrap();
    let decision = line(&log, "decision");
    assert!(
        decision.contains(&format!("client=127.0.0.1:{}", s.client.local_addr().unwrap().port())),
        "{decision}"
    );
    assert!(decision.contains("user=\"alice\" cmd=connect"), "{decision}");
    assert!(decision.contains(&format!("dst={} host=-", dst.addr)), "{decision}");
    assert!(decision.contains("reply=5a reason=granted"), "{decision}");
    let end = line(&log, "end");
    let n = 32u64 << 20;
    assert!(end.contains(&format!("up={n} down={n}")), "{end}");
    assert!(end.contains("end=client-eof"), "{end}");
}

#[test]
fn fd3_connect_relays_and_exits() {
    let dst = echo_dest();
    let mut s = spawn_fd3(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    let data = payload(8 << 20, 2);
    let back = echo_through(&mut s.client, data.clone());
    assert_eq!(checksum(&back), checksum(&data));
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(line(&log, "decision").contains("reason=granted"));
}

/// Serves a passed listening socket the way `--listen` does: two clients
/// relayed at once by two children, then SIGTERM stops it with exit 0.
fn serves_listening_socket(child: &mut std::process::Child, addr: std::net::SocketAddr) {
    let dst = echo_server();
    let mut clients: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            c.write_all(&connect_req(dst, b"")).unwrap();
            assert_eq!(&read_reply(&mut c)[..2], &[0, 0x5A]);
            c
        })
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let data = payload(1 << 20, 60 + i as u64);
        assert_eq!(checksum(&echo_through(c, data.clone())), checksum(&data));
    }
    drop(clients);
    // SAFETY: signalling our own child.
    unsafe { nix::libc::kill(child.id() as i32, nix::libc::SIGTERM) };
    let status = wait_exit(child, EXIT);
    let log = stderr_of(child);
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(log.matches(" decision ").count(), 2, "{log}");
    assert_eq!(log.matches(" end ").count(), 2, "{log}");
    assert!(log.contains("stopping"), "{log}");
}

#[test]
fn fd3_listening_socket_is_served_as_accept_no() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut child = spawn_with_fd3(OwnedFd::from(l), &["--ident", "off", "--log-stderr"]);
    serves_listening_socket(&mut child, addr);
}

#[test]
fn stdin_listening_socket_is_served_as_inetd_wait() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut child = Command::new(bin())
        .args(["--ident", "off", "--log-stderr"])
        .stdin(Stdio::from(OwnedFd::from(l)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serves_listening_socket(&mut child, addr);
}

#[test]
fn max_children_with_one_passed_connection_is_a_usage_error() {
    let mut s = spawn_fd3(&["--log-stderr", "--max-children", "4"]);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(
        log.contains("--max-children and --max-per-source need --listen or a listening socket"),
        "{log}"
    );
}

#[test]
fn no_socket_prints_how_to_run_and_exits_64() {
    let out = Command::new(bin()).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("inetd") && err.contains("socket unit") && err.contains("--listen 127.0.0.1:1080 --ident off"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_option_is_a_usage_error() {
    let out = Command::new(bin())
        .arg("--connect-timeout")
        .arg("0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--connect-timeout 0"), "{err}");
    // One line, pointing to --help.
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.trim_end().ends_with("(see socks4d --help)"), "{err}");
}

#[test]
fn help_lists_every_option_with_its_default() {
    let out = Command::new(bin()).arg("--help").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("See socks4d(8), socks4d.conf(5) and socks4d.chain(5)."),
        "{help}"
    );
    // Every option socks4d(8) documents has its line.
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/socks4d.8")).unwrap();
    let mut seen = 0;
    for l in page.lines() {
        let Some(opt) = l.strip_prefix(".It Fl ") else { continue };
        // `\-listen` is --listen, `f` is -f.
        let opt = format!("-{}", opt.split(' ').next().unwrap().replace('\\', ""));
        assert!(help.contains(&opt), "{opt} is not in --help:\n{help}");
        seen += 1;
    }
    assert!(seen > 20, "{seen} options in socks4d(8)");
    for default in [
        "(256)",
        "(32)",
        "(nobody)",
        "(/etc/socks4d.conf",
        "(required)",
        "(15)",
        "(10)",
        "(120)",
        "(7200",
        "(daemon)",
        "(5)",
    ] {
        assert!(help.contains(default), "{default} not in --help");
    }
}

#[test]
fn trickled_request_and_pipelined_data_arrive() {
    let (tx, rx) = mpsc::channel();
    let dst = dest(move |mut s| {
        let got = read_all(&mut s);
        tx.send(got).unwrap();
    });
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    let mut req = connect_req(dst.addr, b"trickle");
    req.extend_from_slice(b"early bytes sent before the reply");
    for b in &req {
        s.client.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    s.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    let got = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(got, b"early bytes sent before the reply");
    assert!(read_all(&mut s.client).is_empty());
    let (status, _) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn request_and_data_in_one_segment() {
    let (tx, rx) = mpsc::channel();
    let dst = dest(move |mut s| tx.send(read_all(&mut s)).unwrap());
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    let mut req = connect_req(dst.addr, b"u");
    let data = payload(100_000, 3);
    req.extend_from_slice(&data);
    s.client.write_all(&req).unwrap();
    s.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    assert_eq!(checksum(&rx.recv_timeout(IO_TIMEOUT).unwrap()), checksum(&data));
    finish(&mut s, EXIT);
}

#[test]
fn destination_half_close_keeps_the_upload_going() {
    // The destination sends a banner and closes its sending side first;
    // the client's upload must still arrive whole afterwards.
    let (tx, rx) = mpsc::channel();
    let dst = dest(move |mut s| {
        s.write_all(b"banner then EOF").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        tx.send(read_all(&mut s)).unwrap();
    });
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    assert_eq!(read_all(&mut s.client), b"banner then EOF");
    let up = payload(4 << 20, 4);
    s.client.write_all(&up).unwrap();
    s.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(checksum(&rx.recv_timeout(IO_TIMEOUT).unwrap()), checksum(&up));
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let end = line(&log, "end");
    assert!(end.contains("end=dest-eof"), "{end}");
    assert!(end.contains(&format!("up={} down=15", 4 << 20)), "{end}");
}

#[test]
fn client_half_close_keeps_the_download_going() {
    let down = payload(6 << 20, 5);
    let expected = checksum(&down);
    let dst = dest(move |mut s| {
        // Wait for the client's EOF before answering.
        let req = read_all(&mut s);
        assert_eq!(req, b"request");
        s.write_all(&down).unwrap();
    });
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    s.client.write_all(b"request").unwrap();
    s.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    assert_eq!(checksum(&read_all(&mut s.client)), expected);
    dst.handle.join().unwrap();
    finish(&mut s, EXIT);
}

#[test]
fn refused_destination_gets_5b_and_exit_0() {
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&connect_req(closed_port(), b"bob")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5B]);
    assert!(closed(&mut s.client));
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let d = line(&log, "decision");
    assert!(d.contains("reply=5b reason=connect-refused"), "{d}");
    assert!(d.contains("refused"), "{d}");
    assert!(line(&log, "end").contains("end=refused"));
}

#[test]
fn socks5_client_gets_no_acceptable_method() {
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&[5, 1, 0]).unwrap();
    assert_eq!(read_all(&mut s.client), [5, 0xff]);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let d = line(&log, "decision");
    assert!(
        d.contains("reply=- reason=bad-version detail=\"version byte 0x05: SOCKS5, answered 05 FF"),
        "{d}"
    );
}

#[test]
fn unknown_command_gets_5b() {
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&[4, 9, 0, 80, 127, 0, 0, 1, 0]).unwrap();
    assert_eq!(read_all(&mut s.client), [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    let (_, log) = finish(&mut s, EXIT);
    assert!(line(&log, "decision").contains("reason=bad-command"));
}

#[test]
fn userid_over_512_gets_5b() {
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&connect_req(closed_port(), &[b'u'; 513])).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5B]);
    let (_, log) = finish(&mut s, EXIT);
    assert!(line(&log, "decision").contains("reason=userid-too-long"));
}

#[test]
fn hostname_over_255_gets_5b() {
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    let host = "h".repeat(256);
    s.client.write_all(&connect_4a(&host, 80, b"")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5B]);
    let (_, log) = finish(&mut s, EXIT);
    assert!(line(&log, "decision").contains("reason=hostname-too-long"));
}

#[test]
fn incomplete_request_times_out() {
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr", "--request-timeout", "1"]);
    s.client.write_all(&[4, 1, 0, 80, 127, 0, 0, 1, b'x']).unwrap();
    let t = Instant::now();
    assert!(read_all(&mut s.client).is_empty());
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(line(&log, "decision").contains("reply=- reason=request-timeout"));
}

#[test]
fn socks4a_localhost_connects() {
    let dst = echo_dest();
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client
        .write_all(&connect_4a("localhost", dst.addr.port(), b"four-a"))
        .unwrap();
    // localhost may resolve to ::1 first; the server tries each address.
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    let back = echo_through(&mut s.client, b"ping".to_vec());
    assert_eq!(back, b"ping");
    let (_, log) = finish(&mut s, EXIT);
    let d = line(&log, "decision");
    assert!(d.contains(&format!("dst={} host=\"localhost\"", dst.addr)), "{d}");
}

#[test]
fn no_socks4a_refuses_hostnames() {
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr", "--no-socks4a"]);
    s.client.write_all(&connect_4a("localhost", 80, b"")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5B]);
    let (_, log) = finish(&mut s, EXIT);
    assert!(line(&log, "decision").contains("reason=socks4a-disabled"));
}

#[test]
fn unresolvable_hostname_gets_5b() {
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client
        .write_all(&connect_4a("no-such-host.invalid", 80, b""))
        .unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5B]);
    let (_, log) = finish(&mut s, EXIT);
    assert!(line(&log, "decision").contains("reason=resolve-failed"));
}

#[test]
fn userid_with_newline_is_escaped_in_the_log() {
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    let evil = b"mallory\nsocks4d[1]: decision reason=granted \"x\x1b";
    s.client.write_all(&connect_req(closed_port(), evil)).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5B]);
    let (_, log) = finish(&mut s, EXIT);
    // The decision and the end: nothing forged.
    assert_eq!(log.lines().count(), 2, "{log}");
    let d = line(&log, "decision");
    assert!(
        d.contains(r#"user="mallory\x0asocks4d[1]: decision reason=granted \"x\x1b" cmd=connect"#),
        "{d}"
    );
}

#[test]
fn destination_reset_resets_the_client() {
    let dst = dest(|mut s| {
        s.write_all(b"partial").unwrap();
        // SO_LINGER 0: close sends RST.
        let fd = std::os::fd::AsFd::as_fd(&s);
        nix::sys::socket::setsockopt(
            &fd,
            nix::sys::socket::sockopt::Linger,
            &nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        thread::sleep(Duration::from_millis(100));
    });
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr"]);
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    let mut got = Vec::new();
    let r = s.client.read_to_end(&mut got);
    assert!(r.is_err(), "client saw a clean EOF after a destination reset: {got:?}");
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(line(&log, "end").contains("end=dest-error"), "{log}");
}

#[test]
fn idle_relay_is_closed() {
    let dst = dest(|mut s| {
        let _ = read_all(&mut s);
    });
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr", "--idle-timeout", "1"]);
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    let t = Instant::now();
    assert!(read_all(&mut s.client).is_empty());
    assert!(t.elapsed() < Duration::from_secs(6));
    let (_, log) = finish(&mut s, EXIT);
    assert!(line(&log, "end").contains("end=idle-timeout"));
}

#[test]
fn listen_mode_serves_many_and_stops_on_sigterm() {
    let (mut guard, proxy) = spawn_listen(&["--ident", "off", "--log-stderr"]);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            thread::spawn(move || {
                let dst = echo_dest();
                let mut c = connect_to(proxy);
                c.write_all(&connect_req(dst.addr, b"")).unwrap();
                assert_eq!(&read_reply(&mut c)[..2], &[0, 0x5A]);
                let data = payload(1 << 20, 100 + i);
                assert_eq!(checksum(&echo_through(&mut c, data.clone())), checksum(&data));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut guard.0, EXIT);
    assert_eq!(status.code(), Some(0));
    // The port is released.
    assert!(TcpStream::connect(proxy).is_err());
    let log = stderr_of(&mut guard.0);
    assert_eq!(log.matches("reason=granted").count(), 8, "{log}");
}

#[test]
fn listen_mode_caps_children() {
    let (guard, proxy) = spawn_listen(&["--ident", "off", "--log-stderr", "--max-children", "1"]);
    // Let the child that served spawn_listen's probe exit and be reaped.
    thread::sleep(Duration::from_millis(300));
    // The first connection holds the only child slot.
    let mut first = connect_to(proxy);
    thread::sleep(Duration::from_millis(300));
    let mut second = connect_to(proxy);
    assert!(closed(&mut second), "second connection should be closed at once");
    first.write_all(&connect_req(closed_port(), b"")).unwrap();
    assert_eq!(&read_reply(&mut first)[..2], &[0, 0x5B]);
    drop(guard);
}

/// Connections accepted together: the one over the cap is closed at once,
/// even though the children forked for the others were forked while it was
/// open (they must not inherit it and hold it open).
#[test]
fn listen_mode_refusal_is_not_held_open_by_a_sibling() {
    let (guard, proxy) = spawn_listen(&["--ident", "off", "--log-stderr", "--max-children", "2"]);
    thread::sleep(Duration::from_millis(300));
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    // Stopped, socks4d accepts nothing: all three wait in the backlog and
    // are accepted in one go when it resumes.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut conns: Vec<TcpStream> = (0..3).map(|_| connect_to(proxy)).collect();
    thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let t = Instant::now();
    let third = conns.pop().unwrap();
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut third = third;
    assert!(closed(&mut third), "the refused connection got data");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the refused connection was closed only after {:?}",
        t.elapsed()
    );
    for c in &mut conns {
        c.write_all(&connect_req(closed_port(), b"")).unwrap();
        assert_eq!(&read_reply(c)[..2], &[0, 0x5B]);
    }
    drop(guard);
}

/// Under `systemd-socket-activate --inetd -a`, a curl download through
/// socks4d matches the direct one.
#[test]
fn curl_through_systemd_socket_activate_inetd() {
    if !require("curl") || !require("systemd-socket-activate") {
        return;
    }
    let body = payload(3 << 20, 7);
    let web = http_server(body.clone());
    let (_g, proxy) = spawn_activated(&["--ident", "off", "--log-stderr"]);
    for mode in ["--socks4", "--socks4a"] {
        let host = if mode == "--socks4" { "127.0.0.1" } else { "localhost" };
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", mode, &proxy.to_string()])
            .arg(format!("http://{host}:{}/file", web.port()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(checksum(&out.stdout), checksum(&body), "{mode}");
    }
}

#[test]
fn curl_through_listen_mode() {
    if !require("curl") {
        return;
    }
    let body = payload(2 << 20, 8);
    let web = http_server(body.clone());
    let (_g, proxy) = spawn_listen(&["--ident", "off", "--log-stderr"]);
    for (mode, host) in [("--socks4", "127.0.0.1"), ("--socks4a", "localhost")] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", mode, &proxy.to_string()])
            .arg(format!("http://{host}:{}/file", web.port()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(checksum(&out.stdout), checksum(&body), "{mode}");
    }
}
