//! `--proxy-protocol` over the wire, with the test playing the load
//! balancer: the header's client is the client for the rules, the ident
//! query, the hooks and the audit lines (with `via=`); health checks are
//! closed with one line; hostile and missing headers are closed without a
//! reply; an untrusted peer's header is just bytes of a bad request.
//! The trusted balancer is 127.0.0.1, where the harness connects from;
//! the clients the headers name are other loopback addresses.

use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use socks4d::proxy::{encode_v1, encode_v2};

const EXIT: Duration = Duration::from_secs(20);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A rules file permitting the client 127.0.0.5 and denying the rest,
/// loopback included.
fn rules(dir: &TempDir, extra: &str) -> String {
    let p = dir.path().join("socks4d.conf");
    std::fs::write(&p, format!("{extra}permit 127.0.0.5/32\ndeny 0.0.0.0/0\n")).unwrap();
    p.display().to_string()
}

/// socks4d on stdin trusting 127.0.0.1 as a balancer, plus `extra`.
fn balanced(rules: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--proxy-protocol",
        "127.0.0.1/32,10.0.0.0/8",
        "--ident",
        "off",
        "--log-stderr",
        "-f",
        rules,
    ];
    args.extend_from_slice(extra);
    spawn_stdin(&args)
}

#[test]
fn v1_header_names_the_client_for_rules_and_audit() {
    let dir = TempDir::new("proxy");
    let rules = rules(&dir, "");
    let dst = echo_dest();
    let mut s = balanced(&rules, &[]);
    let via = s.client.local_addr().unwrap();
    // Header, request and the first data in one write.
    let mut first = encode_v1(sa("127.0.0.5:40001"), sa("127.0.0.1:1080"));
    first.extend_from_slice(&connect_req(dst.addr, b"alice"));
    first.extend_from_slice(b"early bytes ");
    s.client.write_all(&first).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    let mut w = s.client.try_clone().unwrap();
    let data = payload(1 << 20, 3);
    let d2 = data.clone();
    let t = thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let back = read_all(&mut s.client);
    t.join().unwrap();
    let mut want = b"early bytes ".to_vec();
    want.extend_from_slice(&data);
    assert_eq!(checksum(&back), checksum(&want));
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let d = line(&log, "decision");
    assert!(d.contains("decision client=127.0.0.5:40001 user=\"alice\""), "{d}");
    assert!(d.ends_with(&format!("via={via}")), "{d}");
    assert!(d.contains(&format!("rule={rules}:1 ")), "line 1 permits 127.0.0.5: {d}");
    let e = line(&log, "end");
    assert!(e.contains("end client=127.0.0.5:40001 "), "{e}");
    assert!(e.ends_with(&format!("via={via}")), "{e}");
}

