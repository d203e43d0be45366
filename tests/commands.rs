//! The rules' commands and hooks, run by a real socks4d: what their `%`
//! values can and cannot make a command do, what a command inherits, how
//! long it may run and how many run, and the log line of one that fails.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// One CONNECT as `user` through a socks4d started inetd-style with
/// `args`, after `setup` (environment, descriptors, namespaces); returns
/// the reply code and the log once socks4d has exited. Ident is off
/// unless `args` says otherwise.
fn one(args: &[&str], user: &[u8], setup: impl FnOnce(&mut std::process::Command)) -> (u8, String) {
    let dst = echo_dest();
    let mut all = vec!["--ident", "off", "--log-stderr"];
    all.extend_from_slice(args);
    let e = one_request(&all, &connect_req(dst.addr, user), setup);
    assert_eq!(e.status.code(), Some(0), "{}", e.log);
    (e.code(), e.log)
}

/// What the substitution mapping makes of each spelling, as socks4d.conf(5)
/// documents it.
const SPELLINGS: &[(&[u8], &str)] = &[
    (b"--help", "_-help"),
    (b"--version", "_-version"),
    (b"-n", "_n"),
    (b"-e", "_e"),
    (b"-V", "_V"),
    (b"--x=y", "_-x=y"),
    (b"+x", "_x"),
    (b".", "_"),
    (b"..", "__"),
    (b"...", "___"),
    (b".hidden", "_hidden"),
    (b"a/../b", "a_.__b"),
    (b"../../escaped", "___.__escaped"),
    (b"/etc/passwd", "_etc_passwd"),
    (b"a\\b", "a_b"),
    ("é".as_bytes(), "__"),
    (b"", "_"),
    (b"alice", "alice"),
    (b"a.b-c", "a.b-c"),
];

/// A user-id that is an option of the command gets there as an operand:
/// /bin/echo prints it instead of its help, its version, or taking -n.
#[test]
fn a_user_id_is_never_an_option_of_echo() {
    let dir = TempDir::shared("commands-echo");
    let out = dir.file("out");
    let conf = dir.write("socks4d.conf", &format!("deny 127.0.0.0/8 : /bin/echo %u >> {out}\n"));
    for (user, want) in SPELLINGS {
        let _ = std::fs::remove_file(&out);
        let (code, log) = one(&["-f", &conf, "--writable", &dir.to_string()], user, |_| {});
        assert_eq!(code, 0x5B, "{log}");
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        assert_eq!(
            got,
            format!("{want}\n"),
            "user {:?}: echo wrote {got:?}",
            String::from_utf8_lossy(user)
        );
    }
}

