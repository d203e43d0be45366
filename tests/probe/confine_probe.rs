//! A test-only probe of the confinement (src/confine.rs), run as a rule's
//! command so that it inherits what a handler's commands inherit.
//!
//!     confine-probe ADDR HANDLER_PID [WRITABLE_DIR [OWNED_FILE [READABLE_DIR]]]
//!
//! OWNED_FILE is a file of the user the probe runs as, outside every
//! directory the confinement allows: the metadata checks try to change it
//! (without it they aim at a path that does not exist, where only the
//! system-call filter answers EPERM). READABLE_DIR is a `--readable`
//! directory that file permissions would let the probe write to: only the
//! confinement keeps what the probe wrote elsewhere from being moved there,
//! where it could be run.
//!
//! Protocol, line by line over TCP to ADDR (tests/confine.rs and other
//! tests rely on it; keep it):
//! - the probe sends `hello HANDLER_PID\n`;
//! - it reads `other PID\n`, the pid of another handler (0: none);
//! - it writes one line per check, `NAME OUTCOME\n`, OUTCOME being
//!   `allowed`, `denied ERRNO_NAME` (such as `denied EACCES`) or, for the
//!   informational checks, a value; checks of the other handler are left
//!   out when there is none;
//! - then `done\n`.
//!
//! Each line is written as soon as its check is done, so a probe that
//! dies shows how far it got. Checks that could change the probe itself
//! (ids, namespaces) run in a forked child.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;

/// Every wait of the probe is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The file the tests create for the `/home` check, world-readable.
const HOME_SECRET: &str = "/home/socks4d-probe-test/secret";
/// The file the tests create for the `/root` check, world-readable.
const ROOT_SECRET: &str = "/root/socks4d-probe-test/secret";
/// A mount target that does not exist: without the system-call filter
/// mount(2) fails with ENOENT at path lookup, before any permission
/// check, so EPERM can only come from the filter.
const NO_SUCH_MOUNT_POINT: &str = "/nonexistent-socks4d-probe";
/// The same for the metadata checks without an OWNED_FILE: ENOENT
/// without the filter, EPERM with it.
const NO_SUCH_FILE: &str = "/nonexistent-socks4d-probe/file";
/// Where the dynamic loader may be; the first that exists is used
/// (tests/confine.rs has the same list).
const LD_SO: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-x86-64.so.2",
];

type Outcome = Result<(), Errno>;

/// The connection to the collector, one line per check.
struct Report(TcpStream);

impl Report {
    fn line(&mut self, name: &str, text: &str) {
        let _ = self.0.write_all(format!("{name} {text}\n").as_bytes());
    }

    fn check(&mut self, name: &str, outcome: Outcome) {
        match outcome {
            Ok(()) => self.line(name, "allowed"),
            Err(e) => self.line(name, &format!("denied {e:?}")),
        }
    }

