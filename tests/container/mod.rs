//! A Debian bookworm container with systemd booted as PID 1, for the tests
//! that run socks4d the way an administrator does: `systemd-nspawn -b` over
//! a root built once by `mkroot.sh` (reused between runs), with a private
//! network (loopback only) and a volatile overlay, so every boot starts
//! from the same clean root. The repository is bind-mounted read-only at
//! its own path, so install.sh and the built binary are there as here.
//!
//! [`start_without_systemd`] starts the same root with no init (`sleep` as
//! PID 1), as a host that does not run systemd.
//!
//! Commands run inside with `nsenter` into all of the container's
//! namespaces; the test's own sockets and the host's clients (curl) run in
//! its network namespace only.
#![allow(dead_code)]

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a boot may take until `systemctl is-system-running` answers.
const BOOT_LIMIT: Duration = Duration::from_secs(90);
/// How long one command inside may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

pub struct Container {
    nspawn: Child,
    /// The container's init, as a host pid.
    pub leader: u32,
    pub root: PathBuf,
    log: PathBuf,
}

/// Where the root is built: under the target directory, reused by later
/// runs and by bench/container.sh.
pub fn root_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("container").join("bookworm")
}

use crate::common::{have, require_root, require_that, ServersOfTest};

/// The root, built first if needed; `None` (a skip, a failure under
/// `CI=true`) where this machine cannot boot a container.
fn ready_root() -> Option<PathBuf> {
    if !require_root() {
        return None;
    }
    for p in ["systemd-nspawn", "debootstrap", "nsenter", "timeout"] {
        let hint = "apt-get install systemd-container debootstrap util-linux";
        if !require_that(have(p), format!("{p} is not installed ({hint})")) {
            return None;
        }
    }
    if !require_that(Path::new("/sys/fs/cgroup").is_dir(), "no /sys/fs/cgroup") {
        return None;
    }
    let root = root_dir();
    let mk = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/container/mkroot.sh");
    let out = Command::new(&mk).arg(&root).stdin(Stdio::null()).output();
    let built = out.as_ref().is_ok_and(|o| o.status.success());
    let why = match &out {
        Ok(o) => format!("building the root failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("{}: {e}", mk.display()),
    };
    require_that(built, why).then_some(root)
}

/// systemd-nspawn over `root` with a private network and a volatile
/// overlay, the repository (and the built binary) bind-mounted read-only;
/// the caller adds `-b` or a command.
fn nspawn(name: &str, root: &Path) -> Command {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_socks4d"));
    let mut cmd = Command::new("systemd-nspawn");
    cmd.args(["-q", "--private-network", "--register=no", "--keep-unit"])
        .arg("--volatile=overlay")
        // systemd-nspawn 252's own filter predates Landlock and answers its
        // calls with ENOSYS, as a kernel without it would.
        .arg("--system-call-filter=landlock_create_ruleset landlock_add_rule landlock_restrict_self")
        .arg(format!("--machine={name}"))
        .arg("--console=pipe")
        .arg("-D")
        .arg(root)
        .arg(format!("--bind-ro={}", top.display()));
    if let Some(dir) = bin.parent().filter(|d| !d.starts_with(top)) {
        cmd.arg(format!("--bind-ro={}", dir.display()));
    }
    cmd
}

/// The same root with no init at all: `sleep` is PID 1, nothing runs
/// that the test does not start, and /run/systemd/system is absent, as on
/// a host without systemd (inetd's). Commands run in it as in a booted
/// one. `None` where this machine cannot (a skip, a failure under
/// `CI=true`).
pub fn start_without_systemd(name: &str) -> Option<Container> {
    start(name, &["/bin/sleep", "infinity"], "sleep", |c| {
        c.sh("true").status.success()
    })
}

/// Boots the container, building its root first if needed. `None` where
/// this machine cannot (a skip, a failure under `CI=true`).
pub fn boot(name: &str) -> Option<Container> {
    // The console goes to the log file (a pty nobody read would fill up
    // and block the container's systemd); no status lines on it.
    start(name, &["-b", "systemd.show_status=no"], "systemd", |c| {
        let state = c.sh("systemctl is-system-running --wait");
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        if state == "degraded" {
            let failed = c.sh_ok("systemctl --failed --no-legend");
            panic!("the container booted degraded: {failed}");
        }
        state == "running"
    })
}

/// systemd-nspawn over the root with `args`, its output in a log file
/// beside the root; the container once its init, the first process named
/// `init`, is there and `ready`.
fn start(name: &str, args: &[&str], init: &str, ready: impl Fn(&Container) -> bool) -> Option<Container> {
    let root = ready_root()?;
    let log = root.with_file_name(format!("{name}.log"));
    let out = fs::File::create(&log).unwrap();
    let nspawn = nspawn(name, &root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn();
    let nspawn = match nspawn {
        Ok(child) => child,
        Err(e) => {
            require_that(false, format!("systemd-nspawn: {e}"));
            return None;
        }
    };
    let mut c = Container {
        nspawn,
        leader: 0,
        root,
        log,
    };
    let start = Instant::now();
    loop {
        let failed = if let Some(status) = c.nspawn.try_wait().unwrap() {
            Some(format!("systemd-nspawn exited ({status})"))
        } else if start.elapsed() > BOOT_LIMIT {
            Some(format!("no {init} ready in the container after {BOOT_LIMIT:?}"))
        } else {
            None
        };
        if let Some(why) = failed {
            let log = fs::read_to_string(&c.log).unwrap_or_default();
            require_that(false, format!("{why}: {log}"));
            return None;
        }
        if let Some(pid) = descendant_named(c.nspawn.id(), init) {
            c.leader = pid;
            if ready(&c) {
                return Some(c);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The container's init: the first descendant of nspawn named `comm`.
fn descendant_named(nspawn: u32, comm: &str) -> Option<u32> {
    let mut queue = vec![nspawn];
    while let Some(p) = queue.pop() {
        let children = fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            if fs::read_to_string(format!("/proc/{c}/comm")).ok()?.trim() == comm {
                return Some(c);
            }
            queue.push(c);
        }
    }
    None
}

impl Container {
    /// Runs `script` with /bin/sh inside the container, as root.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("timeout")
            .arg(COMMAND_LIMIT.as_secs().to_string())
            .args(["nsenter", "-t", &self.leader.to_string(), "-a", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// As [`Container::sh`]; panics unless it succeeds, returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the container: {script}\nexit {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `path` in the container as the host sees it, through its init's
    /// root: a file written there appears in the container (in the
    /// overlay, gone with it), a socket bound there is reachable from it.
    pub fn host_path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.leader))
    }

    /// A host program run in the container's network namespace only (the
    /// host's file system): e.g. the host's curl against the container's
    /// services.
    pub fn net_cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg(COMMAND_LIMIT.as_secs().to_string())
            .args(["nsenter", "-t", &self.leader.to_string(), "-n", program]);
        cmd
    }

    /// Runs `f` on a thread inside the container's network namespace, so
    /// that the sockets it makes (clients, servers) are there. With `fsuid`,
    /// the thread's file-system uid is set first: its sockets then belong
    /// to that user, which is what identd reports.
    pub fn in_net<T: Send + 'static>(&self, fsuid: Option<u32>, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = fs::File::open(format!("/proc/{}/ns/net", self.leader)).expect("open the net namespace");
        // Servers it starts serve until the test ends, not the thread.
        let servers = ServersOfTest::current();
        thread::spawn(move || {
            servers.adopt();
            // SAFETY: setns and setfsuid change only this thread, which
            // ends after `f`.
            unsafe {
                assert_eq!(
                    nix::libc::setns(ns.as_raw_fd(), nix::libc::CLONE_NEWNET),
                    0,
                    "setns: {}",
                    std::io::Error::last_os_error()
                );
                if let Some(uid) = fsuid {
                    nix::libc::setfsuid(uid);
                }
            }
            f()
        })
        .join()
        .expect("the thread in the container's network")
    }

    /// The journal's messages with this syslog identifier, one per line.
    pub fn journal(&self, ident: &str) -> String {
        self.sh_ok(&format!("journalctl --no-pager -q -o cat -t {ident}"))
    }

    /// Waits up to `limit` for `cond` on the journal lines of `ident`;
    /// returns the last lines seen.
    pub fn wait_journal(&self, ident: &str, limit: Duration, cond: impl Fn(&str) -> bool) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let j = self.journal(ident);
            if cond(&j) {
                return Ok(j);
            }
            if start.elapsed() > limit {
                return Err(j);
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM makes nspawn shut the container down; then make sure.
        // SAFETY: signalling our own child.
        unsafe { nix::libc::kill(self.nspawn.id() as i32, nix::libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}