#[test]
fn v2_header_split_in_pieces_and_a_denied_client() {
    let dir = TempDir::new("proxy");
    let rules = rules(&dir, "");
    let dst = echo_server();
    // Granted: 127.0.0.5, the header fed a few bytes at a time.
    let mut s = balanced(&rules, &[]);
    let header = encode_v2(Some((sa("127.0.0.5:40002"), sa("127.0.0.1:1080"))), b"\x04\x00\x01\x00");
    for piece in header.chunks(5) {
        s.client.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    s.client.write_all(&connect_req(dst, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    s.client.shutdown(Shutdown::Write).unwrap();
    let (_, log) = finish(&mut s, EXIT);
    assert!(line(&log, "decision").contains("client=127.0.0.5:40002 "), "{log}");

    // Denied: the header says 127.0.0.6, though the TCP peer is 127.0.0.1.
    let mut s = balanced(&rules, &[]);
    let mut bytes = encode_v2(Some((sa("127.0.0.6:40003"), sa("127.0.0.1:1080"))), &[]);
    bytes.extend_from_slice(&connect_req(dst, b""));
    s.client.write_all(&bytes).unwrap();
    assert_eq!(read_all(&mut s.client), [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    let (_, log) = finish(&mut s, EXIT);
    let d = line(&log, "decision");
    assert!(
        d.contains("client=127.0.0.6:40003 ") && d.contains("reason=denied"),
        "{d}"
    );
    assert!(d.contains(&format!("rule={rules}:2 ")), "the deny line decides: {d}");
}

#[test]
fn ipv6_clients_in_both_versions() {
    let dir = TempDir::new("proxy");
    let p = dir.path().join("v6.conf");
    std::fs::write(&p, "permit ::1/128\ndeny 0.0.0.0/0\n").unwrap();
    let rules = p.display().to_string();
    let dst = echo_server();
    for header in [
        encode_v1(sa("[::1]:40004"), sa("[::1]:1080")),
        encode_v2(Some((sa("[::1]:40004"), sa("[::1]:1080"))), &[]),
    ] {
        let mut s = balanced(&rules, &[]);
        let mut bytes = header;
        bytes.extend_from_slice(&connect_req(dst, b""));
        s.client.write_all(&bytes).unwrap();
        assert_eq!(read_reply(&mut s.client)[1], 0x5A);
        s.client.shutdown(Shutdown::Write).unwrap();
        let (_, log) = finish(&mut s, EXIT);
        assert!(line(&log, "decision").contains("client=[::1]:40004 "), "{log}");
    }
}

/// A fake identd on port 113 of a loopback address of its own that
/// answers USERID `user`: returns that address and a receiver of (query
/// line, where the query came from); `None` when not root.
fn identd(user: &str) -> Option<(Ipv4Addr, mpsc::Receiver<(String, SocketAddr)>)> {
    fake_identd(Identd::Answer(format!("USERID : UNIX : {user}")))
}

/// Ident asks the header's client about the port it connected to (on the
/// balancer), from the balancer's address when this host has it, else
/// from this host's end of the connection.
#[test]
fn ident_asks_the_real_client_about_the_balancer_port() {
    let dir = TempDir::new("proxy");
    // The fake identds' addresses.
    let rules = rules(&dir, "permit 127.113.0.0/16\n");
    let dst = echo_server();
    for (frontend, from) in [("127.0.0.8:1081", "127.0.0.8"), ("192.0.2.1:1082", "127.0.0.1")] {
        let Some((client, queries)) = identd("alice") else {
            return;
        };
        let args = [
            "--proxy-protocol",
            "127.0.0.1",
            "-I",
            "--log-stderr",
            "-f",
            rules.as_str(),
        ];
        let mut s = spawn_stdin(&args);
        let header_client = SocketAddr::new(client.into(), 40005);
        let mut bytes = encode_v2(Some((header_client, sa(frontend))), &[]);
        bytes.extend_from_slice(&connect_req(dst, b"alice"));
        s.client.write_all(&bytes).unwrap();
        assert_eq!(read_reply(&mut s.client)[1], 0x5A);
        let (q, qfrom) = queries.recv_timeout(IO_TIMEOUT).unwrap();
        assert_eq!(q, format!("40005 , {}\r\n", sa(frontend).port()));
        assert_eq!(qfrom.ip().to_string(), from, "query for frontend {frontend}");
        s.client.shutdown(Shutdown::Write).unwrap();
        let (_, log) = finish(&mut s, EXIT);
        assert!(
            line(&log, "decision").contains("ident=\"ok\" ident_user=\"alice\""),
            "{log}"
        );
    }
}

/// A rule's command sees the header's client as `%a`.
#[test]
fn hooks_see_the_header_client() {
    let dir = TempDir::new("proxy");
    // Commands run as the user socks4d drops to when started as root. Sticky,
    // as /tmp: the rules file in it is believed only so.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let out = dir.path().join("hook.out");
    let rules = rules(
        &dir,
        &format!("permit 127.0.0.5/32 eq 7 : echo %a %c >{}\n", out.display()),
    );
    let mut s = balanced(&rules, &["--writable", dir.path().to_str().unwrap()]);
    let mut bytes = encode_v1(sa("127.0.0.5:40006"), sa("127.0.0.1:1080"));
    bytes.extend_from_slice(&connect_req(closed_port_7(), b""));
    s.client.write_all(&bytes).unwrap();
    let _ = read_all(&mut s.client);
    let (_, log) = finish(&mut s, EXIT);
    let start = Instant::now();
    while std::fs::read_to_string(&out).unwrap_or_default().is_empty() {
        assert!(start.elapsed() < IO_TIMEOUT, "the hook wrote nothing\n{log}");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "127.0.0.5 connect\n");
}

/// An address with port 7 where nothing listens (only the rule's port
/// test matters here).
fn closed_port_7() -> SocketAddr {
    sa("127.0.0.1:7")
}

#[test]
fn health_checks_are_closed_with_one_line() {
    let dir = TempDir::new("proxy");
    let rules = rules(&dir, "");
    for (header, kind) in [
        (encode_v2(None, &[]), "v2-local"),
        (b"PROXY UNKNOWN\r\n".to_vec(), "v1-unknown"),
        (b"PROXY UNKNOWN 127.0.0.9 127.0.0.1 5 6\r\n".to_vec(), "v1-unknown"),
    ] {
        let mut s = balanced(&rules, &[]);
        let via = s.client.local_addr().unwrap();
        s.client.write_all(&header).unwrap();
        assert!(read_all(&mut s.client).is_empty());
        let (status, log) = finish(&mut s, EXIT);
        assert_eq!(status.code(), Some(0));
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].ends_with(&format!("]: health via={via} proxy={kind}")),
            "{log}"
        );
    }
}

/// A refused header: no reply, the connection closed, a decision line
/// with no client, the reason and `via=`, and an end line.
fn refused(bytes: &[u8], close: bool, extra: &[&str]) -> (String, Duration) {
    let dir = TempDir::new("proxy");
    let rules = rules(&dir, "");
    let mut s = balanced(&rules, extra);
    let via = s.client.local_addr().unwrap();
    let t = Instant::now();
    s.client.write_all(bytes).unwrap();
    if close {
        s.client.shutdown(Shutdown::Write).unwrap();
    }
    assert!(read_all(&mut s.client).is_empty(), "no reply to a bad header");
    let took = t.elapsed();
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    let d = line(&log, "decision");
    assert!(d.contains("decision client=- user=- cmd=- dst=-"), "{d}");
    assert!(d.contains("reply=- reason=proxy-"), "{d}");
    assert!(d.ends_with(&format!("src=- hop=- via={via}")), "{d}");
    assert!(line(&log, "end").contains("end=refused"), "{log}");
    (d.to_string(), took)
}

#[test]
fn hostile_headers_are_closed_without_a_reply() {
    let v2 = encode_v2(Some((sa("127.0.0.5:1"), sa("127.0.0.1:2"))), &[]);
    let mut wrong_sig = v2.clone();
    wrong_sig[9] = b'X';
    let mut family = v2.clone();
    family[13] = 0x41;
    let mut too_long = v2[..16].to_vec();
    too_long[14..16].copy_from_slice(&2000u16.to_be_bytes());
    let mut long_v1 = b"PROXY TCP4 127.0.0.5 127.0.0.1 1 2".to_vec();
    long_v1.resize(200, b' ');
    let bare = connect_req(sa("127.0.0.1:80"), b"");
    for (bytes, close, want) in [
        (&b"PROXY TCP4 127.0.0.5 127.0.0.1 400"[..], true, "reason=proxy-closed"),
        (&v2[..20], true, "reason=proxy-closed"),
        (&long_v1[..], false, "reason=proxy-too-long"),
        (&too_long[..], false, "reason=proxy-too-long"),
        (
            &wrong_sig[..],
            false,
            "reason=proxy-malformed detail=\"malformed PROXY header: bad v2 signature\"",
        ),
        (&family[..], false, "v2 address family unknown"),
        (b"PROXY TCP4 127.0.0.5 127.0.0.1 1 2\n", false, "LF without CR"),
        (b"PROXY TCP4 127.0.0.005 127.0.0.1 1 2\r\n", false, "dotted quad"),
        (
            &bare[..],
            false,
            "reason=proxy-missing detail=\"no PROXY header: the first byte is 0x04\"",
        ),
    ] {
        let (d, _) = refused(bytes, close, &[]);
        assert!(d.contains(want), "{:?}: {d}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn a_length_larger_than_sent_times_out_within_the_request_timeout() {
    let mut v2 = encode_v2(Some((sa("127.0.0.5:1"), sa("127.0.0.1:2"))), &[]);
    v2[14..16].copy_from_slice(&200u16.to_be_bytes());
    let (d, took) = refused(&v2, false, &["--request-timeout", "2"]);
    assert!(d.contains("reason=proxy-timeout"), "{d}");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

/// From a peer outside `--proxy-protocol`, a header is no header: its
/// bytes are a request with version byte 'P', refused as any bad version,
/// and the log names the TCP peer as the client.
#[test]
fn an_untrusted_peer_gets_no_say() {
    let dst = echo_server();
    let untrusted = ["--proxy-protocol", "127.0.0.9", "--ident", "off", "--log-stderr"];
    let mut s = spawn_stdin(&untrusted);
    let peer = s.client.local_addr().unwrap();
    let mut bytes = encode_v1(sa("127.0.0.5:40007"), sa("127.0.0.1:1080"));
    bytes.extend_from_slice(&connect_req(dst, b""));
    s.client.write_all(&bytes).unwrap();
    assert!(read_all(&mut s.client).is_empty());
    let (_, log) = finish(&mut s, EXIT);
    let d = line(&log, "decision");
    assert!(d.contains(&format!("client={peer} ")), "{d}");
    assert!(d.contains("reason=bad-version detail=\"version byte 0x50\""), "{d}");
    assert!(d.ends_with("via=-"), "{d}");

    // Its plain requests are served as ever.
    let mut s = spawn_stdin(&untrusted);
    s.client.write_all(&connect_req(dst, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    s.client.shutdown(Shutdown::Write).unwrap();
    let (_, log) = finish(&mut s, EXIT);
    assert_eq!(lines(&log, "decision").len(), 1);
    assert!(line(&log, "decision").contains("reason=granted"), "{log}");
}
