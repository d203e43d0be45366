//! `socks4d --check-config --compile` and the frozen rules file: used by a
//! connection only while it is current and trusted; otherwise the text is
//! read, with a warning, and never served less strictly. A frozen file
//! truncated, rewritten or replaced while socks4d runs never kills a
//! handler nor decides a request from bytes that were not checked.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use crate::common::*;
use socks4d::rules;

fn compile(conf: &str) -> (i32, String, String) {
    run_socks4d(&["--check-config", "--compile", "-f", conf])
}

/// One CONNECT under `conf` (socks4d started inetd style): the reply
/// code and the log. The handler must exit normally.
fn connect(conf: &str) -> (u8, String) {
    let dst = echo_dest();
    let args = ["--ident", "off", "--log-stderr", "-f", conf];
    let e = one_request(&args, &connect_req(dst.addr, b"u"), |_| {});
    assert!(
        e.reply.is_some() && e.status.code() == Some(0),
        "{:?}:\n{}",
        e.status,
        e.log
    );
    (e.code(), e.log)
}

/// Whether the connection that wrote `log` decided from the frozen file:
/// there is one, and no line says why it was not used.
fn used_frozen(conf: &str, log: &str) -> bool {
    std::path::Path::new(&format!("{conf}{}", rules::frozen::SUFFIX)).exists() && !log.contains(".frozen not used")
}

#[test]
fn a_compiled_file_serves_until_the_text_changes() {
    let dir = TempDir::new("frozen-serve");
    let conf = format!("{dir}/socks4d.conf");
    std::fs::write(&conf, "deny 10.0.0.0/8\npermit 127.0.0.0/8\n").unwrap();
    let (code, out, err) = compile(&conf);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{conf}.frozen: written, 2 rules")), "{out}");
    let meta = std::fs::metadata(format!("{conf}.frozen")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let (_, out, _) = run_socks4d(&["--check-config", "-f", &conf]);
    assert!(out.contains(&format!("{conf}.frozen: current, 2 rules")), "{out}");

    let (code, log) = connect(&conf);
    assert_eq!(code, 0x5A, "{log}");
    assert!(used_frozen(&conf, &log), "{log}");
    assert!(line(&log, "decision").contains(&format!("rule={conf}:2")), "{log}");

    // The text changes: the next connection reads it, and says why.
    std::fs::write(&conf, "deny 127.0.0.0/8\n").unwrap();
    let (code, log) = connect(&conf);
    assert_eq!(code, 0x5B, "{log}");
    assert!(!used_frozen(&conf, &log));
    assert!(line(&log, "decision").contains(&format!("rule={conf}:1")), "{log}");
    assert!(
        log.contains(&format!(
            "rules: {conf}.frozen not used: the rules file has changed since it was compiled; {conf} was read instead"
        )),
        "{log}"
    );
    let (_, out, _) = run_socks4d(&["--check-config", "-f", &conf]);
    assert!(out.contains("not used: the rules file has changed"), "{out}");

    // Compiled again: served from it, with the new rules.
    assert_eq!(compile(&conf).0, 0);
    let (code, log) = connect(&conf);
    assert_eq!((code, used_frozen(&conf, &log)), (0x5B, true), "{log}");
}

#[test]
fn a_frozen_file_others_may_write_means_no_service() {
    let dir = TempDir::new("frozen-trust");
    let conf = format!("{dir}/socks4d.conf");
    std::fs::write(&conf, "permit 127.0.0.0/8\n").unwrap();
    assert_eq!(compile(&conf).0, 0);
    let frozen = format!("{conf}.frozen");
    std::fs::set_permissions(&frozen, std::fs::Permissions::from_mode(0o664)).unwrap();
    let why = format!("{frozen}: writable by group (mode 0664)");
    let (code, log) = connect(&conf);
    assert_eq!(code, 0x5B, "{log}");
    assert!(line(&log, "decision").contains("reason=config-error"), "{log}");
    assert!(
        log.contains(&format!("config error: {why}; no service until it is fixed")),
        "{log}"
    );
    let (code, _, err) = run_socks4d(&["--check-config", "-f", &conf]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&why), "{err}");

    let owner_check = "not root: the check of a frozen file owned by the service user";
    if require_that(is_root(), owner_check) {
        // Owned by the user socks4d serves as.
        std::fs::set_permissions(&frozen, std::fs::Permissions::from_mode(0o644)).unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::chown(frozen.as_str(), Some(nobody.uid), None).unwrap();
        let (code, log) = connect(&conf);
        assert_eq!(code, 0x5B, "{log}");
        assert!(
            log.contains(&format!(
                "{frozen}: owned by uid {}, the user socks4d serves as (--user nobody)",
                nobody.uid
            )),
            "{log}"
        );
    }
}

