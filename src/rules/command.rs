//! A rule's or a hook's shell command: its `%` substitutions, each value
//! made an operand, and its run. A command gets a known environment and
//! no descriptor beyond 0 to 2; the handler waits for it, up to a time
//! limit after which its process group is killed; and a command that
//! cannot start, fails or is killed gets a `command` log line with the
//! first line of its error output.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::thread::Scope;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::audit::{self, Line, Log};

/// At most this many bytes of one substituted value reach a command.
pub const MAX_SUBST_LEN: usize = 256;
/// How long a `%A` or `%Z` reverse lookup may take before the IP is used.
pub const NAME_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// A command's whole environment: this `PATH` and nothing else (the shell
/// adds `PWD`).
pub const COMMAND_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Where a command starts.
const COMMAND_DIR: &str = "/";
/// After the time limit's SIGTERM, how long the command's process group
/// gets before SIGKILL, and after SIGKILL, how long it is waited for.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Once the shell has exited, how often its process group is looked at
/// for processes it left running.
const GROUP_POLL: Duration = Duration::from_millis(100);
/// How much of a command's error output is kept for its log line: the
/// start of its first line (the log cuts it further).
const MAX_STDERR_LINE: usize = 512;

/// What a command's `%` escapes stand for.
#[derive(Debug, Clone, Default)]
pub struct Subst {
    /// `%a`; `%A` is its host name, or it.
    pub client: Option<IpAddr>,
    pub client_name: Option<String>,
    /// `%c`: `connect` or `bind`.
    pub command: &'static str,
    /// `%p`.
    pub pid: u32,
    /// `%z`; `%Z` is its host name, or it.
    pub dst: Option<IpAddr>,
    pub dst_name: Option<String>,
    /// `%s`; `%S` is its service name, or it.
    pub port: u16,
    pub service: Option<String>,
    /// `%U`: what identd said, or `unknown`.
    pub ident_user: Option<Vec<u8>>,
    /// `%u`: the USERID the client claimed.
    pub user: Vec<u8>,
}

/// Expands the `%` escapes of `template`. Every substituted value passes
/// through [`sanitize`]; the template itself is the administrator's and
/// is kept as written. An unknown escape is kept as written.
pub fn expand(template: &[u8], s: &Subst) -> Vec<u8> {
    let ip = |a: Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let mut out = Vec::with_capacity(template.len());
    let mut it = template.iter().copied().peekable();
    while let Some(b) = it.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let value: Vec<u8> = match it.peek() {
            Some(b'%') => {
                it.next();
                out.push(b'%');
                continue;
            }
            Some(b'A') => s.client_name.clone().unwrap_or_else(|| ip(s.client)).into_bytes(),
            Some(b'a') => ip(s.client).into_bytes(),
            Some(b'c') => s.command.as_bytes().to_vec(),
            Some(b'p') => s.pid.to_string().into_bytes(),
            Some(b'S') => s.service.clone().unwrap_or_else(|| s.port.to_string()).into_bytes(),
            Some(b's') => s.port.to_string().into_bytes(),
            Some(b'U') => s.ident_user.clone().unwrap_or_else(|| b"unknown".to_vec()),
            Some(b'u') => s.user.clone(),
            Some(b'Z') => s.dst_name.clone().unwrap_or_else(|| ip(s.dst)).into_bytes(),
            Some(b'z') => ip(s.dst).into_bytes(),
            _ => {
                out.push(b'%');
                continue;
            }
        };
        it.next();
        out.extend(sanitize(&value));
    }
    out
}