/// `/bin/mkdir -p DIR/a/seen/%u` makes one directory in DIR/a/seen for
/// every user-id, and nothing anywhere else.
#[test]
fn a_user_id_is_never_a_path_for_mkdir() {
    let dir = TempDir::shared("commands-mkdir");
    let seen = dir.file("a/seen");
    std::fs::create_dir_all(&seen).unwrap();
    std::fs::set_permissions(dir.file("a"), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(&seen, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let conf = dir.write("socks4d.conf", &format!("deny 127.0.0.0/8 : /bin/mkdir -p {seen}/%u\n"));
    for (user, want) in SPELLINGS {
        let (code, log) = one(&["-f", &conf, "--writable", &dir.to_string()], user, |_| {});
        assert_eq!(code, 0x5B, "{log}");
        assert!(
            Path::new(&seen).join(want).is_dir(),
            "user {:?}: no {seen}/{want}",
            String::from_utf8_lossy(user)
        );
    }
    let mut made: Vec<String> = std::fs::read_dir(&seen)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    let mut want: Vec<String> = SPELLINGS.iter().map(|(_, w)| w.to_string()).collect();
    want.sort();
    want.dedup();
    assert_eq!(made, want, "what mkdir made in {seen}");
    let mut top: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["a", "socks4d.conf"], "what is in {dir}");
    assert_eq!(
        std::fs::read_dir(dir.file("a")).unwrap().count(),
        1,
        "more than seen/ in a/"
    );
}

/// A user-id of `-V` does not silence `logger -t socks4d %u@%A`: the
/// syslog record carries the value.
#[test]
fn a_user_id_is_never_an_option_of_logger() {
    if !require_root() || !require("logger") {
        return;
    }
    let dir = TempDir::shared("commands-logger");
    let syslog = FakeSyslog::start();
    let conf = dir.write(
        "socks4d.conf",
        "deny 127.0.0.0/8 : /usr/bin/logger -t socks4d-cmd %u@%A\n",
    );
    let (code, log) = one(&["-f", &conf], b"-V", |cmd| private_dev(cmd, Some(&syslog.path)));
    assert_eq!(code, 0x5B, "{log}");
    let text = syslog.wait_for(IO_TIMEOUT, |t| t.contains("socks4d-cmd"));
    let record = text.lines().find(|l| l.contains("socks4d-cmd")).unwrap();
    assert!(
        record.ends_with(": _V@localhost") || record.ends_with(": _V@127.0.0.1"),
        "{record}"
    );
    assert!(lines(&log, "command").is_empty(), "{log}");
}

/// An identd that answers `--server=127.0.0.1` for a client that claims
/// `--port=P` cannot make the `#BAD_ID:` hook's logger send its record
/// over UDP to port P: the record goes to syslog, with both values in it.
#[test]
fn an_ident_answer_cannot_redirect_a_hook() {
    if !require_root() || !require("logger") {
        return;
    }
    let dir = TempDir::shared("commands-badid");
    let syslog = FakeSyslog::start();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let claimed = format!("--port={}", udp.local_addr().unwrap().port());
    let conf = dir.write(
        "socks4d.conf",
        "permit 127.0.0.0/8\n\
         #BAD_ID: /usr/bin/logger -p auth.warning -t socks4d-cmd %U on %A claimed %u\n",
    );
    let Some(identd) = identd_naming("--server=127.0.0.1") else {
        return;
    };
    let dst = echo_dest();
    let args = ["--ident", "required", "--log-stderr", "-f", &conf];
    let pair = socket_pair_from(identd, "127.0.0.1");
    let mut s = spawn_on_with(pair, &args, &[], |cmd| private_dev(cmd, Some(&syslog.path)));
    s.client.write_all(&connect_req(dst.addr, claimed.as_bytes())).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5D);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0), "{log}");
    // Whichever comes first: the syslog record, or a datagram.
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let record = loop {
        if let Ok(n) = udp.recv(&mut buf) {
            panic!(
                "the hook sent a datagram to the claimed port: {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
        let text = syslog.text();
        if let Some(r) = text.lines().find(|l| l.contains("socks4d-cmd")) {
            break r.to_string();
        }
        assert!(start.elapsed() < IO_TIMEOUT, "no record from the hook; log:\n{log}");
        thread::sleep(Duration::from_millis(20));
    };
    let port = udp.local_addr().unwrap().port();
    assert!(
        record.contains(&format!("_-server=127.0.0.1 on {identd} claimed _-port={port}")),
        "{record}"
    );
    assert!(udp.recv(&mut buf).is_err(), "a datagram after the record");
}

/// An identd on port 113 of a loopback address of its own that answers
/// every query with USERID `user`; returns that address, from which the
/// client must connect. `None` without root (a skip, or a failure in CI).
fn identd_naming(user: &str) -> Option<Ipv4Addr> {
    fake_identd(Identd::Answer(format!("USERID : UNIX : {user}"))).map(|(ip, _)| ip)
}

/// A command sees PATH (and the PWD its shell sets) and nothing else of
/// the environment, and descriptors 0 to 2 only, even when socks4d was
/// started with secrets in its environment and an extra descriptor open.
#[test]
fn a_command_inherits_no_environment_and_no_descriptor() {
    let dir = TempDir::shared("commands-inherit");
    let (env, fds) = (dir.file("env"), dir.file("fds"));
    let conf = dir.write(
        "socks4d.conf",
        &format!("deny 127.0.0.0/8 : env > {env}; ls -l /proc/self/fd > {fds}\n"),
    );
    let secret = std::fs::File::open("/etc/hostname").unwrap();
    let raw = secret.as_raw_fd();
    let (code, log) = one(
        &["-f", &conf, "--writable", &dir.to_string(), "--readable", "/proc"],
        b"x",
        |cmd| {
            cmd.env("SECRET_TOKEN", "hunter2")
                .env("LD_LIBRARY_PATH", "/nonexistent")
                .env("LISTEN_FDNAMES", "client")
                .env("PATH", "/nonexistent:/usr/bin:/bin");
            // SAFETY: dup2 is async-signal-safe; `secret` outlives the spawn.
            unsafe {
                cmd.pre_exec(move || {
                    if nix::libc::dup2(raw, 9) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    drop(secret);
    assert_eq!(code, 0x5B, "{log}");
    let mut got: Vec<String> = std::fs::read_to_string(&env)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    assert_eq!(got, ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "PWD=/"], "{log}");
    // ls's own listing: 0 to 2, and the directory it reads.
    let listing = std::fs::read_to_string(&fds).unwrap();
    let mut seen = Vec::new();
    for l in listing.lines().filter(|l| l.contains(" -> ")) {
        let (left, target) = l.split_once(" -> ").unwrap();
        let fd: u32 = left.split_whitespace().last().unwrap().parse().unwrap();
        let ok = match fd {
            0 => target == "/dev/null",
            1 => target == fds,
            2 => target.starts_with("pipe:"),
            _ => target.starts_with("/proc/") && target.ends_with("/fd"),
        };
        assert!(ok, "descriptor {fd} -> {target} in a command:\n{listing}");
        seen.push(fd);
    }
    assert_eq!(seen.len(), 4, "{listing}");
    assert!(lines(&log, "command").is_empty(), "{log}");
}

/// The man page's classic example cannot write /tmp/x under the default
/// confinement; the log says so, with the shell's message.
#[test]
fn a_command_that_fails_is_logged_with_its_error() {
    let dir = TempDir::shared("commands-fails");
    let conf = dir.write(
        "socks4d.conf",
        "deny *=bonnie,clyde 127.0.0.0/8 : /bin/echo rejected %u >>/tmp/x\npermit 127.0.0.0/8 : kill -SEGV $$\n",
    );
    let (code, log) = one(&["-f", &conf], b"bonnie", |_| {});
    assert_eq!(code, 0x5B);
    let l = lines(&log, "command");
    assert_eq!(l.len(), 1, "{log}");
    let head = format!("command client=127.0.0.1:{} rule={conf}:1 exit=", client_port(&log));
    assert!(l[0].contains(&head), "{}\nwanted {head}", l[0]);
    // Debian's /bin/sh is dash; another shell words it otherwise.
    let dash = std::fs::canonicalize("/bin/sh").is_ok_and(|p| p.ends_with("dash"));
    let stderr = if dash {
        "exit=2 stderr=\"/bin/sh: 1: cannot create /tmp/x: Permission denied\""
    } else {
        "/tmp/x: Permission denied\""
    };
    assert!(l[0].ends_with(stderr), "{}\nwanted {stderr}", l[0]);

    let (code, log) = one(&["-f", &conf], b"alice", |_| {});
    assert_eq!(code, 0x5A);
    let l = lines(&log, "command");
    assert_eq!(l.len(), 1, "{log}");
    assert!(
        l[0].ends_with(&format!("rule={conf}:2 signal=SIGSEGV stderr=-")),
        "{}",
        l[0]
    );
}

/// The client port of the connection `log` is about.
fn client_port(log: &str) -> u16 {
    let d = line(log, "decision");
    let at = d.find("client=127.0.0.1:").unwrap() + "client=127.0.0.1:".len();
    d[at..].split(' ').next().unwrap().parse().unwrap()
}

/// Processes now alive running `/bin/sleep ARG`.
fn sleeping(arg: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.len() >= 2 && args[0].ends_with(b"sleep") && args[1] == arg.as_bytes() {
            found.push(pid);
        }
    }
    found
}

/// A command that outlives `--command-timeout`, and one that leaves a
/// process behind in its group, are killed at the limit, logged, and hold
/// socks4d until then.
#[test]
fn a_command_is_killed_at_its_time_limit() {
    let dir = TempDir::shared("commands-limit");
    let (a, b) = (
        format!("31.{}", std::process::id()),
        format!("32.{}", std::process::id()),
    );
    let conf = dir.write(
        "socks4d.conf",
        &format!("deny *=slow 127.0.0.0/8 : /bin/sleep {a}\ndeny 127.0.0.0/8 : /bin/sleep {b} & echo left\n"),
    );
    for (user, arg, line_no) in [(&b"slow"[..], &a, 1), (b"bg", &b, 2)] {
        let t = Instant::now();
        let (code, log) = one(&["-f", &conf, "--command-timeout", "2"], user, |_| {});
        assert_eq!(code, 0x5B);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "socks4d took {took:?}"
        );
        let l = lines(&log, "command");
        assert_eq!(l.len(), 1, "{log}");
        assert!(
            l[0].ends_with(&format!("rule={conf}:{line_no} timeout=2 killed=SIGTERM stderr=-")),
            "{}",
            l[0]
        );
        assert!(sleeping(arg).is_empty(), "sleep {arg} still runs");
    }
}

/// `--listen --max-children 5` and a deny rule whose command sleeps: 40
/// clients at once get 5 handlers, whose commands hold their slots; the
/// other 35 are refused at once and logged. At the time limit the
/// commands are killed, and the next client is served.
#[test]
fn commands_count_against_max_children() {
    let dir = TempDir::shared("commands-cap");
    let arg = format!("20.{}", std::process::id());
    let conf = dir.write("socks4d.conf", &format!("deny 127.0.0.0/8 : /bin/sleep {arg}\n"));
    let (mut guard, proxy) = spawn_listen(&[
        "--ident",
        "off",
        "--log-stderr",
        "-f",
        &conf,
        "--max-children",
        "5",
        "--command-timeout",
        "4",
    ]);
    let log = Log::of(&mut guard.0);
    // wait_listening's probe connection ends without a command.
    thread::sleep(Duration::from_millis(300));
    let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let clients: Vec<_> = (0..40)
        .map(|_| {
            thread::spawn(move || {
                let mut c = connect_to(proxy);
                let _ = c.write_all(&connect_req(dst, b"u"));
                let mut r = [0u8; 8];
                match std::io::Read::read_exact(&mut c, &mut r) {
                    Ok(()) => Some(r[1]),
                    Err(_) => None,
                }
            })
        })
        .collect();
    let answers: Vec<Option<u8>> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    let served = answers.iter().filter(|a| **a == Some(0x5B)).count();
    let closed = answers.iter().filter(|a| a.is_none()).count();
    assert_eq!((served, closed), (5, 35), "{answers:?}");
    // Give refused clients' handlers no chance to hide a process: count
    // while the commands run.
    thread::sleep(Duration::from_millis(500));
    let running = sleeping(&arg);
    assert_eq!(running.len(), 5, "command processes: {running:?}");
    let text = log.wait_for(|t| lines(t, "command").len() >= 5);
    assert_eq!(
        lines(&text, "refused")
            .iter()
            .filter(|l| l.contains("reason=max-children"))
            .count(),
        35,
        "{text}"
    );
    for l in lines(&text, "command") {
        assert!(l.contains(&format!("rule={conf}:1 timeout=4 killed=SIGTERM")), "{l}");
    }
    let start = Instant::now();
    while !sleeping(&arg).is_empty() {
        assert!(start.elapsed() < IO_TIMEOUT, "commands left after their limit");
        thread::sleep(Duration::from_millis(50));
    }
    // The slots are free again.
    let start = Instant::now();
    loop {
        let mut c = connect_to(proxy);
        let _ = c.write_all(&connect_req(dst, b"u"));
        let mut r = [0u8; 8];
        if std::io::Read::read_exact(&mut c, &mut r).is_ok() {
            assert_eq!(r[1], 0x5B);
            break;
        }
        assert!(start.elapsed() < IO_TIMEOUT, "not served after the commands ended");
        thread::sleep(Duration::from_millis(100));
    }
}

/// When no process can be made for a command (here `RLIMIT_NPROC`), the
/// log says that it did not start, and why.
#[test]
fn a_command_that_cannot_start_is_logged() {
    if !require_root() {
        return;
    }
    let dir = TempDir::shared("commands-nproc");
    let conf = dir.write("socks4d.conf", "deny 127.0.0.0/8 : /bin/true\n");
    let (code, log) = one(&["-f", &conf], b"x", |cmd| {
        rlimit(cmd, nix::sys::resource::Resource::RLIMIT_NPROC, 0)
    });
    assert_eq!(code, 0x5B);
    let l = lines(&log, "command");
    assert_eq!(l.len(), 1, "{log}");
    assert!(
        l[0].contains(&format!("rule={conf}:1 failed=\"")) && l[0].contains("Resource temporarily unavailable"),
        "{}",
        l[0]
    );
}

/// The commands socks4d.conf(5) shows as working under the default
/// confinement: logger with `--`, appending under a --writable directory,
/// and an alert file per handler in a --writable spool directory. None
/// writes a `command` line.
#[test]
fn the_man_page_commands_work_under_the_default_confinement() {
    let dir = TempDir::shared("commands-manpage");
    let (log_dir, spool) = (dir.file("log"), dir.file("spool"));
    for d in [&log_dir, &spool] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    }
    let conf = dir.write(
        "socks4d.conf",
        &format!(
            "deny *=bonnie,clyde 0.0.0.0/0 : echo rejected user=%u from=%a >> {log_dir}/rejected\n\
         permit 127.0.0.0/8\n\
         #BAD_ID: echo \"%U on %A claimed %u\" > {spool}/%p\n"
        ),
    );
    let writable = ["--writable", log_dir.as_str(), "--writable", spool.as_str()];
    let mut args = vec!["-f", conf.as_str()];
    args.extend_from_slice(&writable);
    let (code, log) = one(&args, b"bonnie", |_| {});
    assert_eq!(code, 0x5B);
    assert_eq!(
        std::fs::read_to_string(format!("{log_dir}/rejected")).unwrap(),
        "rejected user=bonnie from=127.0.0.1\n"
    );
    assert!(lines(&log, "command").is_empty(), "{log}");

    let Some(identd) = identd_naming("mallory") else { return };
    let dst = echo_dest();
    let mut all = vec!["--ident", "required", "--log-stderr"];
    all.extend_from_slice(&args);
    let mut s = spawn_on_with(socket_pair_from(identd, "127.0.0.1"), &all, &[], |_| {});
    s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5D);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0), "{log}");
    let alerts: Vec<_> = std::fs::read_dir(&spool).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        std::fs::read_to_string(&alerts[0]).unwrap(),
        format!("mallory on {identd} claimed alice\n")
    );
    assert!(lines(&log, "command").is_empty(), "{log}");

    if !require_root() || !require("logger") {
        return;
    }
    let syslog = FakeSyslog::start();
    let conf = dir.write(
        "socks4d.conf",
        "permit 127.0.0.0/8 : logger -t socks4d -- %u@%A to %Z:%S\n",
    );
    let (code, log) = one(&["-f", &conf], b"alice", |cmd| private_dev(cmd, Some(&syslog.path)));
    assert_eq!(code, 0x5A);
    let text = syslog.wait_for(IO_TIMEOUT, |t| t.contains("socks4d:"));
    let record = text.lines().find(|l| l.contains("socks4d:")).unwrap();
    // %S: the port's service name, or its number.
    assert!(record.contains(": alice@localhost to localhost:"), "{record}");
    assert!(lines(&log, "command").is_empty(), "{log}");
}
