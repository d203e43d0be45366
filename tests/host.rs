//! Faults of the host around socks4d, each provoked for real: a logger
//! that is stuck, restarted or missing (a private /dev with a /dev/log of
//! the test's own), descriptor, memory, pipe and process limits, a name
//! server that never answers. Each case checks the reply, the log lines,
//! and that the process ends within its bound.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// The log timeout the logger cases use.
const LOG_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack on top of a bound: two vCPUs shared with other work.
const SLACK: Duration = Duration::from_secs(6);

fn syslog_args() -> Vec<&'static str> {
    vec!["--ident", "off", "--log-timeout", "2"]
}

/// Reads whatever the destination gets until EOF or an error.
fn drain(mut s: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn a_stuck_logger_turns_a_grant_into_5b_within_the_log_timeout_and_recovery_brings_service_back() {
    if !require_root() {
        return;
    }
    let syslog = FakeSyslog::start();
    syslog.stall();
    let (tx, rx) = std::sync::mpsc::channel();
    let dst = dest(move |s| tx.send(drain(s)).unwrap());
    let mut s = spawn_on_with(socket_pair(), &syslog_args(), &[], |c| {
        private_dev(c, Some(&syslog.path))
    });
    let t = Instant::now();
    s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
    s.client.write_all(b"must not reach the destination").unwrap();
    let reply = read_reply(&mut s.client);
    let waited = t.elapsed();
    assert_eq!(reply[1], 0x5B, "no relay without its decision line");
    assert!(waited < LOG_TIMEOUT + SLACK, "{waited:?}");
    let status = wait_exit(&mut s.child, LOG_TIMEOUT + SLACK);
    assert_eq!(status.code(), Some(0));
    assert!(
        t.elapsed() >= LOG_TIMEOUT - Duration::from_millis(200),
        "it gave up before the bound"
    );
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), b"", "the destination got bytes");

    // The logger reads again: the next connection is served and logged.
    syslog.resume();
    let dst = echo_dest();
    let mut s = spawn_on_with(socket_pair(), &syslog_args(), &[], |c| {
        private_dev(c, Some(&syslog.path))
    });
    s.client.write_all(&connect_req(dst.addr, b"bob")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    s.client.write_all(b"ping").unwrap();
    s.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s.client), b"ping");
    assert_eq!(wait_exit(&mut s.child, EXIT).code(), Some(0));
    let log = syslog.wait_for(IO_TIMEOUT, |t| t.contains("]: end ") && t.contains("user=\"bob\""));
    assert!(line(&log, "decision").contains("user=\"bob\"") || log.contains("user=\"bob\" cmd=connect"));
    assert!(log.contains("reason=granted"), "{log}");
    // syslog(3) format: priority, no hostname, ident and pid.
    assert!(
        log.lines().any(|l| l.starts_with("<30>") && l.contains(" socks4d[")),
        "{log}"
    );
}

#[test]
fn a_full_stderr_pipe_turns_a_grant_into_5b_within_the_log_timeout() {
    // --log-stderr into a pipe nobody reads, filled before socks4d starts.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
    while nix::unistd::write(&write_end, &[b'x'; 4096]).is_ok() {}
    nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty())).unwrap();
    let dst = echo_dest();
    let mut s = spawn_on_with(
        socket_pair(),
        &["--ident", "off", "--log-stderr", "--log-timeout", "2"],
        &[],
        |c| {
            c.stderr(std::process::Stdio::from(write_end));
        },
    );
    let t = Instant::now();
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5B);
    assert!(t.elapsed() < LOG_TIMEOUT + SLACK, "{:?}", t.elapsed());
    assert_eq!(wait_exit(&mut s.child, LOG_TIMEOUT + SLACK).code(), Some(0));
    drop(read_end);
}