    fn value(&mut self, name: &str, value: impl std::fmt::Display) {
        self.line(name, &value.to_string());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: confine-probe ADDR HANDLER_PID [WRITABLE_DIR [OWNED_FILE [READABLE_DIR]]]");
        std::process::exit(64);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let handler: i32 = args[2].parse().expect("HANDLER_PID");
    let writable = args.get(3).cloned();
    let owned = args.get(4).cloned();
    let readable = args.get(5).cloned();

    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to the collector");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut report = Report(stream.try_clone().unwrap());
    report.0.write_all(format!("hello {handler}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    let other: i32 = answer
        .strip_prefix("other ")
        .and_then(|p| p.trim().parse().ok())
        .expect("`other PID` line");

    // The report itself is the TCP check: socket, connect, write.
    report.check("tcp_connect", Ok(()));
    files(&mut report, writable.as_deref());
    metadata(&mut report, writable.as_deref(), owned.as_deref());
    processes(&mut report, handler, other);
    sockets(&mut report, addr.port());
    calls(&mut report);
    state(&mut report);
    programs(&mut report, writable.as_deref());
    if let Some(dir) = &writable {
        loading(&mut report, dir, readable.as_deref());
    }
    let _ = report.0.write_all(b"done\n");
}

fn files(r: &mut Report, writable: Option<&str>) {
    let me = std::process::id();
    r.check("write_tmp", create(&format!("/tmp/socks4d-probe-{me}")));
    r.check("write_var_tmp", create(&format!("/var/tmp/socks4d-probe-{me}")));
    r.check("write_etc", create(&format!("/etc/socks4d-probe-{me}")));
    r.check("write_dev_shm", create(&format!("/dev/shm/socks4d-probe-{me}")));
    if let Some(dir) = writable {
        r.check("write_writable", create(&format!("{dir}/socks4d-probe-{me}")));
    }
    r.check("read_home", read(HOME_SECRET));
    r.check("list_home", list("/home"));
    r.check("read_root", read(ROOT_SECRET));
    r.check("list_var", list("/var"));
    r.check("list_sys", list("/sys"));
    r.check("proc_1", read("/proc/1/status"));
    r.check("proc_self", read("/proc/self/status"));
    r.check("read_etc", read("/etc/passwd"));
    r.check("read_dev_urandom", read("/dev/urandom"));
    r.check("write_dev_null", write_existing("/dev/null"));
    r.check("write_dev_zero", write_existing("/dev/zero"));
}

/// Changes of modes, owners, times and file flags: by path on `owned`
/// (else on a path that does not exist), and by descriptor on a file the
/// probe creates in `writable` (else on no descriptor, -1, which is EBADF
/// without the filter). Each is named after its system call; where this
/// architecture has no such call, after what its libc does instead.
fn metadata(r: &mut Report, writable: Option<&str>, owned: Option<&str>) {
    let path = c_path(owned.unwrap_or(NO_SUCH_FILE));
    let p = path.as_ptr();
    // SAFETY: getters without arguments.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let epoch = [libc::timespec { tv_sec: 0, tv_nsec: 0 }; 2];
    let mode: libc::c_uint = 0o666;
    // SAFETY (every call below): a NUL-terminated path and, for the time
    // calls, an array of the two times each reads.
    unsafe {
        r.check("chmod", legacy::chmod(p, mode));
        r.check(
            "fchmodat",
            sys(libc::syscall(libc::SYS_fchmodat, libc::AT_FDCWD, p, mode)),
        );
        r.check(
            "fchmodat2",
            sys(libc::syscall(
                libc::SYS_fchmodat2,
                libc::AT_FDCWD,
                p,
                mode,
                libc::AT_SYMLINK_NOFOLLOW,
            )),
        );
        r.check("chown", legacy::chown(p, uid, gid));
        r.check("lchown", legacy::lchown(p, uid, gid));
        r.check(
            "fchownat",
            sys(libc::syscall(libc::SYS_fchownat, libc::AT_FDCWD, p, uid, gid, 0)),
        );
        r.check(
            "utimensat",
            sys(libc::syscall(libc::SYS_utimensat, libc::AT_FDCWD, p, epoch.as_ptr(), 0)),
        );
        r.check("utimes", legacy::utimes(p));
        r.check("utime", legacy::utime(p));
        r.check("futimesat", legacy::futimesat(p));
    }
    let file = writable.map(|dir| format!("{dir}/socks4d-probe-meta-{}", std::process::id()));
    let fd = file
        .as_deref()
        .and_then(|f| open(f, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL).ok());
    let raw = fd.as_ref().map_or(-1, std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: calls on a descriptor of ours (or -1), with the arguments
    // each reads.
    unsafe {
        r.check("fchmod", rc(libc::fchmod(raw, 0o600)));
        r.check("fchown", rc(libc::fchown(raw, uid, gid)));
        r.check(
            "futimens",
            sys(libc::syscall(
                libc::SYS_utimensat,
                raw,
                std::ptr::null::<libc::c_char>(),
                epoch.as_ptr(),
                0,
            )),
        );
        // chattr: set the flags the file already has.
        let mut flags: libc::c_long = 0;
        libc::ioctl(raw, libc::FS_IOC_GETFLAGS, &mut flags);
        r.check("setflags", rc(libc::ioctl(raw, libc::FS_IOC_SETFLAGS, &flags)));
    }
    drop(fd);
    if let Some(f) = file {
        let _ = std::fs::remove_file(f);
    }
}

/// The older path calls x86_64 has, each made as itself.
#[cfg(target_arch = "x86_64")]
mod legacy {
    use super::{sys, Outcome};
    use nix::libc;

    pub unsafe fn chmod(p: *const libc::c_char, mode: libc::c_uint) -> Outcome {
        sys(libc::syscall(libc::SYS_chmod, p, mode))
    }

    pub unsafe fn chown(p: *const libc::c_char, uid: libc::uid_t, gid: libc::gid_t) -> Outcome {
        sys(libc::syscall(libc::SYS_chown, p, uid, gid))
    }

    pub unsafe fn lchown(p: *const libc::c_char, uid: libc::uid_t, gid: libc::gid_t) -> Outcome {
        sys(libc::syscall(libc::SYS_lchown, p, uid, gid))
    }

    pub unsafe fn utimes(p: *const libc::c_char) -> Outcome {
        let epoch = [libc::timeval { tv_sec: 0, tv_usec: 0 }; 2];
        sys(libc::syscall(libc::SYS_utimes, p, epoch.as_ptr()))
    }

    pub unsafe fn utime(p: *const libc::c_char) -> Outcome {
        let epoch = libc::utimbuf { actime: 0, modtime: 0 };
        sys(libc::syscall(libc::SYS_utime, p, &epoch))
    }

    pub unsafe fn futimesat(p: *const libc::c_char) -> Outcome {
        let epoch = [libc::timeval { tv_sec: 0, tv_usec: 0 }; 2];
        sys(libc::syscall(libc::SYS_futimesat, libc::AT_FDCWD, p, epoch.as_ptr()))
    }
}

/// Elsewhere libc makes the older calls with the `*at` ones.
#[cfg(not(target_arch = "x86_64"))]
mod legacy {
    use super::{sys, Outcome};
    use nix::libc;

    const EPOCH: [libc::timespec; 2] = [libc::timespec { tv_sec: 0, tv_nsec: 0 }; 2];

    pub unsafe fn chmod(p: *const libc::c_char, mode: libc::c_uint) -> Outcome {
        sys(libc::syscall(libc::SYS_fchmodat, libc::AT_FDCWD, p, mode))
    }

    pub unsafe fn chown(p: *const libc::c_char, uid: libc::uid_t, gid: libc::gid_t) -> Outcome {
        sys(libc::syscall(libc::SYS_fchownat, libc::AT_FDCWD, p, uid, gid, 0))
    }

    pub unsafe fn lchown(p: *const libc::c_char, uid: libc::uid_t, gid: libc::gid_t) -> Outcome {
        sys(libc::syscall(
            libc::SYS_fchownat,
            libc::AT_FDCWD,
            p,
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        ))
    }

    pub unsafe fn utimes(p: *const libc::c_char) -> Outcome {
        sys(libc::syscall(libc::SYS_utimensat, libc::AT_FDCWD, p, EPOCH.as_ptr(), 0))
    }

    pub unsafe fn utime(p: *const libc::c_char) -> Outcome {
        utimes(p)
    }

    pub unsafe fn futimesat(p: *const libc::c_char) -> Outcome {
        utimes(p)
    }
}

/// Ways to run, or load, a program brought into the writable directory
/// `dir`: a copy of /bin/sh, made with the mode of a program but without
/// chmod. Each tries to have it run `exit 7`, or to move it where it
/// could be (`readable`).
fn loading(r: &mut Report, dir: &str, readable: Option<&str>) {
    let me = std::process::id();
    let copy = format!("{dir}/socks4d-probe-sh-{me}");
    r.check("write_program", write_copy("/bin/sh", &copy, 0o755));
    r.check("read_writable", read(&copy));
    r.check("exec_writable", runs(Command::new(&copy).args(["-c", "exit 7"])));
    r.check("execveat_writable", in_child(|| execveat_empty_path(&copy)));
    // The dynamic loader opens and maps the file itself: Landlock's
    // "execute" is never asked.
    if let Some(ld_so) = LD_SO.iter().find(|p| std::path::Path::new(p).exists()) {
        r.check(
            "ldso_system",
            runs(Command::new(ld_so).args(["/bin/sh", "-c", "exit 7"])),
        );
        r.check(
            "ldso_writable",
            runs(Command::new(ld_so).args([copy.as_str(), "-c", "exit 7"])),
        );
        // The same file through a descriptor that Landlock does not check
        // (O_PATH), reopened by its /proc/self/fd link, here and in the
        // loader, which inherits it.
        // SAFETY: a NUL-terminated path; the descriptor is owned at once.
        let fd = unsafe { libc::open(c_path(&copy).as_ptr(), libc::O_PATH) };
        if fd >= 0 {
            // SAFETY: a fresh descriptor of our own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let via = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            r.check("proc_fd_reopen", read(&via));
            r.check(
                "ldso_proc_fd",
                runs(Command::new(ld_so).args([via.as_str(), "-c", "exit 7"])),
            );
        }
    }
    // A system program linked or pointed at from the writable directory,
    // and the copy moved or linked out of it.
    let link = format!("{dir}/socks4d-probe-link-{me}");
    let sh = std::fs::canonicalize("/bin/sh").map_or_else(|_| "/bin/sh".into(), |p| p.display().to_string());
    r.check("link_into_writable", hard_link(&sh, &link));
    let _ = std::fs::remove_file(&link);
    r.check("symlink_writable", symlink("/bin/sh", &link));
    let _ = std::fs::remove_file(&link);
    // Each move starts from a copy in place: one that got through must not
    // hide whether the next would.
    let mut places = vec![("out", format!("/tmp/socks4d-probe-moved-{me}"))];
    if let Some(readable) = readable {
        let there = format!("{readable}/socks4d-probe-moved-{me}");
        r.check("write_readable", create(&there));
        places.push(("to_readable", there));
    }
    for (name, place) in places {
        let _ = write_copy("/bin/sh", &copy, 0o755);
        r.check(&format!("link_{name}"), hard_link(&copy, &place));
        let _ = std::fs::remove_file(&place);
        r.check(&format!("rename_{name}"), rename(&copy, &place));
        let _ = std::fs::remove_file(&place);
    }
    let _ = std::fs::remove_file(&copy);
}

/// Copies `from` to a new file `to` made with `mode`.
fn write_copy(from: &str, to: &str, mode: libc::c_int) -> Outcome {
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(0));
    let mut src = std::fs::File::open(from).map_err(errno)?;
    // SAFETY: a NUL-terminated path; the descriptor is owned at once.
    let fd = unsafe {
        libc::open(
            c_path(to).as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor of our own.
    let mut dst = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::copy(&mut src, &mut dst).map(drop).map_err(errno)
}

/// Whether `cmd` ran its `exit 7`: allowed, or denied with the errno its
/// start failed with, or EACCES when it started but what it was to run
/// could not be opened (the loader's 127).
fn runs(cmd: &mut Command) -> Outcome {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(0))),
        Ok(o) if o.status.code() == Some(7) => Ok(()),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("Permission denied") => Err(Errno::EACCES),
        Ok(_) => Err(Errno::UnknownErrno),
    }
}

/// execveat(2) of `path` opened with O_PATH, as fexecve does; in a child,
/// which becomes `sh -c 'exit 0'` if it is let through.
fn execveat_empty_path(path: &str) -> Outcome {
    let fd = open(path, libc::O_PATH)?;
    let argv = [c_path("sh"), c_path("-c"), c_path("exit 0")];
    let argv: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let envp = [std::ptr::null::<libc::c_char>()];
    let empty = c_path("");
    // SAFETY: NUL-terminated strings and NULL-terminated arrays; on
    // success this process is replaced.
    sys(unsafe {
        libc::syscall(
            libc::SYS_execveat,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
}

fn memfd() -> Outcome {
    let name = c_path("socks4d-probe");
    // SAFETY: a NUL-terminated name; the descriptor is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor of our own.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

fn hard_link(from: &str, to: &str) -> Outcome {
    // SAFETY: NUL-terminated paths.
    rc(unsafe { libc::link(c_path(from).as_ptr(), c_path(to).as_ptr()) })
}

fn symlink(target: &str, at: &str) -> Outcome {
    // SAFETY: NUL-terminated paths.
    rc(unsafe { libc::symlink(c_path(target).as_ptr(), c_path(at).as_ptr()) })
}

fn rename(from: &str, to: &str) -> Outcome {
    // SAFETY: NUL-terminated paths.
    rc(unsafe { libc::rename(c_path(from).as_ptr(), c_path(to).as_ptr()) })
}

fn processes(r: &mut Report, handler: i32, other: i32) {
    if other > 0 {
        r.check("proc_other", read(&format!("/proc/{other}/status")));
        r.check("ptrace_other", ptrace_attach(other));
        r.check("process_vm_readv_other", vm_read(other));
        r.check("kill_other", kill(other));
        r.check("pidfd_signal_other", pidfd_signal(other));
    }
    r.check("kill_handler", kill(handler));
    r.check("kill_init", kill(1));
}

fn sockets(r: &mut Report, port: u16) {
    r.check("socket_raw", socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP));
    r.check(
        "socket_ping",
        socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
    );
    r.check(
        "socket_netlink",
        socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
    );
    r.check(
        "socket_packet",
        socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32),
    );
    r.check("socket_udp", socket(libc::AF_INET, libc::SOCK_DGRAM, 0));
    r.check("socket_unix", socket(libc::AF_UNIX, libc::SOCK_STREAM, 0));
    r.check("abstract_own", abstract_own());
    r.check(
        "abstract_outside",
        abstract_connect(&format!("socks4d-confine-probe-{port}")),
    );
}

fn calls(r: &mut Report) {
    r.check("setuid_root", in_child(|| rc(unsafe { libc::setuid(0) })));
    r.check(
        "unshare_user",
        in_child(|| rc(unsafe { libc::unshare(libc::CLONE_NEWUSER) })),
    );
    r.check("clone_newuser", clone_newuser());
    r.check("clone3", clone3());
    r.check("mount", mount());
    r.check("chroot", in_child(|| rc(unsafe { libc::chroot(c_path("/").as_ptr()) })));
    r.check("mmap_wx", mmap(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC));
    r.check("mmap_rw", mmap(libc::PROT_READ | libc::PROT_WRITE));
    r.check("mprotect_x", mprotect_exec());
    r.check("io_uring_setup", io_uring_setup());
    r.check("keyctl", keyctl());
    // A file in memory, which fexecve could run without any directory.
    r.check("memfd_create", memfd());
}

fn state(r: &mut Report) {
    let (effective, permitted, inheritable) = capabilities();
    r.value("cap_effective", format!("{effective:x}"));
    r.value("cap_permitted", format!("{permitted:x}"));
    r.value("cap_inheritable", format!("{inheritable:x}"));
    // SAFETY: prctl queries and getters with no pointers passed.
    unsafe {
        r.value("no_new_privs", libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
        r.value("seccomp_mode", libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0));
        r.value("dumpable", libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0));
        r.value("uid", libc::getuid());
        r.value("euid", libc::geteuid());
        r.value("gid", libc::getgid());
    }
    let mut core = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: `core` is a valid rlimit to write.
    unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut core) };
    r.value("core_limit", core.rlim_cur);
    r.value("core_limit_max", core.rlim_max);
}

fn programs(r: &mut Report, writable: Option<&str>) {
    r.check("thread", std::thread::spawn(|| ()).join().map_err(|_| Errno::EIO));
    let sh = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .stdin(Stdio::null())
        .status();
    match sh {
        Ok(s) if s.code() == Some(3) => r.check("exec_sh", Ok(())),
        Ok(s) => r.value("exec_sh", format!("failed {s}")),
        Err(e) => r.check("exec_sh", Err(Errno::from_raw(e.raw_os_error().unwrap_or(0)))),
    }
    if let Some(dir) = writable {
        if std::path::Path::new("/usr/bin/logger").exists() {
            logger(r, dir);
        }
    }
}

/// `logger` to a datagram socket the probe binds in `dir`, as a rule's
/// `logger` command writes to /dev/log.
fn logger(r: &mut Report, dir: &str) {
    let path = format!("{dir}/socks4d-probe-log-{}", std::process::id());
    let sock = match UnixDatagram::bind(&path) {
        Ok(s) => s,
        Err(e) => return r.check("exec_logger", Err(Errno::from_raw(e.raw_os_error().unwrap_or(0)))),
    };
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let run = Command::new("/usr/bin/logger")
        .args(["-d", "-u", &path, "--socket-errors=on", "socks4d-probe-logger"])
        .stdin(Stdio::null())
        .status();
    let mut buf = [0u8; 512];
    match run {
        Err(e) => r.check("exec_logger", Err(Errno::from_raw(e.raw_os_error().unwrap_or(0)))),
        Ok(s) if !s.success() => r.value("exec_logger", format!("failed {s}")),
        Ok(_) => match sock.recv(&mut buf) {
            Ok(n) if buf[..n].windows(20).any(|w| w == b"socks4d-probe-logger") => r.check("exec_logger", Ok(())),
            Ok(_) => r.value("exec_logger", "failed wrong-message"),
            Err(e) => r.check("exec_logger", Err(Errno::from_raw(e.raw_os_error().unwrap_or(0)))),
        },
    }
    let _ = std::fs::remove_file(&path);
}

fn c_path(path: &str) -> CString {
    CString::new(path).unwrap()
}

/// 0 or -1 with errno, as most calls return.
fn rc(ret: libc::c_int) -> Outcome {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// A raw system call's return value as an outcome.
fn sys(ret: libc::c_long) -> Outcome {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn open(path: &str, flags: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: a NUL-terminated path; the returned descriptor is owned.
    let fd = unsafe { libc::open(c_path(path).as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        Err(Errno::last())
    } else {
        // SAFETY: a fresh descriptor of our own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Creates `path`, writes a byte, and removes it again.
fn create(path: &str) -> Outcome {
    let fd = open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)?;
    let written = std::fs::File::from(fd).write_all(b"x");
    let _ = std::fs::remove_file(path);
    written.map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

fn write_existing(path: &str) -> Outcome {
    open(path, libc::O_WRONLY).map(drop)
}

fn read(path: &str) -> Outcome {
    let fd = open(path, libc::O_RDONLY)?;
    let mut b = [0u8; 16];
    // SAFETY: reading into a buffer of its length.
    let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(&fd), b.as_mut_ptr().cast(), b.len()) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn list(path: &str) -> Outcome {
    open(path, libc::O_RDONLY | libc::O_DIRECTORY).map(drop)
}

fn kill(pid: i32) -> Outcome {
    // SAFETY: signal 0 only checks whether a signal could be sent.
    rc(unsafe { libc::kill(pid, 0) })
}

fn pidfd_signal(pid: i32) -> Outcome {
    // SAFETY: pidfd_open returns a descriptor we own; signal 0 sends nothing.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if fd < 0 {
            return Err(Errno::last());
        }
        let fd = OwnedFd::from_raw_fd(fd as i32);
        let ret = libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
        if ret < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }
}

fn ptrace_attach(pid: i32) -> Outcome {
    // SAFETY: ptrace on another process; a successful attach is undone at
    // once so the other handler keeps running.
    unsafe {
        let ret = libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0);
        if ret < 0 {
            return Err(Errno::last());
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    Ok(())
}

fn vm_read(pid: i32) -> Outcome {
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Any address: a permission failure comes before the address is used.
    let remote = libc::iovec {
        iov_base: 0x10000 as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` points at `buf`; the remote side is the kernel's to check.
    let ret = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    match ret {
        // EFAULT: the read was permitted, the address just not mapped.
        r if r >= 0 => Ok(()),
        _ if Errno::last() == Errno::EFAULT => Ok(()),
        _ => Err(Errno::last()),
    }
}

fn socket(family: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> Outcome {
    // SAFETY: plain socket(2); the descriptor is closed at once.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor of our own.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

fn abstract_addr(name: &str) -> std::os::unix::net::SocketAddr {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
}

/// Listens on an abstract socket of the probe's own and connects to it:
/// inside one domain, allowed.
fn abstract_own() -> Outcome {
    let addr = abstract_addr(&format!("socks4d-confine-probe-self-{}", std::process::id()));
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(0));
    let _listener = UnixListener::bind_addr(&addr).map_err(errno)?;
    UnixStream::connect_addr(&addr).map(drop).map_err(errno)
}

/// Connects to an abstract socket that someone outside the handler
/// (the test) listens on.
fn abstract_connect(name: &str) -> Outcome {
    UnixStream::connect_addr(&abstract_addr(name))
        .map(drop)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

/// Runs `f` in a forked child and returns its outcome, so that a call
/// that succeeds changes nothing in the probe.
fn in_child(f: impl FnOnce() -> Outcome) -> Outcome {
    // SAFETY: the probe is single-threaded here; the child makes one
    // system call and leaves with _exit.
    unsafe {
        match libc::fork() {
            -1 => Err(Errno::last()),
            0 => {
                let code = match f() {
                    Ok(()) => 0,
                    Err(e) => e as i32,
                };
                libc::_exit(code)
            }
            pid => wait_child(pid),
        }
    }
}

/// The child's exit code read as an errno (0: allowed).
fn wait_child(pid: libc::pid_t) -> Outcome {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(Errno::last());
    }
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        e => Err(Errno::from_raw(e)),
    }
}

/// clone(2) asking for a new user namespace; a child that gets made
/// leaves at once.
fn clone_newuser() -> Outcome {
    // SAFETY: without a new stack the child runs on a copy of ours, like
    // fork, and only calls _exit.
    unsafe {
        let ret = libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        );
        match ret {
            -1 => Err(Errno::last()),
            0 => libc::_exit(0),
            pid => wait_child(pid as libc::pid_t),
        }
    }
}

/// clone3(2) for a plain child; the filter answers ENOSYS so that libc
/// falls back to clone(2).
fn clone3() -> Outcome {
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls, set_tid, set_tid_size, cgroup.
    let mut args = [0u64; 11];
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: as for clone_newuser.
    unsafe {
        let ret = libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), std::mem::size_of_val(&args));
        match ret {
            -1 => Err(Errno::last()),
            0 => libc::_exit(0),
            pid => wait_child(pid as libc::pid_t),
        }
    }
}

fn mount() -> Outcome {
    let (none, target, fs) = (c_path("none"), c_path(NO_SUCH_MOUNT_POINT), c_path("tmpfs"));
    // SAFETY: NUL-terminated strings and no data.
    in_child(|| rc(unsafe { libc::mount(none.as_ptr(), target.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) }))
}

/// The system call itself, not the C library's `mmap`: musl reports the
/// filter's EPERM for an anonymous mapping as ENOMEM.
fn mmap(prot: libc::c_int) -> Outcome {
    // SAFETY: a fresh anonymous page, unmapped again.
    unsafe {
        let p = libc::syscall(
            libc::SYS_mmap,
            std::ptr::null_mut::<libc::c_void>(),
            4096usize,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0usize,
        );
        if p == -1 {
            return Err(Errno::last());
        }
        libc::munmap(p as *mut libc::c_void, 4096);
    }
    Ok(())
}

fn mprotect_exec() -> Outcome {
    // SAFETY: a fresh anonymous page of our own, unmapped again.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let ret = libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
        let errno = Errno::last();
        libc::munmap(p, 4096);
        if ret < 0 {
            Err(errno)
        } else {
            Ok(())
        }
    }
}

fn io_uring_setup() -> Outcome {
    // struct io_uring_params is 120 bytes; all zero asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: `params` is writable for the size the kernel expects.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor of our own.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

fn keyctl() -> Outcome {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
    // SAFETY: a query without pointers.
    let ret = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// The effective, permitted and inheritable sets, 64 bits each.
fn capabilities() -> (u64, u64, u64) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: a version-3 header and room for its two data structs.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if ret < 0 {
        return (u64::MAX, u64::MAX, u64::MAX);
    }
    let join = |lo: u32, hi: u32| (hi as u64) << 32 | lo as u64;
    (
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    )
}