/// Makes a substituted value one shell word that is an operand, never an
/// option or a path: of its first [`MAX_SUBST_LEN`] bytes, each byte
/// outside `[0-9A-Za-z!@%_=+:,.-]` (so `/`, `\`, blanks, quotes, shell
/// syntax, control bytes and each byte of a non-ASCII character), a `-`,
/// `+` or `.` as the first byte, and a `.` right after a `.` become `_`;
/// an empty value becomes `_`. What comes out is never empty, never
/// begins with `-`, `+` or `.`, and holds no `/` and no `..`.
pub fn sanitize(value: &[u8]) -> Vec<u8> {
    let value = &value[..value.len().min(MAX_SUBST_LEN)];
    if value.is_empty() {
        return b"_".to_vec();
    }
    let mut prev = None;
    value
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let kept = b.is_ascii_alphanumeric() || b"!@%_=+:,.-".contains(&b);
            let leading = i == 0 && b"-+.".contains(&b);
            let dot_dot = b == b'.' && prev == Some(b'.');
            prev = Some(b);
            if kept && !leading && !dot_dot {
                b
            } else {
                b'_'
            }
        })
        .collect()
}

/// Whom a command runs for, as its log line names them.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client: Option<SocketAddr>,
    /// The `rule=` label of the line that holds the command: the deciding
    /// rule, or the `#NO_IDENTD:` or `#BAD_ID:` line.
    pub rule: String,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Exit status 0, and no process left in its group.
    Done,
    /// The shell's exit status, not 0; the first line of error output.
    Exit(i32, Option<Vec<u8>>),
    /// The shell was killed by this signal, not by socks4d.
    Signal(Signal, Option<Vec<u8>>),
    /// Processes of its group still ran at the time limit: the group was
    /// sent this signal (SIGTERM, then SIGKILL if SIGTERM was not enough).
    Timeout(Duration, Signal, Option<Vec<u8>>),
    /// No shell could be started: why.
    NotStarted(String),
}

impl Ended {
    /// The `command` log line, for every end but [`Ended::Done`].
    pub fn line(&self, origin: &Origin) -> Option<Line> {
        let line = Line::new("command")
            .opt("client", origin.client.map(audit::addr))
            .field("rule", &origin.rule);
        Some(match self {
            Ended::Done => return None,
            Ended::Exit(code, err) => line.field("exit", code).opt_quoted("stderr", err.as_deref()),
            Ended::Signal(sig, err) => line.field("signal", sig.as_str()).opt_quoted("stderr", err.as_deref()),
            Ended::Timeout(limit, sig, err) => line
                .field("timeout", limit.as_secs())
                .field("killed", sig.as_str())
                .opt_quoted("stderr", err.as_deref()),
            Ended::NotStarted(why) => line.quoted("failed", why.as_bytes()),
        })
    }
}

/// The commands of one connection. Each runs on a thread of `scope`, so
/// the end of the scope, and with it the handler, waits until every
/// command has ended or has been killed at `limit`.
pub struct Commands<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    limit: Duration,
    log: &'env Log,
    /// This process has been made ready to wait for commands.
    ready: Cell<bool>,
}

impl<'scope, 'env> Commands<'scope, 'env> {
    pub fn new(scope: &'scope Scope<'scope, 'env>, limit: Duration, log: &'env Log) -> Self {
        Commands {
            scope,
            limit,
            log,
            ready: Cell::new(false),
        }
    }

    /// Before the first command: makes this process the reaper of what
    /// its commands leave behind (so their processes are counted and
    /// collected here, whatever process 1 does) and lets it collect their
    /// exit statuses. A connection without commands is spared the calls.
    fn make_ready(&self) {
        if self.ready.replace(true) {
            return;
        }
        // SAFETY: prctl and signal with constant arguments change only
        // this process's attributes. SIGCHLD at SIG_IGN, as a parent may
        // have left it, would make the kernel reap the commands unseen.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        }
    }