#[test]
fn without_dev_log_every_request_is_refused_at_once() {
    if !require_root() {
        return;
    }
    let dst = echo_dest();
    let mut s = spawn_on_with(socket_pair(), &syslog_args(), &[], |c| private_dev(c, None));
    let t = Instant::now();
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5B);
    // At once: nothing to wait for, so well inside the log timeout.
    assert!(t.elapsed() < LOG_TIMEOUT, "{:?}", t.elapsed());
    assert_eq!(wait_exit(&mut s.child, EXIT).code(), Some(0));
}

#[test]
fn an_end_line_the_logger_does_not_take_is_given_up_and_the_process_exits() {
    if !require_root() {
        return;
    }
    let syslog = FakeSyslog::start();
    let dst = echo_dest();
    let mut s = spawn_on_with(socket_pair(), &syslog_args(), &[], |c| {
        private_dev(c, Some(&syslog.path))
    });
    s.client.write_all(&connect_req(dst.addr, b"carol")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    syslog.wait_for(IO_TIMEOUT, |t| t.contains("reason=granted"));
    // The logger gets stuck during the relay.
    syslog.stall();
    let data = payload(1 << 20, 14);
    let back = send_and_read(&mut s.client, &data);
    assert_eq!(checksum(&back), checksum(&data), "the relay itself is not held up");
    let t = Instant::now();
    let status = wait_exit(&mut s.child, LOG_TIMEOUT + SLACK);
    assert_eq!(status.code(), Some(0));
    assert!(t.elapsed() < LOG_TIMEOUT + SLACK);
    syslog.resume();
    thread::sleep(Duration::from_millis(300));
    assert!(!syslog.text().contains("]: end "), "{}", syslog.text());
}

#[test]
fn a_restarted_logger_gets_the_next_lines() {
    if !require_root() {
        return;
    }
    let syslog = FakeSyslog::start();
    let mut args = syslog_args();
    args.push("--max-children");
    args.push("8");
    let (_guard, proxy) = spawn_listen_with(&args, |c| private_dev(c, Some(&syslog.path)));
    let echo = echo_server();
    for user in ["before", "after"] {
        if user == "after" {
            // The socket the --listen parent (and so each child) holds now
            // leads nowhere: ECONNREFUSED, then a new connection.
            syslog.restart();
        }
        let mut c = connect_to(proxy);
        c.write_all(&connect_req(echo, user.as_bytes())).unwrap();
        assert_eq!(read_reply(&mut c)[1], 0x5A, "{user}");
        c.shutdown(Shutdown::Write).unwrap();
        read_all(&mut c);
        let tag = format!("user=\"{user}\"");
        syslog.wait_for(IO_TIMEOUT, |t| t.contains(&tag) && t.contains("reason=granted"));
    }
}

#[test]
fn listen_mode_with_a_stuck_logger_leaves_no_handler_behind() {
    if !require_root() {
        return;
    }
    const CLIENTS: usize = 20;
    let syslog = FakeSyslog::start();
    let (guard, proxy) = spawn_listen_with(&syslog_args(), |c| private_dev(c, Some(&syslog.path)));
    let parent = guard.0.id();
    let echo = echo_server();
    syslog.stall();
    let t = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let mut c = connect_to(proxy);
                c.write_all(&connect_req(echo, format!("u{i}").as_bytes())).unwrap();
                let r = read_reply(&mut c);
                (r[1], Instant::now())
            })
        })
        .collect();
    for c in clients {
        let (code, _) = c.join().unwrap();
        assert_eq!(code, 0x5B);
    }
    // Every handler gives up its lines within the bound and exits.
    let deadline = Instant::now() + LOG_TIMEOUT * 2 + SLACK;
    while !live_children(parent).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} handlers still alive {:?} after the clients were answered",
            live_children(parent).len(),
            t.elapsed()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // And the listener still serves once the logger reads again.
    syslog.resume();
    let mut c = connect_to(proxy);
    c.write_all(&connect_req(echo, b"later")).unwrap();
    assert_eq!(read_reply(&mut c)[1], 0x5A);
}

