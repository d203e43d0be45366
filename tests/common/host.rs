//! The host around a process: users, resource limits, namespaces with a
//! /dev or an /etc/resolv.conf of the test's own, and what /proc says of
//! a process (its children, its CPU).
//!
//! Everything here changes a child before it runs (`pre_exec`) or one
//! thread of the test's own: the tests share one process, so none may
//! change what the others see (the environment, the current directory,
//! the umask, limits or ids of the test process).

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::net::ServersOfTest;

/// The system user `name`, added with `useradd` when it is missing (tests
/// that run identd as root need a second local user). One test at a
/// time: of two useradd of the same user at once, one fails ("already
/// exists"); one made meanwhile by another process is taken as it is.
pub fn system_user(name: &str) -> nix::unistd::User {
    static USERADD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = USERADD.lock().unwrap_or_else(|e| e.into_inner());
    let user = || nix::unistd::User::from_name(name).unwrap();
    if user().is_none() {
        let added = Command::new("useradd")
            .args(["--system", "--no-create-home", name])
            .status()
            .unwrap();
        assert!(added.success() || user().is_some(), "useradd {name}: {added}");
    }
    user().unwrap()
}

/// The name of the user the tests run as.
pub fn current_user() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| panic!("no passwd entry for uid {uid}"))
}

/// The user a super-server should start socks4d as: the examples' `nobody`
/// when the tests run as root, else the tests' own user, since only root
/// can switch users.
pub fn service_user() -> String {
    if nix::unistd::getuid().is_root() {
        "nobody".into()
    } else {
        current_user()
    }
}

/// Makes the command run as `user` (set in pre_exec, before exec).
pub fn run_as(cmd: &mut Command, user: &str) -> nix::unistd::User {
    let u = nix::unistd::User::from_name(user).unwrap().expect("user");
    let (uid, gid) = (u.uid, u.gid);
    // SAFETY: setgroups, setgid and setuid are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&[gid])?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            Ok(())
        });
    }
    u
}

/// Sets a resource limit (soft and hard) for the command's process.
pub fn rlimit(cmd: &mut Command, resource: nix::sys::resource::Resource, value: u64) {
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || nix::sys::resource::setrlimit(resource, value, value).map_err(io::Error::from));
    }
}

/// Closes every descriptor above 2 in the child before exec, as a
/// super-server does: descriptors this multi-threaded test process holds
/// without close-on-exec for a moment (cargo's jobserver, a socket another
/// test is passing on) would otherwise count against a limit the test sets.
pub fn close_inherited(cmd: &mut Command) {
    // SAFETY: close_range(2) is async-signal-safe; it runs after the
    // standard streams are in place.
    unsafe {
        cmd.pre_exec(|| {
            nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
}

/// Runs `cmd` in a mount namespace of its own with a /dev of its own: a
/// tmpfs holding null, zero, full, random and urandom, and /dev/log as a
/// symbolic link to `log` (no /dev/log at all when `None`). Needs root.
/// Whatever the command starts shares that namespace.
pub fn private_dev(cmd: &mut Command, log: Option<&Path>) {
    let c = |s: &str| CString::new(s).unwrap();
    let (root, dev, tmpfs, mode) = (c("/"), c("/dev"), c("tmpfs"), c("mode=755"));
    let devlog = c("/dev/log");
    let target = log.map(|p| CString::new(p.as_os_str().as_encoded_bytes()).unwrap());
    let nodes: Vec<(CString, u32, u32)> = [("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)]
        .iter()
        .map(|(name, minor)| (c(&format!("/dev/{name}")), 1, *minor))
        .collect();
    // SAFETY: only async-signal-safe system calls on memory made before
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            let check = |rc: libc::c_int| {
                if rc < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                dev.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                mode.as_ptr().cast(),
            ))?;
            for (path, major, minor) in &nodes {
                check(libc::mknod(
                    path.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(*major, *minor),
                ))?;
                check(libc::chmod(path.as_ptr(), 0o666))?;
            }
            if let Some(t) = &target {
                check(libc::symlink(t.as_ptr(), devlog.as_ptr()))?;
            }
            Ok(())
        });
    }
}

/// Runs the command in a mount namespace of its own where `file` is
/// mounted over `target` (/etc/resolv.conf, /etc/hosts). Needs root.
pub fn bind_over(cmd: &mut Command, file: &Path, target: &str) {
    let src = CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
    let (root, target) = (CString::new("/").unwrap(), CString::new(target).unwrap());
    // SAFETY: only system calls on memory made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            let null = std::ptr::null();
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(null, root.as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, null.cast()) != 0
                || libc::mount(src.as_ptr(), target.as_ptr(), null, libc::MS_BIND, null.cast()) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs the command in a network namespace of its own, where loopback is
/// down and nothing listens.
pub fn own_network(cmd: &mut Command) {
    // SAFETY: unshare(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if nix::libc::unshare(nix::libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `f` on a thread of its own in a network namespace of its own,
/// with loopback up (needs root and `ip`): the sockets it makes and the
/// processes it starts are there, and the rest of the tests are not. The
/// servers it starts serve until the test ends.
pub fn in_own_network<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let servers = ServersOfTest::current();
    thread::spawn(move || {
        servers.adopt();
        // SAFETY: unshare(2) of this thread's network namespace only.
        assert_eq!(unsafe { nix::libc::unshare(nix::libc::CLONE_NEWNET) }, 0, "unshare");
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).status().unwrap();
        assert!(up.success());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The children of a process, from /proc.
#[derive(Debug, Default, PartialEq)]
pub struct Children {
    pub alive: Vec<u32>,
    /// Exited and not yet reaped by the parent.
    pub zombies: Vec<u32>,
}

/// The children of `pid` now.
pub fn children(pid: u32) -> Children {
    let mut found = Children::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after
        // the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        if fields.next().and_then(|p| p.parse::<u32>().ok()) != Some(pid) {
            continue;
        }
        if state == Some("Z") {
            found.zombies.push(child);
        } else {
            found.alive.push(child);
        }
    }
    found
}

/// The children of `pid` now alive (zombies left out).
pub fn live_children(pid: u32) -> Vec<u32> {
    children(pid).alive
}

/// Waits until `pid` has no live child, at most `limit`; panics naming
/// those left.
pub fn wait_no_children(pid: u32, limit: Duration) {
    wait_children(pid, limit, |c| c.alive.is_empty());
}

/// Waits until `pid` has no child at all, neither alive nor unreaped, at
/// most `limit`; panics naming those left.
pub fn wait_all_reaped(pid: u32, limit: Duration) {
    wait_children(pid, limit, |c| c.alive.is_empty() && c.zombies.is_empty());
}

fn wait_children(pid: u32, limit: Duration, done: impl Fn(&Children) -> bool) {
    let start = Instant::now();
    loop {
        let c = children(pid);
        if done(&c) {
            return;
        }
        assert!(start.elapsed() < limit, "children of {pid} left after {limit:?}: {c:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process with this pid still exists (and is not a zombie of
/// ours already reaped).
pub fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// User and system CPU of `pid` so far, in clock ticks (fields 14 and 15
/// of /proc/PID/stat).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