    /// Runs `template`, expanded, with `/bin/sh -c` on a thread of its
    /// own, so that the exchange never waits for it; `%A` and `%Z` are
    /// looked up there first, each within [`NAME_LOOKUP_TIMEOUT`]. The
    /// thread waits for the command (see [`Spawned::wait`]) and writes
    /// its `command` line.
    pub fn start(&self, template: Vec<u8>, mut subst: Subst, origin: Origin) {
        self.make_ready();
        let (limit, log) = (self.limit, self.log);
        let failed_origin = origin.clone();
        let run = move || {
            if subst.client_name.is_none() && template.windows(2).any(|w| w == b"%A") {
                subst.client_name = subst.client.and_then(host_name);
            }
            if subst.dst_name.is_none() && template.windows(2).any(|w| w == b"%Z") {
                subst.dst_name = subst.dst.and_then(host_name);
            }
            let ended = match spawn(&expand(&template, &subst)) {
                Ok(child) => child.wait(limit),
                Err(e) => Ended::NotStarted(format!("/bin/sh: {e}")),
            };
            if let Some(line) = ended.line(&origin) {
                log.warning(line.as_str());
            }
        };
        let thread = std::thread::Builder::new()
            .name("command".into())
            .spawn_scoped(self.scope, run);
        if let Err(e) = thread {
            let ended = Ended::NotStarted(format!("thread: {e}"));
            if let Some(line) = ended.line(&failed_origin) {
                log.warning(line.as_str());
            }
        }
    }
}

/// A shell started by [`spawn`].
pub struct Spawned {
    pid: Pid,
    /// The read end of its stderr, read for the log line.
    stderr: File,
    /// Readable once the shell has exited; `None` on kernels without
    /// `pidfd_open` (before 5.3), where the shell is looked at every
    /// [`GROUP_POLL`].
    pidfd: Option<OwnedFd>,
}

/// Starts `/bin/sh -c command` in a process group of its own, in `/`,
/// with [`COMMAND_PATH`] as its whole environment, stdin and stdout on
/// /dev/null, stderr on a pipe, and every other descriptor closed.
pub fn spawn(command: &[u8]) -> io::Result<Spawned> {
    // The standard streams are set up here rather than by std: the
    // client socket may be fd 0 and be closed by the exchange at any
    // moment, and std's own /dev/null or pipe could then take number 0
    // and be overwritten by the next stream it sets up. These are kept
    // at 3 and above, and put on 0 to 2 in the child.
    let null = above_std(File::options().read(true).write(true).open("/dev/null")?.into())?;
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (read, write) = (above_std(read)?, above_std(write)?);
    let (null_fd, write_fd) = (null.as_raw_fd(), write.as_raw_fd());
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(OsStr::from_bytes(command))
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .current_dir(COMMAND_DIR)
        .process_group(0);
    // SAFETY: the closure makes only async-signal-safe system calls, on
    // descriptors that stay open in the parent until `spawn` returns.
    unsafe {
        cmd.pre_exec(move || child_fds(null_fd, write_fd));
    }
    let child = cmd.spawn()?;
    // Dropping `child` neither waits nor kills; the shell is reaped by
    // [`Spawned::wait`].
    let pid = Pid::from_raw(child.id() as i32);
    Ok(Spawned {
        pid,
        stderr: File::from(read),
        pidfd: pidfd_open(pid),
    })
}

