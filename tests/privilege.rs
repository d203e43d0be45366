//! Started as root, socks4d becomes `--user` before it reads from the
//! client, and cannot become root again.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const EXIT: Duration = Duration::from_secs(20);
const ARGS: &[&str] = &["--ident", "off", "--log-stderr"];

/// The four uids (real, effective, saved, fs) from /proc/PID/status.
fn uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
}

fn groups(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with("Groups:")).unwrap().to_string()
}

#[test]
fn root_drops_to_nobody_before_reading_the_request() {
    drops_before_reading_the_request("nobody");
}

#[test]
fn numeric_user_and_group_drop_the_same_way() {
    let nobody = nix::unistd::User::from_name("nobody").unwrap();
    if !require_that(nobody.is_some(), "no user nobody") {
        return;
    }
    let nobody = nobody.unwrap();
    drops_before_reading_the_request(&format!("{}:{}", nobody.uid, nobody.gid));
}

#[test]
fn numeric_root_ids_are_refused() {
    if !require_root() {
        return;
    }
    for (user, why) in [("0:65534", "is root"), ("65534:0", "group 0")] {
        let args: Vec<&str> = ARGS.iter().copied().chain(["--user", user]).collect();
        let mut s = spawn_stdin(&args);
        s.client.write_all(&connect_req(closed_port(), b"u")).unwrap();
        assert_eq!(read_reply(&mut s.client), [0, 0x5B, 0, 0, 0, 0, 0, 0], "{user}");
        let (status, log) = finish(&mut s, EXIT);
        assert_eq!(status.code(), Some(1), "{user}");
        assert!(log.contains("setup error") && log.contains(why), "{user}: {log}");
    }
}

/// Started as root with `--user user` (`nobody` by name or number), the
/// handler has become nobody while it waits for the request, and serves.
fn drops_before_reading_the_request(user: &str) {
    if !require_root() {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let dst = echo_dest();
    let args: Vec<&str> = ARGS.iter().copied().chain(["--user", user]).collect();
    let mut s = spawn_stdin(&args);
    // Nothing sent yet: the process is waiting for the request, and has
    // already dropped.
    let pid = s.child.id();
    let start = Instant::now();
    loop {
        let u = uids(pid);
        if u.iter().all(|&id| id == nobody.uid.as_raw()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still {u:?}");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        groups(pid).split_whitespace().skip(1).collect::<Vec<_>>(),
        [nobody.gid.to_string()]
    );
    s.client.write_all(&connect_req(dst.addr, b"u")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    s.client.write_all(b"still works").unwrap();
    s.client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s.client), b"still works");
    let (status, _) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn unknown_user_is_a_setup_error_and_only_a_refusal_is_sent() {
    if !require_root() {
        return;
    }
    let args: Vec<&str> = ARGS.iter().copied().chain(["--user", "no-such-user-here"]).collect();
    let mut s = spawn_stdin(&args);
    s.client.write_all(&connect_req(closed_port(), b"u")).unwrap();
    // Nothing is read without a privilege drop; the client hears 0x5B.
    assert_eq!(read_reply(&mut s.client), [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    assert!(closed(&mut s.client));
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(1));
    assert!(
        log.contains("setup error") && log.contains("no such user: no-such-user-here"),
        "{log}"
    );
    // The static build has no NSS and says where it looked.
    assert_eq!(
        log.contains("looks users up in /etc/passwd only, without NSS"),
        cfg!(target_env = "musl"),
        "{log}"
    );
}

#[test]
fn listen_mode_children_run_as_the_user() {
    if !require_root() {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let (guard, proxy) = spawn_listen(&["--ident", "off", "--log-stderr", "--user", "nobody"]);
    // The port accepts as soon as it is bound, a moment before the drop.
    let start = Instant::now();
    while !uids(guard.0.id()).iter().all(|&id| id == nobody.uid.as_raw()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {:?}",
            uids(guard.0.id())
        );
        thread::sleep(Duration::from_millis(20));
    }
    let dst = echo_dest();
    let mut c = connect_to(proxy);
    c.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(&read_reply(&mut c)[..2], &[0, 0x5A]);
}
