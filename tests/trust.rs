//! Which files socks4d believes. The rules file, the user-list files it
//! names, the route file and the frozen file must be regular files of root
//! (or of the user socks4d was started as, when that is not root), that no
//! one else may write, in directories no one else may change; otherwise
//! there is no service (0x5B, reason=config-error) and the log names the
//! file and why. No file is opened in a way that could block.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const ARGS: &[&str] = &["--ident", "off", "--log-stderr"];
/// A refusal comes at once: nothing may wait on a FIFO.
const PROMPT: Duration = Duration::from_secs(5);

/// The mode of each test's directory, root's as /etc is: no sticky bit
/// to lean on.
const DIR_MODE: u32 = 0o755;

fn chmod(path: impl AsRef<Path>, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: impl AsRef<Path>, uid: u32) {
    nix::unistd::chown(path.as_ref(), Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
}

/// Writes `text` to `path`, mode `mode` exactly (the umask aside).
fn write(path: &str, text: &str, mode: u32) -> String {
    std::fs::write(path, text).unwrap();
    chmod(path, mode);
    path.to_string()
}

fn mkfifo(path: &str) -> String {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    path.to_string()
}

fn nobody() -> u32 {
    system_user("nobody").uid.as_raw()
}

/// One CONNECT as `user` to an echo destination, socks4d started inetd
/// style under `conf` with `extra`: the reply code, how long it took, and
/// the log.
fn inetd(conf: &str, extra: &[&str], user: &[u8]) -> (u8, Duration, String) {
    let dst = echo_dest();
    let mut args: Vec<&str> = ARGS.to_vec();
    args.extend_from_slice(&["-f", conf]);
    args.extend_from_slice(extra);
    let e = one_request(&args, &connect_req(dst.addr, user), |_| {});
    let code = e.code();
    assert_eq!(e.status.code(), Some(0), "{}", e.log);
    (code, e.took, e.log)
}

/// `socks4d --check-config` plus `args`, which must end within `PROMPT`:
/// exit status, stdout, stderr.
fn check_config(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .arg("--check-config")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, PROMPT);
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (status.code().unwrap_or(-1), out, stderr_of(&mut child))
}

/// Whether a CONNECT's end line is in `log`.
fn connect_ended(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("]: end ") && l.contains(" cmd=connect "))
}

/// Asserts no service: 0x5B, reason=config-error, and `why` in a config
/// error line and in the decision line's detail.
fn assert_refused(code: u8, log: &str, why: &str) {
    assert_eq!(code, 0x5B, "{log}");
    // The CONNECT's (under --listen, the readiness probe's comes first).
    let decision = log
        .lines()
        .find(|l| l.contains("]: decision ") && l.contains(" cmd=connect "))
        .unwrap_or_else(|| panic!("no decision line:\n{log}"));
    assert!(decision.contains("reason=config-error"), "{decision}");
    assert!(
        log.lines()
            .any(|l| l.contains("config error: ") && l.contains(why) && l.contains("no service until it is fixed")),
        "no config error line with {why:?}:\n{log}"
    );
    assert!(decision.contains(why), "{why:?} not in {decision}");
}

#[test]
fn a_user_list_anyone_may_write_is_not_believed() {
    if !require_root() {
        return;
    }
    let dir = TempDir::with_mode("trust-mallory", DIR_MODE);
    let users = write(&format!("{dir}/users"), "alice\n", 0o666);
    let conf = write(
        &format!("{dir}/socks4d.conf"),
        &format!("permit *={users} 127.0.0.0/8\n"),
        0o644,
    );
    // What the service user can do to a file of mode 0666.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&users)
        .unwrap()
        .write_all(b"mallory\n")
        .unwrap();
    let why = format!("user list file {users}: writable by group and others (mode 0666)");
    for user in [&b"mallory"[..], b"alice"] {
        let (code, _, log) = inetd(&conf, &[], user);
        assert_refused(code, &log, &why);
    }
    let (code, _, err) = check_config(&["-f", &conf]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&why), "{err}");

    let l = Listening::start(&["-f", &conf]);
    let (code, _) = l.connect(b"mallory");
    let log = l.wait_log(connect_ended);
    assert_refused(code.expect("a reply"), &log, &why);

    // Fixed: served again.
    chmod(&users, 0o644);
    let (code, _, log) = inetd(&conf, &[], b"mallory");
    assert_eq!(code, 0x5A, "{log}");
}