/// `fd`, moved to a number of 3 or more if it has one of 0 to 2.
fn above_std(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let moved = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: a descriptor just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// In the child, before exec: `null` on 0 and 1, `stderr` on 2, and every
/// descriptor from 3 up marked close-on-exec, whatever socks4d inherited
/// or opened. One `close_range` call; before Linux 5.11, one `fcntl` per
/// descriptor up to the descriptor limit.
fn child_fds(null: RawFd, stderr: RawFd) -> io::Result<()> {
    for (from, to) in [(null, 0), (null, 1), (stderr, 2)] {
        // SAFETY: dup2 onto a standard descriptor; `from` is 3 or more,
        // so the copy has close-on-exec cleared.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: close_range only changes descriptor flags.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return Ok(());
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`; fcntl on any number only
    // touches the descriptor table.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        let top = lim.rlim_cur.min(libc::c_int::MAX as libc::rlim_t) as libc::c_int;
        for fd in 3..top {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor, owned here, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // SAFETY: a descriptor just returned to us.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Spawned {
    /// Waits until the shell has exited and no process is left in its
    /// group, reading its error output meanwhile. A group still running
    /// `limit` after the start is sent SIGTERM, then after [`KILL_GRACE`]
    /// SIGKILL. Collects the group's processes that this process has
    /// come to reap.
    pub fn wait(mut self, limit: Duration) -> Ended {
        let mut err = FirstLine::default();
        let mut status = None;
        if self.run_until(Instant::now() + limit, &mut status, &mut err) {
            return self.ended(status, err);
        }
        let mut sent = Signal::SIGTERM;
        for sig in [Signal::SIGTERM, Signal::SIGKILL] {
            sent = sig;
            let _ = killpg(self.pid, sig);
            if self.run_until(Instant::now() + KILL_GRACE, &mut status, &mut err) {
                break;
            }
        }
        Ended::Timeout(limit, sent, err.take())
    }

    /// What a command that ended before its limit gets.
    fn ended(&self, status: Option<WaitStatus>, mut err: FirstLine) -> Ended {
        match status {
            Some(WaitStatus::Exited(_, 0)) => Ended::Done,
            Some(WaitStatus::Exited(_, code)) => Ended::Exit(code, err.take()),
            Some(WaitStatus::Signaled(_, sig, _)) => Ended::Signal(sig, err.take()),
            // Reaped by someone else: nothing to say about it.
            _ => Ended::Done,
        }
    }

    /// Runs until the shell has exited and its group is empty (true), or
    /// until `deadline` (false). The shell's status goes into `status`.
    fn run_until(&mut self, deadline: Instant, status: &mut Option<WaitStatus>, err: &mut FirstLine) -> bool {
        loop {
            self.reap(status);
            if status.is_some() && !group_alive(self.pid) {
                // What the group wrote before it ended.
                while !err.closed && !err.done && readable(&self.stderr, PollTimeout::ZERO) {
                    err.read_from(&mut self.stderr);
                }
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return false;
            };
            let shell_watched = status.is_none() && self.pidfd.is_some();
            let wait = if shell_watched { left } else { left.min(GROUP_POLL) };
            let mut fds = Vec::with_capacity(2);
            if !err.closed {
                fds.push(PollFd::new(self.stderr.as_fd(), PollFlags::POLLIN));
            }
            if let (true, Some(p)) = (shell_watched, &self.pidfd) {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, poll_timeout(wait)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => std::thread::sleep(wait),
            }
            if !err.closed && fds[0].revents().is_some_and(|r| r.intersects(READY)) {
                err.read_from(&mut self.stderr);
            }
        }
    }

    /// Collects every exited process of the group that is this process's
    /// child: the shell, and what it left that has come to this process.
    fn reap(&self, status: &mut Option<WaitStatus>) {
        loop {
            match waitid(Id::PGid(self.pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => {
                    if s.pid() == Some(self.pid) {
                        *status = Some(s);
                    }
                }
            }
        }
    }
}

/// What makes a pipe worth a `read`: data, or its last writer gone.
const READY: PollFlags = PollFlags::POLLIN.union(PollFlags::POLLHUP).union(PollFlags::POLLERR);

/// Whether a `read` of `pipe` would not block, waiting up to `timeout`.
fn readable(pipe: &File, timeout: PollTimeout) -> bool {
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0)
        && fds[0].revents().is_some_and(|r| r.intersects(READY))
}

/// `d` as a `poll` timeout, rounded up to whole milliseconds.
fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

/// Whether any process is left in process group `group`.
fn group_alive(group: Pid) -> bool {
    kill(Pid::from_raw(-group.as_raw()), None).is_ok()
}

/// The first line of a command's error output, and whether the pipe has
/// closed; the rest is read and dropped, so the command never blocks on
/// a full pipe.
#[derive(Default)]
struct FirstLine {
    text: Vec<u8>,
    /// A newline was seen, or the text is full.
    done: bool,
    closed: bool,
}

impl FirstLine {
    /// Reads what the pipe holds now.
    fn read_from(&mut self, pipe: &mut File) {
        let mut buf = [0u8; 4096];
        match pipe.read(&mut buf) {
            Ok(0) => self.closed = true,
            Ok(n) => self.keep(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.closed = true,
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        let line = match bytes.iter().position(|&b| b == b'\n') {
            Some(end) => {
                self.done = true;
                &bytes[..end]
            }
            None => bytes,
        };
        let room = MAX_STDERR_LINE - self.text.len();
        self.text.extend_from_slice(&line[..line.len().min(room)]);
        if self.text.len() == MAX_STDERR_LINE {
            self.done = true;
        }
    }

    /// The line, without a trailing CR; `None` when there was none.
    fn take(&mut self) -> Option<Vec<u8>> {
        if self.text.last() == Some(&b'\r') {
            self.text.pop();
        }
        (!self.text.is_empty()).then(|| std::mem::take(&mut self.text))
    }
}

/// The host name of `ip` by reverse lookup, or `None` after
/// [`NAME_LOOKUP_TIMEOUT`].
fn host_name(ip: IpAddr) -> Option<String> {
    let deadline = crate::net::Deadline::after(NAME_LOOKUP_TIMEOUT);
    crate::net::on_thread(move || getnameinfo(ip), deadline, "reverse lookup")
        .ok()
        .flatten()
}

fn getnameinfo(ip: IpAddr) -> Option<String> {
    use nix::libc;
    use nix::sys::socket::{SockaddrLike, SockaddrStorage};
    let sa = SockaddrStorage::from(SocketAddr::new(ip, 0));
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: `sa` is a valid socket address of `sa.len()` bytes; `host`
    // is writable for its length, and getnameinfo NUL-terminates it.
    let rc = unsafe {
        libc::getnameinfo(
            sa.as_ptr(),
            sa.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: NUL-terminated by getnameinfo on success.
    let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) };
    name.to_str().ok().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_and_sanitising() {
        let s = Subst {
            client: Some("192.0.2.10".parse().unwrap()),
            client_name: Some("client.example".into()),
            command: "connect",
            pid: 42,
            dst: Some("198.51.100.7".parse().unwrap()),
            dst_name: None,
            port: 23,
            service: Some("telnet".into()),
            ident_user: None,
            user: b"bob; rm -rf / `x` $(y) 'q' \"r\" \\ a|b&c>d\n".to_vec(),
        };
        let out = expand(b"%A %a %c %p %S %s %U %Z %z %% %q %", &s);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "client.example 192.0.2.10 connect 42 telnet 23 unknown 198.51.100.7 198.51.100.7 % %q %"
        );
        let out = expand(b"echo %u", &s);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "echo bob__rm_-rf____x____y___q___r____a_b_c_d_"
        );
        assert_eq!(sanitize(b"0-9A-Za-z!@%_=+:,.-"), b"0-9A-Za-z!@%_=+:,.-");
        assert_eq!(sanitize(&[b'a'; 1000]).len(), MAX_SUBST_LEN);
    }

    #[test]
    fn values_are_operands_never_options_or_paths() {
        for (value, want) in [
            (&b"--help"[..], &b"_-help"[..]),
            (b"-V", b"_V"),
            (b"--server=127.0.0.1", b"_-server=127.0.0.1"),
            (b"+%s", b"_%s"),
            (b"-", b"_"),
            (b".", b"_"),
            (b"..", b"__"),
            (b"...", b"___"),
            (b".profile", b"_profile"),
            (b"a/../b", b"a_.__b"),
            (b"a..b", b"a._b"),
            (b"../../escaped", b"___.__escaped"),
            (b"/etc/passwd", b"_etc_passwd"),
            (b"C:\\x", b"C:_x"),
            ("ü".as_bytes(), b"__"),
            (b"", b"_"),
            (b"a-b", b"a-b"),
            (b"host.example.", b"host.example."),
            (b"::1", b"::1"),
            (b"bob@example", b"bob@example"),
            // The table of socks4d.conf(5).
            (b"--port=5514", b"_-port=5514"),
            (b"../../etc/passwd", b"___.__etc_passwd"),
            (b"alice;rm -rf ~", b"alice_rm_-rf__"),
        ] {
            assert_eq!(sanitize(value), want, "{:?}", String::from_utf8_lossy(value));
        }
        // A value cut at its limit is cut before it is mapped.
        let mut long = vec![b'-'];
        long.extend([b'.'; 300]);
        let out = sanitize(&long);
        assert_eq!(out.len(), MAX_SUBST_LEN);
        assert!(!out.windows(2).any(|w| w == b".."));
        // Values are mapped one by one; the template's own text is not.
        let s = Subst {
            user: b"..".to_vec(),
            ..Default::default()
        };
        assert_eq!(expand(b"logger -- user=%u ../%u", &s), b"logger -- user=__ ../__");
    }

    #[test]
    fn unknown_and_trailing_escapes_stay_as_written() {
        let s = Subst {
            port: 80,
            ..Default::default()
        };
        assert_eq!(expand(b"%x%s%", &s), b"%x80%");
        assert_eq!(expand(b"", &s), b"");
        // No client address known: %a and %A are `_`.
        assert_eq!(expand(b"[%a][%A]", &s), b"[_][_]");
    }

    #[test]
    fn the_first_line_of_error_output_is_kept() {
        let mut e = FirstLine::default();
        e.keep(b"sh: 1: cannot");
        e.keep(b" create /tmp/x\r\nsecond line\n");
        e.keep(b"third\n");
        assert_eq!(e.take().as_deref(), Some(&b"sh: 1: cannot create /tmp/x"[..]));
        let mut e = FirstLine::default();
        e.keep(&[b'x'; 3000]);
        assert_eq!(e.take().map(|t| t.len()), Some(MAX_STDERR_LINE));
        assert_eq!(FirstLine::default().take(), None);
    }

    #[test]
    fn command_lines() {
        let origin = Origin {
            client: Some("192.0.2.10:4242".parse().unwrap()),
            rule: "/etc/socks4d.conf:3".into(),
        };
        let line = |e: Ended| e.line(&origin).map(|l| l.as_str().to_string());
        assert_eq!(line(Ended::Done), None);
        assert_eq!(
            line(Ended::Exit(2, Some(b"sh: 1: \"x\"\x1b".to_vec()))).unwrap(),
            "command client=192.0.2.10:4242 rule=/etc/socks4d.conf:3 exit=2 stderr=\"sh: 1: \\\"x\\\"\\x1b\""
        );
        assert_eq!(
            line(Ended::Signal(Signal::SIGSEGV, None)).unwrap(),
            "command client=192.0.2.10:4242 rule=/etc/socks4d.conf:3 signal=SIGSEGV stderr=-"
        );
        assert_eq!(
            line(Ended::Timeout(Duration::from_secs(60), Signal::SIGKILL, None)).unwrap(),
            "command client=192.0.2.10:4242 rule=/etc/socks4d.conf:3 timeout=60 killed=SIGKILL stderr=-"
        );
        assert_eq!(
            line(Ended::NotStarted("/bin/sh: Resource temporarily unavailable".into())).unwrap(),
            "command client=192.0.2.10:4242 rule=/etc/socks4d.conf:3 failed=\"/bin/sh: Resource temporarily unavailable\""
        );
    }
}
