//! `socks4d --check-config --compile` and the frozen rules file: used by a
//! connection only while it is current and trusted; otherwise the text is
//! read, with a warning, and never served less strictly.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const EXIT: Duration = Duration::from_secs(30);
const ARGS: &[&str] = &["--ident", "off", "--log-stderr"];

fn tempdir(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("socks4d-frozen-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

fn socks4d(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn compile(conf: &str) -> (i32, String, String) {
    socks4d(&["--check-config", "--compile", "-f", conf])
}

/// Whether the handler `pid` has `path` mapped.
fn maps(pid: u32, path: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().any(|l| l.ends_with(path)))
        .unwrap_or(false)
}

/// One CONNECT under `conf`: the reply code, the log, and whether the
/// handler had the frozen file mapped while it waited for the request.
fn connect(conf: &str) -> (u8, String, bool) {
    let dst = echo_dest();
    let mut args: Vec<&str> = ARGS.to_vec();
    args.extend_from_slice(&["-f", conf]);
    let mut s = spawn_stdin(&args);
    // The rules are loaded before the request is read: wait for the load
    // (the process maps its libraries first).
    let frozen = format!("{conf}.frozen");
    let start = Instant::now();
    let mut mapped = false;
    while start.elapsed() < Duration::from_secs(2) {
        if maps(s.child.id(), &frozen) {
            mapped = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    s.client.write_all(&connect_req(dst.addr, b"u")).unwrap();
    let code = read_reply(&mut s.client)[1];
    let _ = s.client.shutdown(std::net::Shutdown::Write);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0), "{log}");
    (code, log, mapped)
}

#[test]
fn a_compiled_file_serves_until_the_text_changes() {
    let dir = tempdir("serve");
    let conf = format!("{dir}/socks4d.conf");
    std::fs::write(&conf, "deny 10.0.0.0/8\npermit 127.0.0.0/8\n").unwrap();
    let (code, out, err) = compile(&conf);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{conf}.frozen: written, 2 rules")), "{out}");
    let meta = std::fs::metadata(format!("{conf}.frozen")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let (_, out, _) = socks4d(&["--check-config", "-f", &conf]);
    assert!(out.contains(&format!("{conf}.frozen: current, 2 rules")), "{out}");

    let (code, log, mapped) = connect(&conf);
    assert_eq!(code, 0x5A, "{log}");
    assert!(mapped, "the frozen file was not mapped");
    assert!(line(&log, "decision").contains(&format!("rule={conf}:2")), "{log}");
    assert!(!log.contains("not used"), "{log}");

    // The text changes: the next connection reads it, and says why.
    std::fs::write(&conf, "deny 127.0.0.0/8\n").unwrap();
    let (code, log, mapped) = connect(&conf);
    assert_eq!(code, 0x5B, "{log}");
    assert!(!mapped);
    assert!(line(&log, "decision").contains(&format!("rule={conf}:1")), "{log}");
    assert!(
        log.contains(&format!(
            "rules: {conf}.frozen not used: the rules file has changed since it was compiled; {conf} was read instead"
        )),
        "{log}"
    );
    let (_, out, _) = socks4d(&["--check-config", "-f", &conf]);
    assert!(out.contains("not used: the rules file has changed"), "{out}");

    // Compiled again: served from it, with the new rules.
    assert_eq!(compile(&conf).0, 0);
    let (code, log, mapped) = connect(&conf);
    assert_eq!((code, mapped), (0x5B, true), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_frozen_file_others_may_write_is_not_used() {
    let dir = tempdir("trust");
    let conf = format!("{dir}/socks4d.conf");
    std::fs::write(&conf, "permit 127.0.0.0/8\n").unwrap();
    assert_eq!(compile(&conf).0, 0);
    let frozen = format!("{conf}.frozen");
    std::fs::set_permissions(&frozen, std::fs::Permissions::from_mode(0o664)).unwrap();
    let (code, log, mapped) = connect(&conf);
    assert_eq!((code, mapped), (0x5A, false), "{log}");
    assert!(log.contains("not used: others than its owner may write it"), "{log}");

    if nix::unistd::geteuid().is_root() {
        // Owned by neither root nor the text's owner.
        std::fs::set_permissions(&frozen, std::fs::Permissions::from_mode(0o644)).unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::chown(frozen.as_str(), Some(nobody.uid), None).unwrap();
        let (code, log, mapped) = connect(&conf);
        assert_eq!((code, mapped), (0x5A, false), "{log}");
        assert!(log.contains("neither root nor the rules file's owner"), "{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_with_errors_or_host_names_are_not_compiled() {
    let dir = tempdir("refuse");
    let conf = format!("{dir}/socks4d.conf");
    std::fs::write(&conf, "permit 127.0.0.0/8\nallow everyone\n").unwrap();
    let (code, _, err) = compile(&conf);
    assert_eq!(code, 1, "{err}");
    assert!(!std::path::Path::new(&format!("{conf}.frozen")).exists());

    std::fs::write(&conf, "permit localhost 255.255.255.255\n").unwrap();
    let (code, _, err) = compile(&conf);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{conf}:1: a host name")), "{err}");
    assert!(!std::path::Path::new(&format!("{conf}.frozen")).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_user_list_makes_the_frozen_file_stale() {
    let dir = tempdir("users");
    let conf = format!("{dir}/socks4d.conf");
    let users = format!("{dir}/users");
    std::fs::write(&users, "u\n").unwrap();
    std::fs::write(&conf, format!("permit *={users} 127.0.0.0/8\n")).unwrap();
    assert_eq!(compile(&conf).0, 0);
    let (code, _, mapped) = connect(&conf);
    assert_eq!((code, mapped), (0x5A, true));
    std::fs::write(&users, "someone-else\n").unwrap();
    let (code, log, mapped) = connect(&conf);
    assert_eq!((code, mapped), (0x5B, false), "{log}");
    assert!(
        log.contains(&format!("{users} has changed since it was compiled")),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
