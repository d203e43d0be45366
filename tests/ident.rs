//! RFC 1413 verification end to end, against a fake identd on port 113
//! of a loopback address of its own (the client connects from there), and
//! against the real oidentd, likewise on an address of its own. Both need
//! root (port 113); they skip without it (and fail under CI, which runs as
//! root).

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::common::*;

const ARGS: &[&str] = &["--log-stderr"];

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    ARGS.iter().chain(extra).copied().collect()
}

/// Runs one CONNECT as `user` to an echo destination from the client
/// address `from`, whose identd is asked; returns the reply code and the
/// log.
fn exchange(extra: &[&'static str], from: Ipv4Addr, user: &[u8]) -> (u8, String, Server) {
    let dst = echo_dest();
    let mut s = spawn_on(socket_pair_from(from, "127.0.0.1"), &args(extra), &[]);
    s.client.write_all(&connect_req(dst.addr, user)).unwrap();
    let code = read_reply(&mut s.client)[1];
    drop(s.client.try_clone().unwrap().shutdown(std::net::Shutdown::Write));
    let mut rest = Vec::new();
    let _ = s.client.read_to_end(&mut rest);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    (code, log, s)
}

#[test]
fn matching_user_is_granted_and_the_query_is_well_formed() {
    let Some((ip, rx)) = fake_identd(Identd::Answer("USERID : UNIX : alice".into())) else {
        return;
    };
    // The client reaches socks4d at 127.0.0.3; the query must come from
    // there, as RFC 1413 requires on a multi-homed host, and go to port
    // 113 of the client's address.
    let pair = socket_pair_from(ip, "127.0.0.3");
    let (client_port, our_port) = (pair.0.local_addr().unwrap().port(), pair.0.peer_addr().unwrap().port());
    let dst = echo_dest();
    let mut s = spawn_on(pair, &args(&[]), &[]);
    s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    let (query, from) = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(query, format!("{client_port} , {our_port}\r\n"));
    assert_eq!(from.ip(), Ipv4Addr::new(127, 0, 0, 3));
    s.client.shutdown(std::net::Shutdown::Write).unwrap();
    let (_, log) = finish(&mut s, EXIT);
    let d = line(&log, "decision");
    assert!(
        d.contains("rule=builtin ident=\"ok\" ident_user=\"alice\" reply=5a reason=granted"),
        "{d}"
    );
}

#[test]
fn different_user_gets_5d() {
    let Some((ip, _rx)) = fake_identd(Identd::Answer("USERID : UNIX : bob".into())) else {
        return;
    };
    let (code, log, _) = exchange(&[], ip, b"alice");
    assert_eq!(code, 0x5D);
    let d = line(&log, "decision");
    assert!(
        d.contains("ident=\"mismatch: bob\" ident_user=\"bob\" reply=5d reason=ident-mismatch"),
        "{d}"
    );
}

#[test]
fn case_matters() {
    let Some((ip, _rx)) = fake_identd(Identd::Answer("USERID : UNIX : Alice".into())) else {
        return;
    };
    assert_eq!(exchange(&[], ip, b"alice").0, 0x5D);
}

#[test]
fn error_reply_gets_5c() {
    let Some((ip, _rx)) = fake_identd(Identd::Answer("ERROR : NO-USER".into())) else {
        return;
    };
    let (code, log, _) = exchange(&[], ip, b"alice");
    assert_eq!(code, 0x5C);
    let d = line(&log, "decision");
    assert!(
        d.contains("ident=\"error: NO-USER\" ident_user=- reply=5c reason=ident-unavailable"),
        "{d}"
    );
}

#[test]
fn refused_identd_gets_5c() {
    let (code, log, _) = exchange(&[], quiet_address(), b"alice");
    assert_eq!(code, 0x5C);
    let d = line(&log, "decision");
    assert!(d.contains("ident=\"unreachable: ") && d.contains("refused"), "{d}");
}

#[test]
fn silent_identd_times_out_with_5c() {
    let Some((ip, _rx)) = fake_identd(Identd::Silent) else {
        return;
    };
    let t = Instant::now();
    let (code, log, _) = exchange(&["--ident-timeout", "1"], ip, b"alice");
    assert_eq!(code, 0x5C);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(line(&log, "decision").contains("timed out"), "{log}");
}

#[test]
fn garbled_and_wrong_port_replies_get_5c() {
    for raw in [
        "this is not ident\r\n",
        "1 , 2 : USERID : UNIX : alice\r\n",
        "no newline at all",
    ] {
        let Some((ip, _rx)) = fake_identd(Identd::Raw(raw)) else {
            return;
        };
        let (code, log, _) = exchange(&["--ident-timeout", "3"], ip, b"alice");
        assert_eq!(code, 0x5C, "{raw:?}: {log}");
    }
}

#[test]
fn optional_mode_proceeds_without_an_answer_but_not_on_a_mismatch() {
    let (code, log, _) = exchange(&["-i"], quiet_address(), b"alice");
    assert_eq!(code, 0x5A);
    assert!(line(&log, "decision").contains("ident=\"unreachable: "), "{log}");

    let Some((ip, _rx)) = fake_identd(Identd::Answer("USERID : UNIX : mallory".into())) else {
        return;
    };
    let (code, _, _) = exchange(&["--ident", "optional"], ip, b"alice");
    assert_eq!(code, 0x5D);
}

#[test]
fn rule_override_turns_ident_off() {
    let dir = TempDir::new("ident");
    let conf = dir.write("socks4d.conf", "permit ?=n 127.0.0.0/8\n");
    let conf: &'static str = Box::leak(conf.into_boxed_str());
    let (code, log, _) = exchange(&["-I", "-f", conf], quiet_address(), b"alice");
    assert_eq!(code, 0x5A);
    let d = line(&log, "decision");
    assert!(d.contains(&format!("rule={conf}:1 ident=\"off\"")), "{d}");
}

/// The real oidentd on port 113 of a loopback address of its own, asked
/// about a client socket owned by another local user: granted when the
/// claim matches, 0x5D when it does not, 0x5C once oidentd is gone.
#[test]
fn real_oidentd() {
    if !require("oidentd") {
        return;
    }
    let Some(ip) = identd_address() else {
        return;
    };
    let user = "socks4dtest";
    let uid = system_user(user).uid.as_raw();
    let oidentd = oidentd(ip);

    let run = |claim: &str| -> (u8, String) {
        let dst = echo_dest();
        let mut s = spawn_on(socket_pair_as(uid, ip, "127.0.0.1"), &args(&["-I"]), &[]);
        s.client.write_all(&connect_req(dst.addr, claim.as_bytes())).unwrap();
        let code = read_reply(&mut s.client)[1];
        let _ = s.client.shutdown(std::net::Shutdown::Write);
        let (_, log) = finish(&mut s, EXIT);
        (code, log)
    };
    let (code, log) = run(user);
    assert_eq!(code, 0x5A, "{log}");
    assert!(
        line(&log, "decision").contains("ident=\"ok\" ident_user=\"socks4dtest\""),
        "{log}"
    );
    let (code, log) = run("root");
    assert_eq!(code, 0x5D, "{log}");
    drop(oidentd);
    let (code, log) = run(user);
    assert_eq!(code, 0x5C, "{log}");
}
