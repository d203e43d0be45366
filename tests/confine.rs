//! The confinement (src/confine.rs, src/syscalls.rs) seen from inside a
//! handler, under each start mode: stdin (inetd), fd 3 under LISTEN_FDS
//! (socket unit, Accept=yes) and `--listen`. A rule's command runs the
//! probe (tests/probe/confine_probe.rs), which inherits what a handler's
//! commands inherit and reports every check over TCP to a collector here.
//!
//! Each run holds two relayed connections open at once; the second
//! handler's probe is told the first handler's pid, and must not be able
//! to trace, signal or read it. Two more runs stand in for kernels without
//! Landlock or without seccomp filters with an outer seccomp filter put
//! around socks4d, and check the gap's log line and the rest of the
//! confinement.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::common::*;
use nix::libc;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The files of the `/home` and `/root` checks; the probe has the same
/// paths.
const HOME_SECRET: &str = "/home/socks4d-probe-test/secret";
const ROOT_SECRET: &str = "/root/socks4d-probe-test/secret";

#[test]
fn confined_under_stdin() {
    let env = Env::new();
    let dst = echo_server();
    let collector = Collector::start();
    let files = Files::new(&collector, &env);
    let args = files.args();
    let mut proxy = Proxy::per_connection(Box::new(move || spawn_stdin(&refs(&args))));
    let (first, second) = two_handlers(&mut proxy, &collector, dst);
    let log = proxy.stop();
    env.assert_confined(&first, &second, &log, Have::kernel());
    files.assert_owned_unchanged(true);
}

#[test]
fn confined_under_fd3() {
    let env = Env::new();
    let dst = echo_server();
    let collector = Collector::start();
    let files = Files::new(&collector, &env);
    let args = files.args();
    let mut proxy = Proxy::per_connection(Box::new(move || spawn_fd3(&refs(&args))));
    let (first, second) = two_handlers(&mut proxy, &collector, dst);
    let log = proxy.stop();
    env.assert_confined(&first, &second, &log, Have::kernel());
    files.assert_owned_unchanged(true);
}

#[test]
fn confined_under_listen() {
    let env = Env::new();
    let dst = echo_server();
    let collector = Collector::start();
    let files = Files::new(&collector, &env);
    let (guard, addr) = spawn_listen(&refs(&files.args()));
    let mut proxy = Proxy::listening(guard, addr);
    let (first, second) = two_handlers(&mut proxy, &collector, dst);
    let log = proxy.stop();
    env.assert_confined(&first, &second, &log, Have::kernel());
    files.assert_owned_unchanged(true);
}

/// A kernel without Landlock: `landlock_create_ruleset` fails with ENOSYS.
/// One warning line says so; seccomp and the rest still hold.
#[test]
fn without_landlock_the_gap_is_logged_and_seccomp_holds() {
    let env = Env::new();
    let dst = echo_server();
    let collector = Collector::start();
    let files = Files::new(&collector, &env);
    let args = files.args();
    let outer = outer_filter(libc::SYS_landlock_create_ruleset, libc::ENOSYS);
    let mut proxy = Proxy::per_connection(Box::new(move || spawn_stdin_under(&outer, &refs(&args))));
    let (first, second) = two_handlers(&mut proxy, &collector, dst);
    let log = proxy.stop();
    let have = Have {
        landlock: false,
        scopes: false,
        seccomp: true,
    };
    env.assert_confined(&first, &second, &log, have);
    files.assert_owned_unchanged(true);
    // The outer filter took: what only Landlock forbids is allowed, among
    // it loading a program from the writable directory.
    expect(
        &second,
        &[
            ("write_tmp", "allowed"),
            ("proc_self", "allowed"),
            ("kill_other", "allowed"),
            ("read_writable", "allowed"),
            ("exec_writable", "allowed"),
            ("ldso_writable", "allowed"),
            ("write_readable", "allowed"),
            ("link_to_readable", "allowed"),
            ("rename_to_readable", "allowed"),
        ],
        &log,
    );
}

