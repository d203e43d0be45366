//! What a new administrator meets when something is missing: a logger,
//! an identd. Each hint is one line on stderr (never when stderr is the
//! client), and `--check-config` says the same.

use std::io::{Read, Write};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Starts `socks4d --listen` with `args` and `setup`, reads its stderr
/// for `wait`, kills it and returns what it wrote.
fn first_words(args: &[&str], wait: Duration, setup: impl FnOnce(&mut Command)) -> String {
    let (mut cmd, _) = listen_command(args);
    setup(&mut cmd);
    let mut guard = Guard(cmd.spawn().unwrap());
    let stderr = guard.0.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = { stderr }.read_to_string(&mut text);
        text
    });
    thread::sleep(wait);
    drop(guard);
    reader.join().unwrap()
}

#[test]
fn listen_without_a_logger_says_so_once_and_names_log_stderr() {
    if !require_root() {
        return;
    }
    let text = first_words(&["--ident", "off"], Duration::from_secs(2), |cmd| {
        private_dev(cmd, None)
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with("socks4d: the logger cannot be reached ("),
        "{text}"
    );
    assert!(
        lines[0].contains("every request gets 91") && lines[0].ends_with("add --log-stderr"),
        "{text}"
    );
    // With a logger there, nothing.
    let syslog = FakeSyslog::start();
    let text = first_words(&["--ident", "off"], Duration::from_secs(2), |cmd| {
        private_dev(cmd, Some(&syslog.path))
    });
    assert_eq!(text, "", "{text}");
    assert!(syslog
        .wait_for(IO_TIMEOUT, |t| t.contains("listening addr="))
        .contains("listening"));
}

#[test]
fn check_config_says_when_the_logger_cannot_be_reached() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("newcomer");
    let conf = dir.write("socks4d.conf", "deny 0/0\n");
    let run = |log: Option<&std::path::Path>| {
        let mut cmd = Command::new(bin());
        cmd.arg("--check-config").arg("-f").arg(&conf);
        private_dev(&mut cmd, log);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(None);
    assert!(out.contains("syslog: the logger cannot be reached"), "{out}");
    assert!(out.contains("add --log-stderr"), "{out}");
    let syslog = FakeSyslog::start();
    let out = run(Some(&syslog.path));
    assert!(!out.contains("syslog:"), "{out}");
}

/// Under --listen with ident required (the default) and no identd on this
/// host, one line says that local clients will get 92 and how to try
/// without one. In a network namespace of its own, where nothing listens
/// on 127.0.0.1:113 whatever the host runs.
#[test]
fn listen_with_ident_required_and_no_local_identd_says_so() {
    if !require_root() {
        return;
    }
    // Loopback is down in a new namespace; the check then fails with
    // "Network is unreachable", which is as much "nothing answers".
    let text = first_words(&["--log-stderr"], Duration::from_secs(2), own_network);
    let said = text
        .lines()
        .find(|l| l.contains("nothing answers on 127.0.0.1:113"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(said.contains("gets 92") && said.ends_with("add --ident off"), "{said}");
    // Not with --ident off.
    let text = first_words(&["--log-stderr", "--ident", "off"], Duration::from_secs(2), own_network);
    assert!(!text.contains("127.0.0.1:113"), "{text}");
}

/// Per connection, no hint is written: stderr may be the client.
#[test]
fn a_connection_on_stdin_gets_no_hint_on_stderr() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let pair = socket_pair();
    let mut s = spawn_on_with(pair, &["--ident", "off"], &[], |cmd| private_dev(cmd, None));
    let dst = echo_dest();
    std::io::Write::write_all(&mut s.client, &connect_req(dst.addr, b"u")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5b);
    let (status, err) = finish(&mut s, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    assert_eq!(err, "");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Syslog lines carry the time as syslog(3) writes it: the host's time
/// zone (here TZ, nine hours east of UTC), `Mmm dd hh:mm:ss` with the day
/// padded by a blank, then `socks4d[PID]: `.
#[test]
fn syslog_lines_carry_local_time_as_syslog3_writes_it() {
    if !require_root() {
        return;
    }
    let syslog = FakeSyslog::start();
    let pair = socket_pair();
    let before = std::time::SystemTime::now();
    let mut s = spawn_on_with(pair, &["--ident", "off"], &[("TZ", "XXX-9".to_string())], |cmd| {
        private_dev(cmd, Some(&syslog.path))
    });
    let dst = echo_dest();
    std::io::Write::write_all(&mut s.client, &connect_req(dst.addr, b"u")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5a);
    let _ = s.client.shutdown(std::net::Shutdown::Both);
    finish(&mut s, Duration::from_secs(30));
    let text = syslog.wait_for(IO_TIMEOUT, |t| t.contains("]: end "));
    let line = text.lines().find(|l| l.contains("]: decision ")).unwrap();
    // <30>: facility daemon (3 << 3) and severity info (6).
    let rest = line.strip_prefix("<30>").unwrap_or_else(|| panic!("{line}"));
    let (stamp, rest) = rest.split_at(15);
    assert!(
        rest.starts_with(&format!(" socks4d[{}]: decision ", s.child.id())),
        "{line}"
    );
    let bytes = stamp.as_bytes();
    assert!(
        bytes[3] == b' ' && bytes[6] == b' ' && bytes[9] == b':' && bytes[12] == b':',
        "{stamp}"
    );
    let day: u32 = stamp[4..6].trim().parse().unwrap();
    assert!(
        stamp[4..6].starts_with(' ') == (day < 10),
        "day padded with a blank: {stamp}"
    );
    let hour: u64 = stamp[7..9].parse().unwrap();
    let utc_hour = before.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 3600 % 24;
    assert!(
        hour == (utc_hour + 9) % 24 || hour == (utc_hour + 10) % 24,
        "{stamp}: not UTC+9 (UTC hour {utc_hour})"
    );
}

/// The event and the keys of a log line, in order, from `decision` or
/// `end` on: `decision client=... user=...` gives `["decision",
/// "client", "user", ...]`.
fn keys(line: &str) -> Vec<&str> {
    let from = line
        .find("decision ")
        .or_else(|| line.find("end "))
        .expect("a decision or end line");
    let mut words = line[from..].split(' ');
    let event = words.next().unwrap();
    std::iter::once(event)
        .chain(words.filter_map(|w| w.split_once('=').map(|(k, _)| k)))
        .collect()
}

/// The README's sample lines (Try it, Logs) have the keys socks4d writes,
/// in its order: a newcomer compares them with what the terminal shows.
#[test]
fn the_readmes_sample_lines_have_the_keys_socks4d_writes() {
    let readme = std::fs::read_to_string(top().join("README.md")).unwrap();
    let samples: Vec<&str> = readme
        .lines()
        .map(str::trim_start)
        .filter(|l| {
            let l = l.strip_prefix("socks4d[30000]: ").unwrap_or(l);
            l.starts_with("decision client=") || l.starts_with("end client=")
        })
        .collect();
    assert_eq!(samples.len(), 4, "the Try it and Logs samples: {samples:?}");

    let dir = TempDir::new("readme-lines");
    let rules = dir.write("socks4d.conf", "permit 127.0.0.0/8 0/0\n");
    let s = Listening::start(&["-f", &rules]);
    let dst = echo_dest();
    let mut c = connect_to(s.addr);
    c.write_all(&connect_4a("localhost", dst.addr.port(), b"")).unwrap();
    assert_eq!(read_reply(&mut c)[1], 0x5A, "{}", s.log.text());
    assert_eq!(send_and_read(&mut c, b"ping"), b"ping");
    drop(c);
    let log = s.wait_log(|l| l.contains("]: end "));
    for sample in samples {
        let event = keys(sample)[0];
        let written = line(&log, event);
        assert_eq!(keys(written), keys(sample), "README: {sample}\nsocks4d: {written}");
    }
}