/// The lowest descriptor number `pid` has free: the next one it would
/// get, and so the smallest RLIMIT_NOFILE that leaves it none.
fn lowest_free_fd(pid: u32) -> u64 {
    let open: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u64>().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

/// How a log line ends an EMFILE error from std, in either build: the
/// words are the C library's ("Too many open files" from glibc, "No file
/// descriptors available" from musl), the number is the kernel's.
const EMFILE_TEXT: &str = "(os error 24)";

/// Whether `log` names an EMFILE error, from std (`(os error 24)`) or
/// from nix (`EMFILE: ...`).
fn names_emfile(log: &str) -> bool {
    log.contains(EMFILE_TEXT) || log.contains("EMFILE")
}

#[test]
fn a_handler_short_of_descriptors_copies_or_refuses() {
    use nix::sys::resource::Resource;
    // fds 0 (the client), 1 (/dev/null), 2 (the stderr pipe) and 3
    // (socks4d's own non-blocking handle on it) are taken at the start,
    // and start-up needs one more for a moment (the rules file, the
    // password file); the confinement needs two more for a moment (its
    // Landlock ruleset and one path at a time). With 6 the destination
    // socket fits and the pipes do not: the relay copies. With 5 the
    // confinement cannot be made: a refusal rather than a handler less
    // confined than the host allows. With 4 start-up fails: a refusal, a
    // log line, exit status 1.
    let dst = echo_dest();
    let mut s = spawn_on_with(socket_pair(), &["--ident", "off", "--log-stderr"], &[], |c| {
        close_inherited(c);
        rlimit(c, Resource::RLIMIT_NOFILE, 6)
    });
    s.client.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    let data = payload(4 << 20, 5);
    assert_eq!(checksum(&send_and_read(&mut s.client, &data)), checksum(&data));
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(line(&log, "end").contains("end=client-eof relay=copy"), "{log}");

    let mut s = spawn_on_with(socket_pair(), &["--ident", "off", "--log-stderr"], &[], |c| {
        close_inherited(c);
        rlimit(c, Resource::RLIMIT_NOFILE, 5)
    });
    s.client.write_all(&connect_req(closed_port(), b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5B);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("confine failed=\"landlock: ") && log.contains(EMFILE_TEXT),
        "{log}"
    );

    let mut s = spawn_on_with(socket_pair(), &["--ident", "off", "--log-stderr"], &[], |c| {
        close_inherited(c);
        rlimit(c, Resource::RLIMIT_NOFILE, 4)
    });
    s.client.write_all(&connect_req(closed_port(), b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5B);
    let (status, log) = finish(&mut s, EXIT);
    assert!(names_emfile(&log), "{log}");
    // As root the privilege drop cannot read the password file: a set-up
    // error. Otherwise the rules file cannot be read: no service.
    if is_root() {
        assert_eq!(status.code(), Some(1), "{log}");
    } else {
        assert!(line(&log, "decision").contains("reason=config-error"), "{log}");
    }
}

#[test]
fn listen_at_its_descriptor_limit_refuses_with_5b_and_does_not_spin() {
    // The descriptors a --listen parent holds once it serves; a second
    // parent started with exactly that many has none left for accept(2).
    // (Lowering the limit of the running parent from outside needs
    // CAP_SYS_RESOURCE, which a test may not have.)
    let limit = {
        let (mut probe, _) = spawn_listen_with(&["--ident", "off", "--log-stderr"], close_inherited);
        let pid = probe.0.id();
        let log = Log::of(&mut probe.0);
        log.wait_contains("listening");
        // Once the connection spawn_listen made to see it listen is gone.
        log.wait_contains("]: end ");
        wait_no_children(pid, IO_TIMEOUT);
        thread::sleep(Duration::from_millis(100));
        lowest_free_fd(pid)
    };
    let (mut guard, proxy) = spawn_listen_with(&["--ident", "off", "--log-stderr"], |c| {
        close_inherited(c);
        rlimit(c, nix::sys::resource::Resource::RLIMIT_NOFILE, limit)
    });
    let pid = guard.0.id();
    let log = Log::of(&mut guard.0);
    log.wait_contains("listening");
    let echo = echo_server();
    let cpu_before = cpu_ticks(pid);
    for i in 0..5 {
        let mut c = connect_to(proxy);
        c.write_all(&connect_req(echo, b"")).unwrap();
        assert_eq!(read_reply(&mut c)[1], 0x5B, "connection {i}");
        assert!(closed(&mut c));
    }
    let text = log.wait_contains("reason=fd-limit");
    assert!(
        text.contains(&format!("{EMFILE_TEXT}; RLIMIT_NOFILE is {limit}")),
        "{text}"
    );
    // A connection left waiting makes no spin either.
    let _idle = connect_to(proxy);
    thread::sleep(Duration::from_secs(2));
    let cpu = cpu_ticks(pid) - cpu_before;
    assert!(cpu < 50, "{cpu} ticks of CPU at the descriptor limit");
    // Still alive, and it stops on SIGTERM as usual.
    assert!(guard.0.try_wait().unwrap().is_none(), "the listener died");
    // SAFETY: kill(2) on the process this test started.
    unsafe { nix::libc::kill(pid as i32, nix::libc::SIGTERM) };
    assert_eq!(wait_exit(&mut guard.0, EXIT).code(), Some(0));
}

#[test]
fn listen_when_fork_fails_refuses_logs_and_keeps_serving() {
    if !require_root() {
        return;
    }
    // RLIMIT_NPROC 2 for the user socks4d drops to: the parent and one
    // child. A user of its own (nothing here runs as games) keeps other
    // tests' handlers out of the count.
    let (mut guard, proxy) = spawn_listen_with(&["--ident", "off", "--log-stderr", "--user", "games"], |c| {
        rlimit(c, nix::sys::resource::Resource::RLIMIT_NPROC, 2)
    });
    let pid = guard.0.id();
    let log = Log::of(&mut guard.0);
    // The connection spawn_listen made to see it listen has been served
    // and its handler is gone.
    log.wait_contains("]: end ");
    wait_no_children(pid, IO_TIMEOUT);
    let echo = echo_server();
    // One relay holds the one child allowed.
    let mut held = connect_to(proxy);
    held.write_all(&connect_req(echo, b"held")).unwrap();
    assert_eq!(read_reply(&mut held)[1], 0x5A);
    let cpu_before = cpu_ticks(pid);
    for i in 0..3 {
        let mut c = connect_to(proxy);
        c.write_all(&connect_req(echo, b"")).unwrap();
        assert_eq!(read_reply(&mut c)[1], 0x5B, "connection {i}");
        assert!(closed(&mut c));
    }
    let text = log.wait_contains("reason=fork-failed");
    assert!(text.contains("detail=\"EAGAIN"), "{text}");
    assert!(cpu_ticks(pid) - cpu_before < 50);
    // The child ends; the next connection is served.
    held.shutdown(Shutdown::Write).unwrap();
    read_all(&mut held);
    wait_no_children(pid, IO_TIMEOUT);
    let mut c = connect_to(proxy);
    c.write_all(&connect_req(echo, b"")).unwrap();
    assert_eq!(read_reply(&mut c)[1], 0x5A);
    assert!(guard.0.try_wait().unwrap().is_none(), "the listener died");
}

#[test]
fn a_relay_whose_process_is_killed_resets_both_peers_and_the_parent_says_so() {
    // What the OOM killer does to a handler over its cgroup's memory.max.
    let (mut guard, proxy) = spawn_listen(&["--ident", "off", "--log-stderr"]);
    let pid = guard.0.id();
    let log = Log::of(&mut guard.0);
    // The connection spawn_listen made to see it listen is served and gone.
    log.wait_contains("]: end ");
    wait_no_children(pid, IO_TIMEOUT);
    let (tx, rx) = std::sync::mpsc::channel();
    let dst = dest(move |mut s| {
        // Send part of a download, then read until the proxy goes away.
        s.write_all(&payload(100_000, 9)).unwrap();
        let mut sink = Vec::new();
        tx.send(s.read_to_end(&mut sink).map(|_| ()).map_err(|e| e.kind()))
            .unwrap();
    });
    let mut c = connect_to(proxy);
    c.write_all(&connect_req(dst.addr, b"")).unwrap();
    assert_eq!(read_reply(&mut c)[1], 0x5A);
    let mut first = vec![0u8; 100_000];
    c.read_exact(&mut first).unwrap();
    let children = live_children(pid);
    assert_eq!(children.len(), 1, "{children:?}");
    // SAFETY: kill(2) on the handler this test started.
    unsafe { nix::libc::kill(children[0] as i32, nix::libc::SIGKILL) };
    let mut rest = Vec::new();
    let r = c.read_to_end(&mut rest);
    assert!(r.is_err(), "the client got a clean end of stream from a killed relay");
    let at_dest = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(at_dest.is_err(), "the destination got a clean end of stream");
    let text = log.wait_contains("]: killed ");
    assert!(text.contains(&format!("pid={} signal=SIGKILL", children[0])), "{text}");
}

/// Relays `len` bytes each way through a granted connection and checks
/// them; returns the process's log.
fn relay_and_check(mut s: Server, dst: std::net::SocketAddr, len: usize) -> String {
    s.client.write_all(&connect_req(dst, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5A);
    let data = payload(len, len as u64);
    let back = send_and_read(&mut s.client, &data);
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the relayed bytes differ");
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0), "{log}");
    log
}

#[test]
fn over_the_pipe_quota_relays_copy_byte_for_byte_and_say_so() {
    if !require_root() {
        return;
    }
    let soft: u64 = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if !require_that(soft != 0, "fs.pipe-user-pages-soft is 0 (no quota to exhaust)") {
        return;
    }
    // The user's pipes, all but the 2 x 64 pages of one relay, held by a
    // process of that user (news: nothing else here runs as it).
    const USER: &str = "news";
    let page = 4096u64;
    let mut left = soft - 2 * (relay_pipe_pages());
    let mut sizes = Vec::new();
    while left > 0 {
        let pages = [256u64, 128, 64, 32, 16, 8, 4, 2, 1]
            .into_iter()
            .find(|p| *p <= left)
            .unwrap();
        sizes.push((pages * page) as i32);
        left -= pages;
    }
    let mut hog = std::process::Command::new("sleep");
    hog.arg("120").stdin(std::process::Stdio::null());
    run_as(&mut hog, USER);
    // SAFETY: pipe2 and fcntl are async-signal-safe; `sizes` was made
    // before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut hog, move || {
            for &size in &sizes {
                let mut fds = [0; 2];
                if nix::libc::pipe2(fds.as_mut_ptr(), 0) != 0
                    || nix::libc::fcntl(fds[1], nix::libc::F_SETPIPE_SZ, size) < size
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let _hog = Guard(hog.spawn().expect("hold the pipe quota"));
    let args = ["--ident", "off", "--log-stderr", "--user", USER];

    // The last relay that fits: splice, held open.
    let held_dst = echo_dest();
    let mut held = spawn_stdin(&args);
    held.client.write_all(&connect_req(held_dst.addr, b"")).unwrap();
    assert_eq!(read_reply(&mut held.client)[1], 0x5A);

    // Over the quota: small pipes, so the relay copies, byte for byte.
    let log = relay_and_check(spawn_stdin(&args), echo_dest().addr, 8 << 20);
    assert!(line(&log, "end").contains("end=client-eof relay=copy"), "{log}");

    held.client.shutdown(Shutdown::Write).unwrap();
    read_all(&mut held.client);
    let (_, log) = finish(&mut held, EXIT);
    assert!(line(&log, "end").contains("relay=splice"), "{log}");
}

/// The pages of one relay pipe: socks4d's PIPE_SIZE.
fn relay_pipe_pages() -> u64 {
    socks4d::relay::PIPE_SIZE as u64 / 4096
}

#[test]
fn a_stalled_name_server_gets_5b_within_the_connect_timeout_and_the_handler_exits() {
    if !require_root() || !require("ip") {
        return;
    }
    // A network namespace of this thread's own, with loopback up and a
    // name server on 127.0.0.1:53 that takes queries and never answers;
    // socks4d also gets a mount namespace whose /etc/resolv.conf names it
    // and lets the resolver wait 30 s.
    let dir = TempDir::new("resolv");
    let conf = dir.path().join("resolv.conf");
    std::fs::write(&conf, "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n").unwrap();
    let result = in_own_network(move || {
        let _black_hole = std::net::UdpSocket::bind("127.0.0.1:53").unwrap();
        let mut s = spawn_on_with(
            socket_pair(),
            &["--ident", "off", "--log-stderr", "--connect-timeout", "2"],
            &[],
            |c| bind_over(c, &conf, "/etc/resolv.conf"),
        );
        let t = Instant::now();
        s.client.write_all(&connect_4a("stall.example.org", 80, b"")).unwrap();
        let reply = read_reply(&mut s.client);
        let answered = t.elapsed();
        let status = wait_exit(&mut s.child, Duration::from_secs(2) + SLACK);
        let exited = t.elapsed();
        (reply, answered, exited, status, stderr_of(&mut s.child))
    });
    let (reply, answered, exited, status, log) = result;
    assert_eq!(reply[1], 0x5B, "{log}");
    assert!(
        answered >= Duration::from_millis(1900) && answered < Duration::from_secs(2) + SLACK,
        "{answered:?}"
    );
    // The lookup is still waiting on its thread; the process does not.
    assert!(exited < Duration::from_secs(2) + SLACK, "{exited:?}");
    assert_eq!(status.code(), Some(0));
    let d = line(&log, "decision");
    assert!(
        d.contains("reason=resolve-failed") && d.contains("name resolution timed out"),
        "{log}"
    );
}

/// VmSize of `pid`, in bytes.
fn vm_size(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Waits until `pid` has entered its seccomp filter: confined, and
/// waiting for the request.
fn wait_confined(pid: u32) {
    let start = Instant::now();
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.lines().any(|l| l.starts_with("Seccomp:") && l.ends_with('2')) {
            thread::sleep(Duration::from_millis(100));
            return;
        }
        assert!(start.elapsed() < IO_TIMEOUT, "{pid} never confined itself");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Lowers `pid`'s RLIMIT_AS to what it has mapped now plus `extra` bytes,
/// with prlimit(1) run as `user`, the user it runs as.
fn squeeze_address_space(pid: u32, user: &str, extra: u64) {
    let limit = vm_size(pid) + extra;
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--as={limit}:{limit}"));
    run_as(&mut cmd, user);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn under_a_tight_address_space_limit_a_relay_splices_or_is_refused_but_never_cut() {
    if !require_root() || !require("prlimit") {
        return;
    }
    // socks4d started as uucp (not root, so it stays uucp), so that a
    // prlimit of the same user may lower its limit once it waits for the
    // request: no room left to map even a 128 KiB buffer.
    const USER: &str = "uucp";
    let args = ["--ident", "off", "--log-stderr"];
    let s = spawn_on_with(socket_pair(), &args, &[], |c| {
        run_as(c, USER);
    });
    wait_confined(s.child.id());
    squeeze_address_space(s.child.id(), USER, 64 << 10);
    // Splicing needs no memory of its own: the relay runs whole.
    let log = relay_and_check(s, echo_dest().addr, 4 << 20);
    assert!(line(&log, "end").contains("end=client-eof relay=splice"), "{log}");

    // Out of descriptors for pipes too, the relay would need buffers: it
    // is refused before the grant rather than failed after it.
    let mut s = spawn_on_with(socket_pair(), &args, &[], |c| {
        run_as(c, USER);
        rlimit(c, nix::sys::resource::Resource::RLIMIT_NOFILE, 5);
    });
    wait_confined(s.child.id());
    squeeze_address_space(s.child.id(), USER, 64 << 10);
    s.client.write_all(&connect_req(echo_dest().addr, b"")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5B);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0), "{log}");
    let d = line(&log, "decision");
    assert!(d.contains("reply=5b reason=no-memory"), "{log}");
}