/// A kernel without seccomp filters: `seccomp(SECCOMP_SET_MODE_FILTER)`
/// fails with EINVAL. One warning line says so; Landlock and the rest
/// still hold. Under `--listen`, where each child enters the plan.
#[test]
fn without_seccomp_the_gap_is_logged_and_landlock_holds() {
    let env = Env::new();
    let dst = echo_server();
    let collector = Collector::start();
    let files = Files::new(&collector, &env);
    let outer = outer_filter(libc::SYS_seccomp, libc::EINVAL);
    let (guard, addr) = spawn_listen_under(&outer, &refs(&files.args()));
    let mut proxy = Proxy::listening(guard, addr);
    let (first, second) = two_handlers(&mut proxy, &collector, dst);
    let log = proxy.stop();
    let abi = landlock_abi();
    let have = Have {
        landlock: abi >= 1,
        scopes: abi >= 6,
        seccomp: false,
    };
    env.assert_confined(&first, &second, &log, have);
    // The outer filter took: what only the filter forbids is allowed
    // (mount gets as far as looking up its target), and the owned file
    // outside every allowed directory was changed.
    expect(
        &second,
        &[
            ("socket_netlink", "allowed"),
            ("mmap_wx", "allowed"),
            ("mount", "denied ENOENT"),
            ("chmod", "allowed"),
            ("utimensat", "allowed"),
            ("fchownat", "allowed"),
            ("fchmod", "allowed"),
            ("memfd_create", "allowed"),
        ],
        &log,
    );
    files.assert_owned_unchanged(false);
}

/// A `--writable` directory beneath a readable one, or holding one, would
/// let what is written there be read, and so loaded and run: it is left
/// out, with a warning line naming why, and a command cannot write there.
/// One apart from every readable directory is written.
#[test]
fn a_writable_directory_that_overlaps_a_readable_one_is_left_out() {
    // A directory of its own beneath /run.
    if !require_root() {
        return;
    }
    let dir = TempDir::new("confine-overlap");
    let readable = dir.path().join("readable");
    let inside = readable.join("w");
    let apart = dir.path().join("apart");
    // Beneath /run, which the confinement lets handlers read.
    let run = TempDir(PathBuf::from(format!(
        "/run/socks4d-confine-overlap-{}",
        std::process::id()
    )));
    for d in [&inside, &apart, &run.0] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let conf = dir.path().join("socks4d.conf");
    std::fs::write(
        &conf,
        format!(
            "permit 127.0.0.0/8 : for d in {} {} {}; do echo x >$d/f; done\n",
            inside.display(),
            run.0.display(),
            apart.display()
        ),
    )
    .unwrap();
    let s = |p: &Path| p.display().to_string();
    let args = [
        "--ident".to_string(),
        "off".into(),
        "--log-stderr".into(),
        "-f".into(),
        s(&conf),
        "--readable".into(),
        s(&readable),
        "--writable".into(),
        s(&inside),
        "--writable".into(),
        s(&run.0),
        "--writable".into(),
        s(dir.path()),
        "--writable".into(),
        s(&apart),
    ];
    let dst = echo_server();
    let mut server = spawn_stdin(&refs(&args));
    server.client.write_all(&connect_req(dst, b"")).unwrap();
    assert_eq!(read_reply(&mut server.client)[1], 0x5A);
    server.client.shutdown(Shutdown::Write).unwrap();
    let (status, log) = finish(&mut server, EXIT);
    assert_eq!(status.code(), Some(0), "{log}");
    let start = std::time::Instant::now();
    while !apart.join("f").exists() {
        assert!(start.elapsed() < IO_TIMEOUT, "the command wrote nothing:\n{log}");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !inside.join("f").exists(),
        "written beneath --readable {}",
        readable.display()
    );
    assert!(!run.0.join("f").exists(), "written beneath /run");
    let gaps: Vec<&str> = log.lines().filter(|l| l.contains("confine gap=")).collect();
    let whose = "whose files may be read, so files written there could be read and run; not made writable";
    for want in [
        format!("gap=\"{}: beneath {}, {whose}\"", inside.display(), readable.display()),
        format!("gap=\"{}: beneath /run, {whose}\"", run.0.display()),
        format!(
            "gap=\"{}: contains {}, {whose}\"",
            dir.path().display(),
            readable.display()
        ),
    ] {
        assert!(gaps.iter().any(|l| l.ends_with(&want)), "no line ending {want}:\n{log}");
    }
    assert_eq!(gaps.len(), 3, "{log}");
}

