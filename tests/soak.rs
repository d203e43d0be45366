//! Load: many connections (SOCKS4D_SOAK_CONNECTIONS, default 2000), 64 at
//! a time, random payload sizes, every byte checked; afterwards no lost
//! bytes, no zombies, no socks4d left, and no fd leaked by the --listen
//! parent. As root the lines go to syslog (a /dev/log of the test's own,
//! which then holds every connection's decision and end line); otherwise
//! to stderr, which is /dev/null.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const CONCURRENCY: usize = 64;
/// How long the children of a load get to exit and be reaped.
const REAPED: Duration = Duration::from_secs(20);
const ARGS: &[&str] = &["--ident", "off"];

/// Where the load's log lines go: a fake syslog when the test may give
/// socks4d a /dev/log of its own (root), else stderr to /dev/null.
fn logging() -> (Option<FakeSyslog>, Vec<&'static str>) {
    let mut args = ARGS.to_vec();
    if is_root() {
        (Some(FakeSyslog::start()), args)
    } else {
        args.push("--log-stderr");
        (None, args)
    }
}

fn set_up(syslog: &Option<FakeSyslog>, cmd: &mut std::process::Command) {
    match syslog {
        Some(s) => private_dev(cmd, Some(&s.path)),
        None => {
            cmd.stderr(std::process::Stdio::null());
        }
    }
}

/// Every one of the `n` exchanges was logged: a granted decision line
/// and an end line with its bytes.
fn check_audit(syslog: &Option<FakeSyslog>, n: usize) {
    let Some(s) = syslog else { return };
    let count = |text: &str, what: &str| text.lines().filter(|l| l.contains(what)).count();
    let text = s.wait_for(Duration::from_secs(20), |t| {
        count(t, "reason=granted") >= n && count(t, " relay=") >= n
    });
    assert_eq!(count(&text, "reason=granted"), n);
}

fn connections() -> usize {
    std::env::var("SOCKS4D_SOAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Runs `n` exchanges through `proxy`; returns the bytes sent and the
/// bytes that came back intact.
fn run_load(proxy: SocketAddr, n: usize) -> (u64, u64) {
    let echo = echo_server();
    let sent = Arc::new(AtomicU64::new(0));
    let good = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (sent, good) = (sent.clone(), good.clone());
            thread::spawn(move || {
                for i in (w..n).step_by(CONCURRENCY) {
                    let seed = i as u64 * 7919 + 1;
                    // 0 to 256 KiB, skewed small.
                    let size = (payload(4, seed).iter().map(|&b| b as usize).product::<usize>()) % (256 << 10);
                    let data = payload(size, seed);
                    let mut c = connect_to(proxy);
                    c.write_all(&connect_req(echo, b"")).unwrap();
                    let r = read_reply(&mut c);
                    assert_eq!(r[1], 0x5A, "connection {i}");
                    let mut writer = c.try_clone().unwrap();
                    let d2 = data.clone();
                    let t = thread::spawn(move || {
                        writer.write_all(&d2).unwrap();
                        writer.shutdown(Shutdown::Write).unwrap();
                    });
                    let back = read_all(&mut c);
                    t.join().unwrap();
                    sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if checksum(&back) == checksum(&data) && back.len() == data.len() {
                        good.fetch_add(back.len() as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    (sent.load(Ordering::Relaxed), good.load(Ordering::Relaxed))
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// What `pid`'s descriptors point at, for a failure message.
fn fd_list(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            format!(
                "{}: {:?}",
                e.file_name().to_string_lossy(),
                std::fs::read_link(e.path()).ok()
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn soak_listen_mode() {
    if left_out(Slow::Soak) {
        return;
    }
    let (syslog, mut args) = logging();
    // The whole load comes from one address, 64 at a time.
    args.extend(["--max-per-source", "1000"]);
    let (guard, proxy) = spawn_listen_with(&args, |c| set_up(&syslog, c));
    let pid = guard.0.id();
    // The port accepts as soon as it is bound, before the parent has set
    // up the rest (signalfd, reserve descriptor): one whole exchange first,
    // so that the baseline is taken in the serving loop, once its child
    // (and spawn_listen's probe child) have gone.
    run_load(proxy, 1);
    wait_all_reaped(pid, REAPED);
    let fds_before = fd_count(pid);
    let list_before = fd_list(pid);
    let n = connections();
    let t = Instant::now();
    let (sent, good) = run_load(proxy, n);
    eprintln!("listen mode: {n} connections, {sent} bytes each way, {:?}", t.elapsed());
    assert_eq!(good, sent, "lost or corrupted bytes");
    // No child left, alive or unreaped.
    wait_all_reaped(pid, REAPED);
    assert_eq!(
        fd_count(pid),
        fds_before,
        "the --listen parent leaked fds: before {list_before:#?}, after {:#?}",
        fd_list(pid)
    );
    check_audit(&syslog, n + 1);
}

#[test]
fn soak_socket_activate_inetd() {
    if left_out(Slow::Soak) || !require("systemd-socket-activate") {
        return;
    }
    let (syslog, args) = logging();
    let (guard, proxy) = spawn_activated_with(&args, |c| set_up(&syslog, c));
    let pid = guard.0.id();
    let n = connections();
    let t = Instant::now();
    let (sent, good) = run_load(proxy, n);
    eprintln!(
        "socket activation: {n} connections, {sent} bytes each way, {:?}",
        t.elapsed()
    );
    assert_eq!(good, sent, "lost or corrupted bytes");
    // No socks4d left, alive or unreaped.
    wait_all_reaped(pid, REAPED);
    check_audit(&syslog, n);
}

#[test]
fn payload_sizes_vary() {
    let sizes: Vec<usize> = (0..50u64)
        .map(|i| payload(4, i * 7919 + 1).iter().map(|&b| b as usize).product::<usize>() % (256 << 10))
        .collect();
    assert!(
        sizes.iter().any(|&s| s < 4096) && sizes.iter().any(|&s| s > 65536),
        "{sizes:?}"
    );
}
