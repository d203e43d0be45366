//! The outside programs the interop groups drive (a command with a time
//! limit, curl, the real oidentd), a burst of a thousand clients, and the
//! confinement probe.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::net::{connect_from, connect_req, wait_listening, IDENT_PORT};
use super::spawn::Guard;
use super::IO_TIMEOUT;

/// Runs `cmd` with `input` on its stdin, within `limit`; kills it and
/// panics if it takes longer. Returns its status and output.
pub fn run_with_input(cmd: &mut Command, input: Vec<u8>, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let mut guard = Guard(child);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            drop(guard);
            panic!("{cmd:?} still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    // The process has been reaped; the guard's kill now only reaches any
    // child it left behind in its process group.
    drop(guard);
    writer.join().unwrap();
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Fetches `url` with curl through the SOCKS proxy `proxy`, `mode` being
/// `--socks4` or `--socks4a`; panics unless curl succeeds.
pub fn curl_via(mode: &str, proxy: SocketAddr, url: &str) -> Vec<u8> {
    let out = run_with_input(
        Command::new("curl").args(["-sS", "--max-time", "20", mode, &proxy.to_string(), url]),
        Vec::new(),
        IO_TIMEOUT + Duration::from_secs(5),
    );
    assert!(
        out.status.success(),
        "curl {mode} {url}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The real oidentd on port 113 of `ip`, in the foreground, until
/// dropped; once it listens. Needs root (port 113).
pub fn oidentd(ip: Ipv4Addr) -> Guard {
    let child = Command::new("oidentd")
        .args(["-i", "-a", &ip.to_string(), "-p", &IDENT_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start oidentd");
    let guard = Guard(child);
    wait_listening(SocketAddr::new(ip.into(), IDENT_PORT));
    guard
}

/// Where the connections of a [`burst`] come from.
#[derive(Clone, Copy, Debug)]
pub enum Burst {
    /// All from 127.0.1.1.
    OneAddress,
    /// 10 from each of 127.0.1.2 to 127.0.1.101.
    ManyAddresses,
}

/// What a [`burst`] should find.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Held open: exactly this many served, the rest closed at once.
    Served(usize),
    /// Each closed after its reply: every one served.
    All,
}

/// What a [`burst`] found.
pub struct BurstOutcome {
    pub served: usize,
    pub total: usize,
    pub slowest_refusal: Duration,
    pub took: Duration,
}

impl BurstOutcome {
    /// Asserts `expect`, and that every refusal came within 20 s.
    pub fn check(&self, kind: Burst, expect: Expect) {
        eprintln!(
            "burst {kind:?}: {} of {} served, slowest refusal {:?}, {:?} in all",
            self.served, self.total, self.slowest_refusal, self.took
        );
        match expect {
            Expect::Served(n) => assert_eq!(self.served, n, "{kind:?}: served"),
            Expect::All => assert_eq!(self.served, self.total, "{kind:?}: served"),
        }
        assert!(
            self.slowest_refusal < Duration::from_secs(20),
            "{kind:?}: a refusal took {:?}",
            self.slowest_refusal
        );
    }
}

/// 1000 SOCKS4 CONNECTs to `dest` through `proxy` within about 2 s, from
/// 50 threads. With `Expect::Served`, each served connection is kept open
/// until the burst is over; otherwise each is closed after its reply. A
/// connection must get a reply or be closed within the test timeout; one
/// that gets neither fails the test.
pub fn burst(proxy: SocketAddr, dest: SocketAddr, kind: Burst, expect: Expect) -> BurstOutcome {
    const TOTAL: usize = 1000;
    const THREADS: usize = 50;
    let keep = matches!(expect, Expect::Served(_));
    let started = Instant::now();
    let per = TOTAL / THREADS;
    let spacing = Duration::from_secs(2) / per as u32;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut kept = Vec::new();
                let mut out = Vec::new();
                for i in 0..per {
                    let n = t * per + i;
                    let src = match kind {
                        Burst::OneAddress => Ipv4Addr::new(127, 0, 1, 1),
                        Burst::ManyAddresses => Ipv4Addr::new(127, 0, 1, 2 + (n % 100) as u8),
                    };
                    let t0 = Instant::now();
                    let mut sock = connect_from(src, proxy);
                    let served = sock.write_all(&connect_req(dest, b"")).is_ok() && {
                        let mut r = [0u8; 8];
                        match sock.read_exact(&mut r) {
                            Ok(()) => r[1] == 0x5A,
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut =>
                            {
                                panic!("connection {n} got neither a reply nor a close in {IO_TIMEOUT:?}")
                            }
                            Err(_) => false,
                        }
                    };
                    out.push((served, t0.elapsed()));
                    if served && keep {
                        kept.push(sock);
                    }
                    thread::sleep(spacing.saturating_sub(t0.elapsed()));
                }
                (out, kept)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut kept = Vec::new();
    for h in handles {
        let (o, k) = h.join().unwrap();
        all.extend(o);
        kept.extend(k);
    }
    drop(kept);
    BurstOutcome {
        served: all.iter().filter(|r| r.0).count(),
        total: all.len(),
        slowest_refusal: all.iter().filter(|r| !r.0).map(|r| r.1).max().unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// What the confinement probe must find denied (EPERM) wherever the
/// system-call filter applies.
pub const SECCOMP_DENIED: &[&str] = &[
    "socket_raw",
    "socket_ping",
    "socket_netlink",
    "socket_packet",
    "setuid_root",
    "unshare_user",
    "clone_newuser",
    "mount",
    "chroot",
    "mmap_wx",
    "mprotect_x",
    "io_uring_setup",
    "keyctl",
    "memfd_create",
    // Changes of modes, owners, times and file flags; the probe aims at a
    // file of its own outside the allowed directories, or at a path that
    // does not exist (ENOENT or EBADF without the filter).
    "chmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "lchown",
    "fchownat",
    "utimensat",
    "utimes",
    "utime",
    "futimesat",
    "fchmod",
    "fchown",
    "futimens",
    "setflags",
];

/// The probe: target/<profile>/examples/confine-probe, next to this
/// test binary's deps directory. `cargo test` builds it; a run of the
/// suite alone (`cargo test --test suite`) does not, so it is built here
/// when missing or older than its source.
pub fn probe() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let probe = profile_dir.join("examples").join("confine-probe");
    BUILT.call_once(|| {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/confine_probe.rs");
        if modified(&probe).is_none() || modified(&probe) < modified(&source) {
            build_probe(profile_dir);
        }
    });
    assert!(probe.exists(), "no probe at {}", probe.display());
    probe
}

fn build_probe(profile_dir: &Path) {
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--example", "confine-probe"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        cmd.arg("--release");
    }
    // A test built with --target (the static musl build) sits under
    // target/<triple>/<profile>: its probe must be built for it there.
    let triple = env!("SOCKS4D_TARGET");
    if profile_dir
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == triple)
    {
        cmd.args(["--target", triple]);
    }
    let out = cmd.output().expect("run cargo build --example confine-probe");
    assert!(
        out.status.success(),
        "cargo build --example confine-probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bare git repository with one commit on `main`, under `dir/r.git`,
/// ready for the dumb HTTP protocol and git daemon: the commit.
pub fn git_repo(dir: &Path) -> String {
    let git = |args: &[&str], cwd: &Path| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .current_dir(cwd)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&["init", "-q", "--bare", "r.git"], dir);
    git(&["init", "-q"], &work);
    git(&["commit", "-q", "--allow-empty", "-m", "one"], &work);
    git(&["push", "-q", "../r.git", "HEAD:refs/heads/main"], &work);
    git(&["update-server-info"], &dir.join("r.git"));
    std::fs::write(dir.join("r.git/git-daemon-export-ok"), "").unwrap();
    git(&["rev-parse", "HEAD"], &work).trim().to_string()
}

/// git daemon on a free port of 127.0.0.1 serving the repositories under
/// `dir` (see [`git_repo`]): the daemon and its address.
pub fn git_daemon(dir: &Path) -> (Guard, SocketAddr) {
    let port = super::net::free_port();
    let daemon = Command::new("git")
        .args(["daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", dir.display()))
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start git daemon");
    let guard = Guard(daemon);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr);
    (guard, addr)
}

/// A script at `path` for git's proxy command: socat connects through the
/// SOCKS4a proxy at `proxy` to the host and port git gives it (the name
/// sent, unresolved).
pub fn socks4a_proxy_command(path: &Path, proxy: SocketAddr) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        path,
        format!(
            "#!/bin/sh\nexec socat - \"SOCKS4A:{}:$1:$2,socksport={}\"\n",
            proxy.ip(),
            proxy.port()
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