/// Which mechanisms are in force for a run.
#[derive(Clone, Copy, Debug)]
struct Have {
    /// Landlock's file-system rules.
    landlock: bool,
    /// Landlock's scopes (ABI 6): signals and abstract sockets.
    scopes: bool,
    /// The seccomp allow-list.
    seccomp: bool,
}

impl Have {
    /// What this kernel offers.
    fn kernel() -> Have {
        let abi = landlock_abi();
        if abi < 6 {
            unchecked(format_args!(
                "Landlock ABI {abi} (< 6) here: signal and abstract-socket scoping"
            ));
        }
        Have {
            landlock: abi >= 1,
            scopes: abi >= 6,
            seccomp: true,
        }
    }
}

/// The kernel's Landlock ABI version; 0 or less without Landlock.
fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_ulong = 1;
    // SAFETY: the version query takes no ruleset and writes nothing.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    }
}

/// The dynamic loader, as the probe finds it (the probe has the same
/// list).
fn ld_so() -> Option<&'static str> {
    [
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/ld-linux-aarch64.so.1",
        "/lib/ld-linux-x86-64.so.2",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

/// Checks whose errno depends on the host (protected_hardlinks answers
/// EPERM before Landlock's EXDEV): denied, whatever the errno.
const DENIED_ANYHOW: &[&str] = &[
    "link_into_writable",
    "rename_out",
    "link_out",
    "rename_to_readable",
    "link_to_readable",
];

/// Facts about the test host the expectations depend on.
struct Env {
    root: bool,
    /// The ids the probe should run as.
    uid: u32,
    gid: u32,
    _secrets: Option<Secrets>,
}

impl Env {
    fn new() -> Env {
        let root = require_that(
            nix::unistd::getuid().is_root(),
            "not root: the /home and /root read checks (they need files only root can make) \
             and the drop to nobody are left out",
        );
        let (uid, gid) = if root {
            let nobody = nix::unistd::User::from_name("nobody")
                .unwrap()
                .expect("user nobody, which socks4d drops to");
            (nobody.uid.as_raw(), nobody.gid.as_raw())
        } else {
            (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw())
        };
        Env {
            root,
            uid,
            gid,
            _secrets: root.then(Secrets::acquire),
        }
    }

    /// Every outcome both probes must report given `have`, the other
    /// handler's checks in the second, and the log's gap lines.
    fn assert_confined(&self, first: &ProbeReport, second: &ProbeReport, log: &str, have: Have) {
        // Shown with --nocapture.
        for r in [first, second] {
            eprintln!("probe of handler {} (other {}):\n{}", r.handler, r.other, r.dump());
        }
        assert_eq!(first.other, 0, "first probe told of another handler");
        assert_eq!(
            second.other, first.handler,
            "second probe not told of the first handler"
        );
        assert_ne!(first.handler, second.handler);
        let common = self.expected(have);
        expect(first, &common, log);
        expect(second, &common, log);
        expect(second, &other_expected(have), log);
        assert_eq!(first.get("ptrace_other"), None, "checks of another handler without one");
        if have.landlock {
            for r in [first, second] {
                for k in DENIED_ANYHOW {
                    let got = r.get(k).unwrap_or("(none)");
                    assert!(got.starts_with("denied "), "{k}: {got}\nfull report:\n{}", r.dump());
                }
            }
        }
        assert_gaps(log, have);
        assert_eq!(
            log.matches("reason=granted").count(),
            2,
            "two granted decisions expected:\n{log}"
        );
    }

    fn expected(&self, have: Have) -> Vec<(&'static str, String)> {
        let mut e: Vec<(&'static str, String)> = [
            ("tcp_connect", "allowed"),
            ("write_writable", "allowed"),
            ("write_etc", "denied EACCES"),
            ("read_etc", "allowed"),
            ("read_dev_urandom", "allowed"),
            ("write_dev_null", "allowed"),
            ("kill_handler", "allowed"),
            ("kill_init", "denied EPERM"),
            ("socket_udp", "allowed"),
            ("socket_unix", "allowed"),
            ("abstract_own", "allowed"),
            ("mmap_rw", "allowed"),
            ("no_new_privs", "1"),
            ("core_limit", "0"),
            ("core_limit_max", "0"),
            ("cap_effective", "0"),
            ("cap_permitted", "0"),
            ("cap_inheritable", "0"),
            ("thread", "allowed"),
            ("exec_sh", "allowed"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        e.push(("uid", self.uid.to_string()));
        e.push(("euid", self.uid.to_string()));
        e.push(("gid", self.gid.to_string()));
        if self.root {
            e.push(("read_root", "denied EACCES".into()));
        }
        if Path::new("/usr/bin/logger").exists() {
            e.push(("exec_logger", "allowed".into()));
        }
        if have.landlock {
            for k in [
                "write_tmp",
                "write_var_tmp",
                "write_dev_zero",
                "list_var",
                "list_sys",
                "proc_1",
                "proc_self",
            ] {
                e.push((k, "denied EACCES".into()));
            }
            if Path::new("/dev/shm").is_dir() {
                e.push(("write_dev_shm", "denied EACCES".into()));
            }
            if Path::new("/home").is_dir() {
                e.push(("list_home", "denied EACCES".into()));
            }
            if self.root {
                e.push(("read_home", "denied EACCES".into()));
            }
            // The writable directory is written, not read, so nothing
            // brought there can be run or loaded, by any path to it.
            e.push(("write_program", "allowed".into()));
            for k in [
                "write_readable",
                "read_writable",
                "exec_writable",
                "execveat_writable",
                "proc_fd_reopen",
                "symlink_writable",
            ] {
                e.push((k, "denied EACCES".into()));
            }
            if ld_so().is_some() {
                e.push(("ldso_system", "allowed".into()));
                e.push(("ldso_writable", "denied EACCES".into()));
                e.push(("ldso_proc_fd", "denied EACCES".into()));
            }
        }
        if have.scopes {
            e.push(("abstract_outside", "denied EPERM".into()));
        }
        if have.seccomp {
            for &k in crate::common::SECCOMP_DENIED {
                e.push((k, "denied EPERM".into()));
            }
            e.push(("clone3", "denied ENOSYS".into()));
            e.push(("seccomp_mode", "2".into()));
        }
        e
    }
}

/// What the second probe must report about the first handler.
fn other_expected(have: Have) -> Vec<(&'static str, String)> {
    let mut e = Vec::new();
    if have.landlock {
        e.push(("proc_other", "denied EACCES".to_string()));
    }
    if have.landlock || have.seccomp {
        // The filter has no ptrace or process_vm_readv; Landlock keeps
        // tracing inside the domain.
        e.push(("ptrace_other", "denied EPERM".into()));
        e.push(("process_vm_readv_other", "denied EPERM".into()));
    }
    if have.scopes {
        // Same user id: only the handler's own Landlock domain stops these.
        e.push(("kill_other", "denied EPERM".into()));
        e.push(("pidfd_signal_other", "denied EPERM".into()));
    }
    e
}

/// The log's `confine gap=` lines match what `have` lacks, and there are
/// no others.
fn assert_gaps(log: &str, have: Have) {
    let gaps: Vec<&str> = log.lines().filter(|l| l.contains("confine gap=")).collect();
    // Shown with --nocapture.
    eprintln!("gap lines:\n{}", gaps.join("\n"));
    let landlock: Vec<&&str> = gaps.iter().filter(|l| l.contains("gap=\"landlock: ")).collect();
    let seccomp: Vec<&&str> = gaps.iter().filter(|l| l.contains("gap=\"seccomp: ")).collect();
    assert_eq!(
        gaps.len(),
        landlock.len() + seccomp.len(),
        "unexpected gap lines:\n{log}"
    );
    if !have.landlock {
        assert!(!landlock.is_empty(), "no landlock gap line:\n{log}");
        for l in &landlock {
            assert!(
                l.contains("confine gap=\"landlock: not in this kernel (ENOSYS); "),
                "landlock gap line: {l}"
            );
        }
    } else if !have.scopes {
        for l in &landlock {
            assert!(
                l.contains("confine gap=\"landlock: only ABI "),
                "landlock gap line: {l}"
            );
        }
    } else {
        assert!(landlock.is_empty(), "landlock gap on a full kernel:\n{log}");
    }
    if !have.seccomp {
        assert!(!seccomp.is_empty(), "no seccomp gap line:\n{log}");
        for l in &seccomp {
            assert!(
                l.contains("confine gap=\"seccomp: no system-call filters in this kernel (EINVAL); "),
                "seccomp gap line: {l}"
            );
        }
    } else {
        assert!(seccomp.is_empty(), "seccomp gap line with seccomp:\n{log}");
    }
}

/// Asserts each `(check, outcome)` of `report`, listing every mismatch.
fn expect<S: AsRef<str>>(report: &ProbeReport, expected: &[(&str, S)], log: &str) {
    let wrong: Vec<String> = expected
        .iter()
        .filter_map(|(k, v)| {
            let got = report.get(k);
            (got != Some(v.as_ref())).then(|| format!("  {k}: expected {:?}, got {got:?}", v.as_ref()))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "probe of handler {} (other {}):\n{}\nfull report:\n{}\nlog:\n{log}",
        report.handler,
        report.other,
        wrong.join("\n"),
        report.dump()
    );
}

/// One probe's report.
#[derive(Debug)]
struct ProbeReport {
    /// The pid of the handler that ran it (`%p`).
    handler: u32,
    /// The pid it was given as the other handler's (0: none).
    other: u32,
    lines: Vec<(String, String)>,
}

impl ProbeReport {
    fn get(&self, name: &str) -> Option<&str> {
        self.lines.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn dump(&self) -> String {
        self.lines.iter().map(|(k, v)| format!("  {k} {v}\n")).collect()
    }
}

/// Accepts the probes' connections: answers each `hello` with `other 0`
/// for the first handler and the first handler's pid for every later
/// one, and hands on each complete report. Also listens on the abstract
/// socket the probe tries to reach from inside its domain.
struct Collector {
    addr: SocketAddr,
    reports: Receiver<ProbeReport>,
    _outside: UnixListener,
}

impl Collector {
    fn start() -> Collector {
        use std::os::linux::net::SocketAddrExt;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let name = format!("socks4d-confine-probe-{}", addr.port());
        let outside =
            UnixListener::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let (tx, reports) = mpsc::channel();
        let first: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
        thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (tx, first) = (tx.clone(), first.clone());
                thread::spawn(move || {
                    if let Some(r) = collect(s, &first) {
                        let _ = tx.send(r);
                    }
                });
            }
        });
        Collector {
            addr,
            reports,
            _outside: outside,
        }
    }

    /// The next complete report, or `None` after [`IO_TIMEOUT`].
    fn next(&self) -> Option<ProbeReport> {
        self.reports.recv_timeout(IO_TIMEOUT).ok()
    }
}

/// One probe's exchange; `None` if it broke off before `done`.
fn collect(mut s: TcpStream, first: &Mutex<Option<u32>>) -> Option<ProbeReport> {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut hello = String::new();
    reader.read_line(&mut hello).ok()?;
    let handler: u32 = hello.strip_prefix("hello ")?.trim().parse().ok()?;
    let other = {
        let mut first = first.lock().unwrap();
        *first.get_or_insert(handler)
    };
    let other = if other == handler { 0 } else { other };
    s.write_all(format!("other {other}\n").as_bytes()).ok()?;
    let mut lines = Vec::new();
    for line in reader.lines() {
        let line = line.ok()?;
        if line == "done" {
            return Some(ProbeReport { handler, other, lines });
        }
        let (k, v) = line.split_once(' ')?;
        lines.push((k.to_string(), v.to_string()));
    }
    None
}

/// The files of one run: the rules file whose command runs the probe, the
/// `--writable` directory, and a file of the probe's user outside every
/// allowed directory, whose metadata the probe tries to change.
struct Files {
    _dir: TempDir,
    writable: TempDir,
    conf: PathBuf,
    /// Named with `--readable`, and writable for everyone as far as file
    /// permissions go.
    open_readable: TempDir,
    owned: PathBuf,
    /// The owned file's metadata before the run.
    before: Meta,
}

/// What a metadata change would change: mode, owner, group, and the
/// modification and change times (chown to the same ids still sets the
/// change time).
#[derive(Debug, PartialEq, Eq)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Meta {
    fn of(path: &Path) -> Meta {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).unwrap();
        Meta {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl Files {
    fn new(collector: &Collector, env: &Env) -> Files {
        let dir = TempDir::new("confine");
        let writable = TempDir::new("confine-writable");
        let open_readable = TempDir::new("confine-readable");
        // The probe runs as the user socks4d drops to.
        for d in [&writable, &open_readable] {
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        // Beneath the test's own directory, which no rule allows.
        let owned = dir.path().join("owned");
        std::fs::write(&owned, "the probe's own file\n").unwrap();
        std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&owned, Some(env.uid), Some(env.gid)).unwrap();
        let past = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(&owned)
            .unwrap()
            .set_modified(past)
            .unwrap();
        let conf = dir.path().join("socks4d.conf");
        std::fs::write(
            &conf,
            format!(
                "permit 127.0.0.0/8 : {} {} %p {} {} {}\n",
                probe().display(),
                collector.addr,
                writable.path().display(),
                owned.display(),
                open_readable.path().display()
            ),
        )
        .unwrap();
        let before = Meta::of(&owned);
        Files {
            _dir: dir,
            writable,
            conf,
            open_readable,
            owned,
            before,
        }
    }

    /// Asserts that the owned file's metadata is as it was, or with `false`
    /// that the probe changed it (the filter was not there to stop it).
    fn assert_owned_unchanged(&self, unchanged: bool) {
        let now = Meta::of(&self.owned);
        if unchanged {
            assert_eq!(now, self.before, "the probe changed {}", self.owned.display());
        } else {
            assert_ne!(now, self.before, "the probe could not change {}", self.owned.display());
        }
    }

    /// socks4d's arguments: the rules, the probe's directory readable (it
    /// is outside the system directories), the writable directory.
    fn args(&self) -> Vec<String> {
        vec![
            "--ident".into(),
            "off".into(),
            "--log-stderr".into(),
            "-f".into(),
            self.conf.display().to_string(),
            "--readable".into(),
            probe().parent().unwrap().display().to_string(),
            "--readable".into(),
            self.open_readable.path().display().to_string(),
            "--writable".into(),
            self.writable.path().display().to_string(),
        ]
    }
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The files the `/home` and `/root` checks try to read, world-readable,
/// there while any test of this file needs them.
struct Secrets;

static SECRETS_USERS: Mutex<usize> = Mutex::new(0);

impl Secrets {
    fn acquire() -> Secrets {
        let mut users = SECRETS_USERS.lock().unwrap();
        if *users == 0 {
            for file in [HOME_SECRET, ROOT_SECRET] {
                let dir = Path::new(file).parent().unwrap();
                std::fs::create_dir_all(dir).unwrap();
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
                std::fs::write(file, "secret\n").unwrap();
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        *users += 1;
        Secrets
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let mut users = SECRETS_USERS.lock().unwrap();
        *users -= 1;
        if *users == 0 {
            for file in [HOME_SECRET, ROOT_SECRET] {
                let _ = std::fs::remove_dir_all(Path::new(file).parent().unwrap());
            }
        }
    }
}

/// socks4d in one start mode.
enum Proxy {
    /// stdin or fd 3: one socks4d per client, started by the closure.
    PerConnection {
        start: Box<dyn FnMut() -> Server>,
        servers: Vec<Server>,
    },
    /// `--listen`: one socks4d forking a handler per client.
    Listening { guard: Guard, addr: SocketAddr },
}

/// Where a client's handler should be: this very process (stdin, fd 3),
/// or a child of this process (`--listen`).
enum Handler {
    Is(u32),
    ChildOf(u32),
}

impl Proxy {
    fn per_connection(start: Box<dyn FnMut() -> Server>) -> Proxy {
        Proxy::PerConnection {
            start,
            servers: Vec::new(),
        }
    }

    fn listening(guard: Guard, addr: SocketAddr) -> Proxy {
        Proxy::Listening { guard, addr }
    }

    /// A new client connection, and where its handler should be.
    fn client(&mut self) -> (TcpStream, Handler) {
        match self {
            Proxy::PerConnection { start, servers } => {
                let server = start();
                let client = server.client.try_clone().unwrap();
                let pid = server.child.id();
                servers.push(server);
                (client, Handler::Is(pid))
            }
            Proxy::Listening { guard, addr } => (connect_to(*addr), Handler::ChildOf(guard.0.id())),
        }
    }

    /// Waits for every socks4d process to exit (after SIGTERM under
    /// `--listen`), checks its exit status, and returns all their logs.
    fn stop(self) -> String {
        match self {
            Proxy::PerConnection { servers, .. } => {
                let mut log = String::new();
                for mut s in servers {
                    let _ = s.client.shutdown(Shutdown::Both);
                    let (status, text) = finish(&mut s, EXIT);
                    assert_eq!(status.code(), Some(0), "socks4d exit status; log:\n{text}");
                    log.push_str(&text);
                }
                log
            }
            Proxy::Listening { mut guard, .. } => {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(guard.0.id() as i32, libc::SIGTERM) };
                let status = wait_exit(&mut guard.0, EXIT);
                let log = stderr_of(&mut guard.0);
                assert_eq!(status.code(), Some(0), "socks4d --listen exit status; log:\n{log}");
                log
            }
        }
    }

    /// Kills what still runs and returns the logs, for a failure message.
    fn abort(&mut self) -> String {
        match self {
            Proxy::PerConnection { servers, .. } => servers
                .drain(..)
                .map(|mut s| {
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    stderr_of(&mut s.child)
                })
                .collect(),
            Proxy::Listening { guard, .. } => {
                let _ = guard.0.kill();
                let _ = guard.0.wait();
                stderr_of(&mut guard.0)
            }
        }
    }
}

/// Two relayed connections through `proxy` to the echo server `dst`, the
/// first held open while the second's probe runs; both relays still
/// carry data afterwards. Returns the two probes' reports.
fn two_handlers(proxy: &mut Proxy, collector: &Collector, dst: SocketAddr) -> (ProbeReport, ProbeReport) {
    let mut reports = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (mut client, handler) = proxy.client();
        client.write_all(&connect_req(dst, b"probe")).unwrap();
        let reply = read_reply(&mut client);
        let Some(report) = collector.next() else {
            let log = proxy.abort();
            panic!("no complete probe report within {IO_TIMEOUT:?} (reply {reply:02x?}); log:\n{log}");
        };
        assert_eq!(reply[1], 0x5A, "reply {reply:02x?}");
        match handler {
            Handler::Is(pid) => assert_eq!(report.handler, pid, "%p is not the handler's pid"),
            Handler::ChildOf(parent) => assert_eq!(
                parent_of(report.handler),
                Some(parent),
                "handler {} is not a child of socks4d --listen",
                report.handler
            ),
        }
        reports.push(report);
        clients.push(client);
    }
    for client in &mut clients {
        client.write_all(b"ping").unwrap();
        let mut echoed = [0u8; 4];
        client.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"ping");
        client.shutdown(Shutdown::Write).unwrap();
        assert!(read_all(client).is_empty());
    }
    let second = reports.pop().unwrap();
    (reports.pop().unwrap(), second)
}

/// The parent pid of a live process, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A filter that fails `nr` with `errno` and allows everything else: a
/// kernel that lacks that feature, as far as socks4d can tell.
fn outer_filter(nr: i64, errno: i32) -> BpfProgram {
    let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
    SeccompFilter::new(
        [(nr, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .unwrap()
}

/// Installs `filter` in the child between fork and exec.
fn under(cmd: &mut Command, filter: BpfProgram) {
    // SAFETY: apply_filter makes two system calls (prctl, seccomp) and
    // allocates nothing on success; on failure only errno is read.
    unsafe {
        cmd.pre_exec(move || seccompiler::apply_filter(&filter).map_err(|_| std::io::Error::last_os_error()));
    }
}

/// As `spawn_stdin`, under `filter`.
fn spawn_stdin_under(filter: &BpfProgram, args: &[&str]) -> Server {
    let (client, server) = socket_pair();
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::from(OwnedFd::from(server)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    under(&mut cmd, filter.clone());
    let child = cmd.spawn().expect("start socks4d");
    Server { child, client }
}

/// As `spawn_listen`, under `filter`.
fn spawn_listen_under(filter: &BpfProgram, args: &[&str]) -> (Guard, SocketAddr) {
    spawn_listen_with(args, |cmd| under(cmd, filter.clone()))
}