#[test]
fn a_user_list_of_the_service_user_is_not_believed() {
    if !require_root() {
        return;
    }
    let dir = TempDir::with_mode("trust-owner", DIR_MODE);
    let users = write(&format!("{dir}/users"), "alice\n", 0o644);
    chown(&users, nobody());
    let conf = write(
        &format!("{dir}/socks4d.conf"),
        &format!("permit *={users} 127.0.0.0/8\n"),
        0o644,
    );
    let why = format!(
        "user list file {users}: owned by uid {}, the user socks4d serves as (--user nobody)",
        nobody()
    );
    let (code, _, log) = inetd(&conf, &[], b"alice");
    assert_refused(code, &log, &why);
    // Named in numbers, it is known just the same.
    let numeric = format!("{}:{}", nobody(), nobody());
    let (code, _, log) = inetd(&conf, &["--user", &numeric], b"alice");
    assert_refused(
        code,
        &log,
        &format!(
            "owned by uid {}, the user socks4d serves as (--user {numeric})",
            nobody()
        ),
    );
    // Another user's (neither root nor the --user) is refused too.
    chown(&users, 1);
    let (code, _, log) = inetd(&conf, &[], b"alice");
    assert_refused(code, &log, &format!("user list file {users}: owned by uid 1, not root"));
    let (code, _, err) = check_config(&["-f", &conf]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{users}: owned by uid 1")), "{err}");

    let l = Listening::start(&["-f", &conf]);
    let (code, _) = l.connect(b"alice");
    let log = l.wait_log(connect_ended);
    assert_refused(code.expect("a reply"), &log, &format!("{users}: owned by uid 1"));
}

#[test]
fn a_group_writable_rules_file_is_not_believed() {
    if !require_root() {
        return;
    }
    let dir = TempDir::with_mode("trust-group", DIR_MODE);
    let conf = write(&format!("{dir}/socks4d.conf"), "permit 127.0.0.0/8\n", 0o664);
    let why = format!("{conf}: writable by group (mode 0664)");
    let (code, _, log) = inetd(&conf, &[], b"alice");
    assert_refused(code, &log, &why);
    let (code, out, err) = check_config(&["-f", &conf]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&why), "{err}");

    let l = Listening::start(&["-f", &conf]);
    let (code, _) = l.connect(b"alice");
    let log = l.wait_log(connect_ended);
    assert_refused(code.expect("a reply"), &log, &why);
}

#[test]
fn a_rules_file_in_a_directory_others_may_change_is_not_believed() {
    if !require_root() {
        return;
    }
    // The service user's directory: it may rename another file into place.
    let dir = TempDir::with_mode("trust-dir", DIR_MODE);
    let conf = write(&format!("{dir}/socks4d.conf"), "permit 127.0.0.0/8\n", 0o644);
    chown(&dir, nobody());
    let why = format!(
        "{conf}: directory {dir}: owned by uid {}, the user socks4d serves as (--user nobody)",
        nobody()
    );
    let (code, _, log) = inetd(&conf, &[], b"alice");
    assert_refused(code, &log, &why);
    let (code, _, err) = check_config(&["-f", &conf]);
    assert_eq!(code, 1);
    assert!(err.contains(&why), "{err}");
    let l = Listening::start(&["-f", &conf]);
    let (code, _) = l.connect(b"alice");
    let log = l.wait_log(connect_ended);
    assert_refused(code.expect("a reply"), &log, &why);
    drop(l);

    // Root's, but anyone may write it and it is not sticky.
    chown(&dir, 0);
    chmod(&dir, 0o777);
    let (code, _, log) = inetd(&conf, &[], b"alice");
    assert_refused(
        code,
        &log,
        &format!("{conf}: directory {dir}: writable by group and others (mode 0777)"),
    );

    // Sticky, as /tmp: others cannot rename or remove root's file there.
    chmod(&dir, 0o1777);
    let (code, _, log) = inetd(&conf, &[], b"alice");
    assert_eq!(code, 0x5A, "{log}");
    // But a file of theirs in it is theirs.
    chown(&conf, nobody());
    let (code, _, log) = inetd(&conf, &[], b"alice");
    assert_refused(code, &log, &format!("{conf}: owned by uid {}", nobody()));
    chown(&conf, 0);
    // And so is a symbolic link they put there, wherever it points.
    let link = format!("{dir}/link.conf");
    std::os::unix::fs::symlink(&conf, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(nobody()), None).unwrap();
    let (code, _, log) = inetd(&link, &[], b"alice");
    assert_refused(
        code,
        &log,
        &format!("{link}: symbolic link {link}: owned by uid {}", nobody()),
    );
}

