//! The rules file end to end: decisions, config errors (never fail
//! open), commands and hooks, --check-config and --explain.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const ARGS: &[&str] = &["--ident", "off", "--log-stderr"];

/// One CONNECT as `user` to an echo destination, under `conf`; returns
/// the reply code and the log.
fn connect_with(conf: &str, extra: &[&str], user: &[u8]) -> (u8, String) {
    let dst = echo_dest();
    connect_to_dst(conf, extra, &connect_req(dst.addr, user))
}

/// `req` sent to socks4d under `conf` and `extra`: the reply code and the
/// log; socks4d must exit normally.
fn connect_to_dst(conf: &str, extra: &[&str], req: &[u8]) -> (u8, String) {
    let mut args: Vec<&str> = ARGS.to_vec();
    args.extend_from_slice(&["-f", conf]);
    args.extend_from_slice(extra);
    let e = one_request(&args, req, |_| {});
    assert_eq!(e.status.code(), Some(0));
    (e.code(), e.log)
}

#[test]
fn first_match_wins_and_no_match_denies() {
    let dir = TempDir::shared("rules-first");
    let conf = dir.write(
        "socks4d.conf",
        "# comment\npermit *=alice 127.0.0.0/8\ndeny 127.0.0.1 255.255.255.255\npermit 127.0.0.0/8\n",
    );
    let (code, log) = connect_with(&conf, &[], b"alice");
    assert_eq!(code, 0x5A);
    assert!(line(&log, "decision").contains(&format!("rule={conf}:2 ")), "{log}");

    let (code, log) = connect_with(&conf, &[], b"bob");
    assert_eq!(code, 0x5B);
    let d = line(&log, "decision");
    assert!(
        d.contains(&format!("rule={conf}:3 ")) && d.contains("reason=denied"),
        "{d}"
    );

    let conf = dir.write("socks4d.conf", "permit 10.0.0.0/8\n");
    let (code, log) = connect_with(&conf, &[], b"bob");
    assert_eq!(code, 0x5B);
    let d = line(&log, "decision");
    assert!(
        d.contains("rule=default") && d.contains("detail=\"no rule matches\""),
        "{d}"
    );
}

#[test]
fn port_operator_and_destination_mask() {
    let dir = TempDir::shared("rules-port");
    let dst = echo_dest();
    let port = dst.addr.port();
    let conf = dir.write(
        "socks4d.conf",
        &format!("deny 127.0.0.0 255.0.0.0 127.0.0.1 255.255.255.255 eq {port}\npermit 0.0.0.0/0\n"),
    );
    let (code, log) = connect_to_dst(&conf, &[], &connect_req(dst.addr, b""));
    assert_eq!(code, 0x5B, "{log}");
    let conf = dir.write(
        "socks4d.conf",
        &format!("deny 127.0.0.0/8 127.0.0.1/32 neq {port}\npermit 0.0.0.0/0\n"),
    );
    let (code, log) = connect_to_dst(&conf, &[], &connect_req(dst.addr, b""));
    assert_eq!(code, 0x5A, "{log}");
}

#[test]
fn socks4a_is_decided_on_the_resolved_address() {
    let dir = TempDir::shared("rules-4a");
    let conf = dir.write("socks4d.conf", "deny 0.0.0.0/0 127.0.0.1/32\npermit 0.0.0.0/0\n");
    let dst = echo_dest();
    let (code, log) = connect_to_dst(&conf, &[], &connect_4a("localhost", dst.addr.port(), b""));
    assert_eq!(code, 0x5B, "{log}");
    assert!(line(&log, "decision").contains(&format!("rule={conf}:1")), "{log}");
}

#[test]
fn userlist_files_and_an_unreadable_one() {
    let dir = TempDir::shared("rules-users");
    std::fs::write(format!("{dir}/users"), "alice bob # staff\n# carol\ndave\n").unwrap();
    let conf = dir.write("socks4d.conf", &format!("permit *=erin,{dir}/users 127.0.0.0/8\n"));
    for (user, want) in [("alice", 0x5A), ("dave", 0x5A), ("erin", 0x5A), ("carol", 0x5B)] {
        let (code, log) = connect_with(&conf, &[], user.as_bytes());
        assert_eq!(code, want, "{user}: {log}");
    }
    let conf = dir.write("socks4d.conf", &format!("\npermit *={dir}/missing 127.0.0.0/8\n"));
    let (code, log) = connect_with(&conf, &[], b"alice");
    assert_eq!(code, 0x5B);
    let d = line(&log, "decision");
    assert!(
        d.contains("reason=config-error") && d.contains(&format!("{conf}:2: user list file {dir}/missing")),
        "{d}"
    );
}