#[test]
fn files_with_errors_or_host_names_are_not_compiled() {
    let dir = TempDir::new("frozen-refuse");
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
}

#[test]
fn a_changed_user_list_makes_the_frozen_file_stale() {
    let dir = TempDir::new("frozen-users");
    let conf = format!("{dir}/socks4d.conf");
    let users = format!("{dir}/users");
    std::fs::write(&users, "u\n").unwrap();
    std::fs::write(&conf, format!("permit *={users} 127.0.0.0/8\n")).unwrap();
    assert_eq!(compile(&conf).0, 0);
    let (code, log) = connect(&conf);
    assert_eq!((code, used_frozen(&conf, &log)), (0x5A, true), "{log}");
    std::fs::write(&users, "someone-else\n").unwrap();
    let (code, log) = connect(&conf);
    assert_eq!((code, used_frozen(&conf, &log)), (0x5B, false), "{log}");
    assert!(
        log.contains(&format!("{users} has changed since it was compiled")),
        "{log}"
    );
}

/// Writes a frozen file for `conf` that records `conf`'s identity as it is
/// now but holds the rules of `text`: a connection that uses it decides by
/// `text`, whatever `conf` says. (What only root, or the rules file's
/// owner, can do.)
fn forge(conf: &str, text: &str) {
    let mut none = rules::Fixed::default();
    let services = rules::Services::parse(b"");
    let (parsed, _) = rules::grammar::read(text.as_bytes(), conf, &services, &mut none, false);
    let parsed = parsed.unwrap();
    let meta = std::fs::metadata(conf).unwrap();
    let identity = rules::frozen::Identity::of(&meta);
    let bytes = rules::frozen::encode(&parsed, identity, rules::frozen::hash(text.as_bytes()), &[]).unwrap();
    let frozen = format!("{conf}.frozen");
    let _ = std::fs::remove_file(&frozen);
    std::fs::write(&frozen, bytes).unwrap();
    std::fs::set_permissions(&frozen, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn connections_decide_from_the_frozen_file() {
    let dir = TempDir::new("frozen-forged");
    let conf = format!("{dir}/socks4d.conf");
    std::fs::write(&conf, "permit 127.0.0.0/8\n").unwrap();
    forge(&conf, "deny 127.0.0.0/8\n");
    let (code, log) = connect(&conf);
    assert_eq!(code, 0x5B, "{log}");
    assert!(line(&log, "decision").contains(&format!("rule={conf}:1 ")), "{log}");
    assert!(used_frozen(&conf, &log), "{log}");
}

/// One CONNECT to `l`: the reply code, or `None` when the connection
/// closed without one; then the log once it holds `ends` end lines of
/// CONNECTs or a handler was killed.
fn connect_listening(l: &Listening, ends: usize) -> (Option<u8>, String) {
    let (code, _) = l.connect(b"u");
    let log = l.wait_log(|log| {
        let done = log
            .lines()
            .filter(|l| l.contains("]: end ") && l.contains(" cmd=connect "))
            .count();
        done >= ends || log.contains("]: killed ")
    });
    (code, log)
}

/// Overwrites `path` in place (same inode, as `cp` and `>` do) with
/// `bytes`.
fn rewrite(path: &str, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_frozen_file_changed_under_a_running_listen_never_kills_a_handler() {
    let dir = TempDir::new("frozen-listen");
    let conf = format!("{dir}/socks4d.conf");
    let frozen = format!("{conf}.frozen");
    std::fs::write(&conf, "deny 10.0.0.0/8\npermit 127.0.0.0/8\n").unwrap();
    // Another file of the same length and its frozen file, of the same
    // length too, that denies loopback clients.
    let other = format!("{dir}/other.conf");
    std::fs::write(&other, "permit 10.0.0.0/8\ndeny 127.0.0.0/8\n").unwrap();
    assert_eq!(compile(&conf).0, 0);
    assert_eq!(compile(&other).0, 0);
    let (good, bad) = (
        std::fs::read(&frozen).unwrap(),
        std::fs::read(format!("{other}.frozen")).unwrap(),
    );
    assert_eq!(good.len(), bad.len());
    let inode = std::fs::metadata(&frozen).unwrap().ino();

    let l = Listening::start(&["-f", &conf]);
    let (code, log) = connect_listening(&l, 1);
    assert_eq!(code, Some(0x5A), "{log}");
    assert!(used_frozen(&conf, &log), "{log}");
    let mut damaged = good.clone();
    damaged[200..].copy_from_slice(&payload(good.len() - 200, 8));
    let changes = [
        ("cp other.conf.frozen", bad),
        ("truncate -s 0", Vec::new()),
        ("random bytes", payload(good.len(), 7)),
        ("the header kept, random bytes after it", damaged),
    ];
    for (k, (what, bytes)) in changes.iter().enumerate() {
        rewrite(&frozen, bytes);
        assert_eq!(std::fs::metadata(&frozen).unwrap().ino(), inode, "rewritten in place");
        let (code, log) = connect_listening(&l, k + 2);
        assert!(!log.contains("]: killed "), "after {what}:\n{log}");
        assert_eq!(code, Some(0x5A), "after {what}:\n{log}");
        let last = log.lines().rfind(|l| l.contains("]: decision ")).unwrap();
        assert!(last.contains(&format!("rule={conf}:2 ")), "after {what}: {last}");
        // And a connection started now, inetd style, reads the text.
        let (code, log) = connect(&conf);
        assert_eq!(code, 0x5A, "after {what}:\n{log}");
        assert!(
            log.contains(&format!("rules: {frozen} not used: ")),
            "after {what}:\n{log}"
        );
        rewrite(&frozen, &good);
    }
    drop(l);
}

#[test]
fn a_frozen_file_rewritten_while_connections_read_it() {
    // inetd style, each connection reads the frozen file afresh while
    // another process rewrites it in place: each gets the right answer,
    // from the frozen file or from the text.
    let dir = TempDir::new("frozen-race");
    let conf = format!("{dir}/socks4d.conf");
    let frozen = format!("{conf}.frozen");
    let mut text = String::new();
    for i in 0..3000 {
        text += &format!("deny 10.{}.{}.0/24\n", i / 256, i % 256);
    }
    text += "permit 127.0.0.0/8\n";
    std::fs::write(&conf, &text).unwrap();
    assert_eq!(compile(&conf).0, 0);
    let good = std::fs::read(&frozen).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, frozen, good) = (stop.clone(), frozen.clone(), good.clone());
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rewrite(&frozen, &good[..good.len() / 2]);
                rewrite(&frozen, &good);
                rewrite(&frozen, b"");
                rewrite(&frozen, &payload(good.len(), n));
                rewrite(&frozen, &good);
                n += 1;
            }
            n
        })
    };
    let mut from_frozen = 0;
    for _ in 0..40 {
        let (code, log) = connect(&conf);
        assert_eq!(code, 0x5A, "{log}");
        assert!(line(&log, "decision").contains(&format!("rule={conf}:3001 ")), "{log}");
        from_frozen += usize::from(!log.contains("not used"));
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(rounds > 0);
    eprintln!("{from_frozen} of 40 connections decided from the frozen file; {rounds} rewrites");
}

#[test]
fn a_frozen_file_of_megabytes_decides_as_its_text() {
    // Past 2 MiB the copy is made in huge pages; the decision is the same.
    let dir = TempDir::new("frozen-large");
    let conf = format!("{dir}/socks4d.conf");
    let mut text = String::new();
    for i in 0..14_000 {
        text += &format!(
            "deny 10.{}.{}.0/24 192.0.2.0/24 eq {}\n",
            i / 256,
            i % 256,
            1 + i % 60_000
        );
    }
    text += "permit 127.0.0.0/8\n";
    std::fs::write(&conf, &text).unwrap();
    assert_eq!(compile(&conf).0, 0);
    let size = std::fs::metadata(format!("{conf}.frozen")).unwrap().len();
    assert!(size > 2 << 20, "{size}");
    let (code, log) = connect(&conf);
    assert_eq!(code, 0x5A, "{log}");
    assert!(used_frozen(&conf, &log), "{log}");
    assert!(line(&log, "decision").contains(&format!("rule={conf}:14001 ")), "{log}");
}