#[test]
fn a_fifo_never_blocks() {
    if !require_root() {
        return;
    }
    let dir = TempDir::with_mode("trust-fifo", DIR_MODE);
    let users = mkfifo(&format!("{dir}/users"));
    let conf = write(
        &format!("{dir}/socks4d.conf"),
        &format!("permit *={users} 127.0.0.0/8\n"),
        0o644,
    );
    let why = format!("user list file {users}: not a regular file (a FIFO)");
    let (code, took, log) = inetd(&conf, &[], b"alice");
    assert!(took < PROMPT, "{took:?}");
    assert_refused(code, &log, &why);
    let (code, _, err) = check_config(&["-f", &conf]);
    assert_eq!(code, 1);
    assert!(err.contains(&why), "{err}");
    let l = Listening::start(&["-f", &conf]);
    let (code, took) = l.connect(b"alice");
    assert!(took < PROMPT, "{took:?}");
    let log = l.wait_log(connect_ended);
    assert_refused(code.expect("a reply"), &log, &why);
    drop(l);

    // The rules file itself.
    let fifo = mkfifo(&format!("{dir}/fifo.conf"));
    let why = format!("{fifo}: not a regular file (a FIFO)");
    let (code, took, log) = inetd(&fifo, &[], b"alice");
    assert!(took < PROMPT, "{took:?}");
    assert_refused(code, &log, &why);
    let (code, _, err) = check_config(&["-f", &fifo]);
    assert_eq!(code, 1);
    assert!(err.contains(&why), "{err}");
    let l = Listening::start(&["-f", &fifo]);
    let (code, took) = l.connect(b"alice");
    assert!(took < PROMPT, "{took:?}");
    let log = l.wait_log(connect_ended);
    assert_refused(code.expect("a reply"), &log, &why);
}

#[test]
fn a_route_file_is_held_to_the_same() {
    if !require_root() {
        return;
    }
    let dir = TempDir::with_mode("trust-route", DIR_MODE);
    let conf = write(&format!("{dir}/socks4d.conf"), "permit 127.0.0.0/8\n", 0o644);
    let routes = write(&format!("{dir}/socks4d.route"), "127.0.0.1 0.0.0.0/0\n", 0o646);
    let why = format!("{routes}: writable by others (mode 0646)");
    let (code, _, log) = inetd(&conf, &["--route", &routes], b"alice");
    assert_refused(code, &log, &why);
    let (code, _, err) = check_config(&["-f", &conf, "--route", &routes]);
    assert_eq!(code, 1);
    assert!(err.contains(&why), "{err}");
    let fifo = mkfifo(&format!("{dir}/fifo.route"));
    let (code, took, log) = inetd(&conf, &["--route", &fifo], b"alice");
    assert!(took < PROMPT, "{took:?}");
    assert_refused(code, &log, &format!("{fifo}: not a regular file (a FIFO)"));
    chmod(&routes, 0o644);
    let (code, _, log) = inetd(&conf, &["--route", &routes], b"alice");
    assert_eq!(code, 0x5A, "{log}");
}

#[test]
fn started_unprivileged_its_own_files_are_believed() {
    if !require_root() {
        return;
    }
    // socks4d started as uid 1 (daemon): root's files and its own are
    // believed, unless it is also the --user.
    let dir = TempDir::with_mode("trust-self", DIR_MODE);
    let conf = write(&format!("{dir}/socks4d.conf"), "permit 127.0.0.0/8\n", 0o644);
    chown(&conf, 1);
    let run = |extra: &[&str]| {
        let dst = echo_dest();
        let mut args: Vec<&str> = ARGS.to_vec();
        args.extend_from_slice(&["-f", &conf]);
        args.extend_from_slice(extra);
        let mut s = spawn_on_with(socket_pair(), &args, &[], |c| {
            c.uid(1).gid(1);
        });
        s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
        let code = read_reply(&mut s.client)[1];
        let _ = s.client.shutdown(std::net::Shutdown::Write);
        let (_, log) = finish(&mut s, EXIT);
        (code, log)
    };
    let (code, log) = run(&[]);
    assert_eq!(code, 0x5A, "{log}");
    let (code, log) = run(&["--user", "1:1"]);
    assert_refused(
        code,
        &log,
        &format!("{conf}: owned by uid 1, the user socks4d serves as (--user 1:1)"),
    );
    chown(&conf, 2);
    let (code, log) = run(&[]);
    assert_refused(
        code,
        &log,
        &format!("{conf}: owned by uid 2, neither root nor uid 1 that socks4d runs as"),
    );
}