#[test]
fn named_missing_or_malformed_file_means_no_service() {
    let dir = TempDir::shared("rules-broken");
    let missing = format!("{dir}/nope.conf");
    let (code, log) = connect_with(&missing, &[], b"alice");
    assert_eq!(code, 0x5B);
    assert!(log.contains("config error") && log.contains(&missing), "{log}");
    assert!(line(&log, "decision").contains("reason=config-error"), "{log}");

    // One good line does not help: a file with any error gives no service.
    let conf = dir.write(
        "socks4d.conf",
        "permit 127.0.0.0/8\npermit 127.0.0.0 255.0.0.0 frob 80\n",
    );
    let (code, log) = connect_with(&conf, &[], b"alice");
    assert_eq!(code, 0x5B);
    assert!(line(&log, "decision").contains(&format!("{conf}:2:")), "{log}");

    // Binary garbage and an over-long line name their lines too.
    let mut junk = vec![b'p'; 2000];
    junk.extend_from_slice(b"\n\x00\xff\xfe garbage\n");
    std::fs::write(&conf, &junk).unwrap();
    let (code, _, err) = run_socks4d(&["--check-config", "-f", &conf]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{conf}:1: line longer than 1023 bytes")), "{err}");
    assert!(err.contains(&format!("{conf}:2:")), "{err}");
}

#[test]
fn check_config_reports_each_error_with_its_line() {
    let dir = TempDir::shared("rules-check");
    let conf = dir.write(
        "socks4d.conf",
        "permit 127.0.0.0/8\nallow 10.0.0.0/8\npermit 10.0.0.0/33\npermit 10.0.0.0/8 eq nosuchservice\n",
    );
    let (code, out, err) = run_socks4d(&["--check-config", "-f", &conf]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with(&format!("{conf}:2: unknown action")), "{err}");
    assert!(lines[1].starts_with(&format!("{conf}:3:")), "{err}");
    assert!(
        lines[2].starts_with(&format!("{conf}:4:")) && lines[2].contains("nosuchservice"),
        "{err}"
    );

    let (code, out, _) = run_socks4d(&["--check-config", "-f", "examples/socks4d.conf"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK"), "{out}");
}

/// The example of the classic sockd.conf(5), as administrators have it.
const CLASSIC: &str = include_str!("data/classic-sockd.conf");

#[test]
fn explain_names_the_deciding_line_of_a_classic_file() {
    let dir = TempDir::shared("rules-explain");
    let conf = dir.write("socks4d.conf", CLASSIC);
    let cases = [
        (
            ["clyde", "128.12.6.34", "112.3.24.1", "21"],
            ":1: deny",
            "decision: deny",
        ),
        (
            ["ylee", "128.12.6.4", "137.12.4.15", "telnet"],
            ":2: permit",
            "decision: permit",
        ),
        (
            ["jane", "128.12.2.13", "137.12.4.15", "23"],
            ":3: deny",
            "decision: deny",
        ),
        (
            ["sam", "128.12.36.7", "10.53.23.1", "70"],
            ":4: permit",
            "decision: permit",
        ),
    ];
    for (args, rule, decision) in cases {
        let mut a = vec!["-f", conf.as_str(), "--explain"];
        a.extend_from_slice(&args);
        let (code, out, err) = run_socks4d(&a);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!("{conf}{rule}")) && out.contains(decision),
            "{args:?}: {out}"
        );
    }
    let (_, out, _) = run_socks4d(&["-f", &conf, "--explain", "bonnie", "128.12.6.9", "10.53.23.1", "70"]);
    assert!(out.contains("command: /bin/echo rejected %u >>/tmp/x"), "{out}");
    let (_, out, _) = run_socks4d(&["-f", &conf, "--explain", "don", "23.2.6.127", "10.53.23.1", "70"]);
    assert!(
        out.contains("no rule matches") && out.contains("decision: deny"),
        "{out}"
    );
    let (_, out, _) = run_socks4d(&["-f", &conf, "-i", "--explain", "sam", "128.12.36.7", "10.53.23.1", "70"]);
    assert!(out.contains("ident: optional"), "{out}");
}

/// Polls for `path` to hold a line, within a deadline.
fn wait_for_file(path: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(start.elapsed() < IO_TIMEOUT, "{path} never written");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rule_command_runs_with_sanitised_substitutions() {
    let dir = TempDir::shared("rules-cmd");
    let out = format!("{dir}/out");
    let conf = dir.write(
        "socks4d.conf",
        &format!("permit 127.0.0.0/8 : echo %c %a %u %s %U %%>{out}\n"),
    );
    let user = b"eve;touch /tmp/pwned`id`$(id)";
    // Commands run confined: they may write only under --writable.
    let (code, _) = connect_with(&conf, &["--writable", &dir.to_string()], user);
    assert_eq!(code, 0x5A);
    let got = wait_for_file(&out);
    let parts: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(parts[0], "connect");
    assert_eq!(parts[1], "127.0.0.1");
    assert_eq!(parts[2], "eve_touch__tmp_pwned_id___id_");
    assert_eq!(parts[4], "unknown");
    assert_eq!(parts[5], "%");
    assert!(!std::path::Path::new("/tmp/pwned").exists());
}

#[test]
fn deny_command_and_no_identd_hook_run() {
    let dir = TempDir::shared("rules-hooks");
    let denied = format!("{dir}/denied");
    let hook = format!("{dir}/hook");
    let conf = dir.write("socks4d.conf", &format!("deny *=mallory 127.0.0.0/8 : echo denied %u >{denied}\npermit ?=I 127.0.0.0/8\n#NO_IDENTD: echo no identd on %a for %u >{hook}\n"),
    );
    let (code, _) = connect_with(&conf, &["--writable", &dir.to_string()], b"mallory");
    assert_eq!(code, 0x5B);
    assert_eq!(wait_for_file(&denied), "denied mallory\n");

    // Required ident by the rule; nothing listens on the client address's
    // ident port.
    let dst = echo_dest();
    let writable = dir.to_string();
    let mut args: Vec<&str> = ARGS.to_vec();
    args.extend_from_slice(&["-f", &conf, "--writable", &writable]);
    let from = quiet_address();
    let mut s = spawn_on(socket_pair_from(from, "127.0.0.1"), &args, &[]);
    s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5C);
    finish(&mut s, EXIT);
    assert_eq!(wait_for_file(&hook), format!("no identd on {from} for alice\n"));
}

#[test]
fn default_file_absent_means_builtin_policy() {
    // Only when this machine has no /etc/socks4d.conf.
    let absent = !std::path::Path::new("/etc/socks4d.conf").exists();
    if !require_that(absent, "/etc/socks4d.conf exists here") {
        return;
    }
    let dst = echo_dest();
    let mut s = spawn_stdin(ARGS);
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    let _ = s.client.shutdown(std::net::Shutdown::Write);
    let (_, log) = finish(&mut s, EXIT);
    assert!(line(&log, "decision").contains("rule=builtin"), "{log}");
    // Two lines per connection, as documented: the built-in policy is
    // said where it helps, when --listen starts and by --check-config.
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(!log.contains("built-in policy"), "{log}");
    let (code, out, _) = run_socks4d(&["--check-config", "--log-stderr"]);
    assert_eq!(code, 0);
    assert!(out.contains("built-in policy"), "{out}");
    let (mut guard, _) = spawn_listen(ARGS);
    let mut stderr = guard.0.stderr.take().unwrap();
    let mut text = String::new();
    let start = Instant::now();
    while !text.contains("built-in policy") && start.elapsed() < EXIT {
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut stderr, &mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        text.contains("rules: /etc/socks4d.conf is absent; built-in policy: permit loopback clients"),
        "{text}"
    );
}

#[test]
fn a_command_does_not_hold_the_client_connection_open() {
    // Under socket activation the client is fd 3; a slow command started
    // for the deciding rule must not inherit it, or a connection that
    // socks4d closes (here at the idle timeout) would stay open until the
    // command ends.
    let dir = TempDir::shared("rules-cloexec");
    let conf = dir.write("socks4d.conf", "permit 127.0.0.0/8 : sleep 8\n");
    let dst = dest(|mut s| {
        let _ = read_all(&mut s);
    });
    let mut args: Vec<&str> = ARGS.to_vec();
    args.extend_from_slice(&["-f", &conf, "--idle-timeout", "1"]);
    let mut s = spawn_fd3(&args);
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    let mut reply = [0u8; 8];
    if let Err(e) = std::io::Read::read_exact(&mut s.client, &mut reply) {
        let (status, log) = finish(&mut s, EXIT);
        panic!("no reply ({e}); socks4d {status:?}:\n{log}");
    }
    assert_eq!(reply[1], 0x5A);
    let t = Instant::now();
    assert!(closed(&mut s.client));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the client waited {:?} for the close",
        t.elapsed()
    );
    finish(&mut s, EXIT);
}

#[test]
fn explain_takes_dash_f_after_explain_as_the_man_page_shows() {
    let dir = TempDir::shared("rules-explain-f");
    let conf = dir.write(
        "socks4d.conf",
        "deny 10.0.0.1 255.255.255.255\npermit 10.0.0.0 255.0.0.0\n",
    );
    let (code, out, err) = run_socks4d(&["--explain", "-f", &conf, "alice", "10.0.0.1", "10.0.0.2", "80"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{conf}:1: deny")) && out.contains("decision: deny"),
        "{out}"
    );
    let (code, out, _) = run_socks4d(&["--explain", "alice", "10.0.0.9", "10.0.0.2", "80", "-f", &conf]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("{conf}:2: permit")), "{out}");
    let (code, _, err) = run_socks4d(&["--explain", "-f", &conf, "alice", "10.0.0.1", "10.0.0.2"]);
    assert_eq!(code, 64);
    assert!(err.contains("missing PORT"), "{err}");
}
