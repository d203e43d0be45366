//! RFC 1413 verification end to end, against a fake identd on port 113
//! of a loopback address of its own (the client connects from there), and
//! against the real oidentd. Both need root; they skip without it (and
//! fail under CI, which runs as root).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const EXIT: Duration = Duration::from_secs(30);
const ARGS: &[&str] = &["--log-stderr"];

/// What the fake identd does with the query.
enum Identd {
    /// Answers `<ports> : <rest>` with the ports it was asked about.
    Answer(&'static str),
    /// Answers this exact text, whatever was asked.
    Raw(&'static str),
    /// Accepts and says nothing until the test ends.
    Silent,
}

/// Runs a fake identd for one query. Returns its address, which the
/// client must connect from, and a receiver for (the query line, the
/// address the query came from); `None` when not root.
fn identd(behaviour: Identd) -> Option<(Ipv4Addr, mpsc::Receiver<(String, SocketAddr)>)> {
    let (l, ip) = identd_listener()?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (s, from) = l.accept().unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut q = String::new();
        let _ = r.read_line(&mut q);
        let _ = tx.send((q.clone(), from));
        let mut s = s;
        match behaviour {
            Identd::Answer(rest) => {
                let ports = q.trim_end();
                let _ = s.write_all(format!("{ports} : {rest}\r\n").as_bytes());
            }
            Identd::Raw(text) => {
                let _ = s.write_all(text.as_bytes());
            }
            Identd::Silent => thread::sleep(IO_TIMEOUT),
        }
    });
    Some((ip, rx))
}

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
    let Some((ip, rx)) = identd(Identd::Answer("USERID : UNIX : alice")) else {
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
    let Some((ip, _rx)) = identd(Identd::Answer("USERID : UNIX : bob")) else {
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
    let Some((ip, _rx)) = identd(Identd::Answer("USERID : UNIX : Alice")) else {
        return;
    };
    assert_eq!(exchange(&[], ip, b"alice").0, 0x5D);
}

#[test]
fn error_reply_gets_5c() {
    let Some((ip, _rx)) = identd(Identd::Answer("ERROR : NO-USER")) else {
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
    let Some((ip, _rx)) = identd(Identd::Silent) else {
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
        let Some((ip, _rx)) = identd(Identd::Raw(raw)) else {
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

    let Some((ip, _rx)) = identd(Identd::Answer("USERID : UNIX : mallory")) else {
        return;
    };
    let (code, _, _) = exchange(&["--ident", "optional"], ip, b"alice");
    assert_eq!(code, 0x5D);
}

#[test]
fn rule_override_turns_ident_off() {
    let dir = tempdir();
    let conf = format!("{dir}/socks4d.conf");
    std::fs::write(&conf, "permit ?=n 127.0.0.0/8\n").unwrap();
    let conf: &'static str = Box::leak(conf.into_boxed_str());
    let (code, log, _) = exchange(&["-I", "-f", conf], quiet_address(), b"alice");
    assert_eq!(code, 0x5A);
    let d = line(&log, "decision");
    assert!(d.contains(&format!("rule={conf}:1 ident=\"off\"")), "{d}");
}

/// A fresh directory under the target dir.
fn tempdir() -> String {
    let dir = std::env::temp_dir().join(format!("socks4d-ident-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

/// The real oidentd on port 113, with the client socket owned by another
/// local user: granted when the claim matches, 0x5D when it does not,
/// 0x5C once oidentd is gone.
#[test]
fn real_oidentd() {
    if !require_root() {
        return;
    }
    if !require("oidentd") {
        return;
    }
    if TcpStream::connect("127.0.0.1:113").is_ok() {
        eprintln!("SKIPPED: something already listens on port 113");
        return;
    }
    let user = "socks4dtest";
    system_user(user);
    let oidentd = Command::new("oidentd")
        .args(["-i", "-a", "127.0.0.1", "-p", "113"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start oidentd");
    let oidentd = Guard(oidentd);
    wait_listening("127.0.0.1:113".parse().unwrap());

    let run = |claim: &str| -> (u8, String) {
        let dst = echo_dest();
        let (client, server) = client_as(user);
        let mut s = spawn_on((client, server), &args(&["-I"]), &[]);
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

/// A loopback connection whose client end is created by a child process
/// running as `user`, so identd sees that user as its owner. Returns
/// (client end, server end) in this process.
fn client_as(user: &str) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    // The child connects as `user` and passes the socket back over a
    // Unix socket pair; the connection's owner stays `user`'s uid.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    // SAFETY: the child only calls async-signal-safe functions plus
    // socket syscalls, then exits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::setgid(u.gid);
            let _ = nix::unistd::setuid(u.uid);
            let c = TcpStream::connect(addr).unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&c);
            let fds = [fd];
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            let iov = [std::io::IoSlice::new(b"x")];
            let _ = nix::sys::socket::sendmsg::<()>(
                std::os::fd::AsRawFd::as_raw_fd(&theirs),
                &iov,
                &cmsg,
                nix::sys::socket::MsgFlags::empty(),
                None,
            );
            // Wait for the parent to take it, then exit; the socket lives on
            // in the parent.
            let mut b = [0u8; 1];
            let _ = (&theirs).read(&mut b);
            // SAFETY: leaving the forked child without running destructors.
            unsafe { nix::libc::_exit(0) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(theirs);
            let mut buf = [0u8; 1];
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let msg = nix::sys::socket::recvmsg::<()>(
                std::os::fd::AsRawFd::as_raw_fd(&ours),
                &mut iov,
                Some(&mut space),
                nix::sys::socket::MsgFlags::empty(),
            )
            .unwrap();
            let mut client = None;
            for c in msg.cmsgs().unwrap() {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                    // SAFETY: the fd was just received and is owned by no one else.
                    client = Some(unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) });
                }
            }
            let _ = (&ours).write_all(b"x");
            let _ = nix::sys::wait::waitpid(child, None);
            let (server, _) = l.accept().unwrap();
            let client = client.expect("client socket from the child");
            client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            (client, server)
        }
    }
}
