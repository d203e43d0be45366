//! Where the client socket comes from: fd 3 under `LISTEN_FDS` (a systemd
//! socket unit with `Accept=yes`), or fd 0 (inetd `nowait`, xinetd,
//! `StandardInput=socket`). Or, when what was passed is a listening socket
//! (a socket unit with `Accept=no`, inetd `wait`), the listening sockets,
//! which [`crate::listen`] then serves as `--listen` does. Who the client
//! is, a PROXY header included, is the session's to find out.

use std::fs::OpenOptions;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt, SockType};
use nix::sys::stat::{fstat, SFlag};

/// An accepted connection and its two addresses, as the socket API gives
/// them.
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// What was found at start-up.
pub enum Found {
    /// One connection. The flag says whether fd 2 was the client socket
    /// too (plain inetd), so that stderr may not be used for logging.
    Client(Conn, bool),
    /// Listening sockets, to accept connections from. The flag says
    /// whether stderr may carry log lines (it is not a passed socket).
    Listeners(Vec<TcpListener>, bool),
    /// A socket was passed but cannot be served; the text says why and how
    /// to fix the setup. The flag says whether stderr may carry it (it is
    /// not the passed socket).
    SetupError(String, bool),
    /// No socket: not started by inetd or a socket unit.
    Nothing,
}

/// Whether a passed socket may be there, so that diagnostics must not go
/// to stdout or stderr.
pub fn socket_passed() -> bool {
    std::env::var_os("LISTEN_FDS").is_some() || std_fd(0, is_socket)
}

/// Looks for the client socket: the first `LISTEN_FDS` fd when that is
/// set for this process, else fd 0 if it is a socket.
pub fn find() -> Found {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 0 {
        let mut taken = Vec::new();
        for i in 0..fds.len() {
            match fds.take_raw_fd(i) {
                Ok(Some(raw)) => {
                    // SAFETY: systemd passed this fd to this process
                    // (listenfd checked LISTEN_PID) and nothing else owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    // systemd passes it without close-on-exec; a rule's
                    // command must not inherit a socket and hold it open.
                    let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
                    taken.push(fd);
                }
                _ => return Found::SetupError(format!("LISTEN_FDS is set but fd {} cannot be taken", 3 + i), true),
            }
        }
        let first = taken.remove(0);
        if listening(&first) {
            return listeners(std::iter::once(first).chain(taken).collect(), "LISTEN_FDS", true);
        }
        if !taken.is_empty() {
            return Found::SetupError(
                format!(
                    "LISTEN_FDS passes {} sockets and fd 3 is a connection: with Accept=yes the unit \
                     must have one ListenStream= only",
                    taken.len() + 1
                ),
                true,
            );
        }
        return check(first, "fd 3 (LISTEN_FDS)");
    }
    if std_fd(0, is_socket) {
        // SAFETY: fd 0 is a socket handed to us by inetd; this is the only
        // place that takes ownership of it.
        let fd = unsafe { OwnedFd::from_raw_fd(0) };
        if listening(&fd) {
            let stderr_allowed = !same_file(&fd, io::stderr().as_fd());
            quiet_std_fds(&fd);
            let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
            return listeners(vec![fd], "stdin (inetd wait)", stderr_allowed);
        }
        return check(fd, "stdin");
    }
    Found::Nothing
}

fn listening(fd: &OwnedFd) -> bool {
    getsockopt(fd, sockopt::AcceptConn).unwrap_or(false)
}

/// Checks that each of `fds` is a listening TCP socket and takes them.
fn listeners(fds: Vec<OwnedFd>, what: &str, stderr_allowed: bool) -> Found {
    let mut out = Vec::with_capacity(fds.len());
    for (i, fd) in fds.into_iter().enumerate() {
        let ok = matches!(getsockopt(&fd, sockopt::SockType), Ok(SockType::Stream)) && listening(&fd);
        let l = TcpListener::from(fd);
        if !ok || l.local_addr().is_err() {
            return Found::SetupError(
                format!(
                    "{what}: socket {} is not a listening TCP socket (ListenStream= only)",
                    i + 1
                ),
                stderr_allowed,
            );
        }
        out.push(l);
    }
    Found::Listeners(out, stderr_allowed)
}

/// fd 0 or 1, borrowed for the length of `f`. Not through `io::stdin()`
/// or `io::stdout()`: those make std's buffers (8 KiB and 1 KiB) on first
/// use, and every handler held open then carries them: 16 KiB more PSS
/// per held connection (bench/README.md, "Renovation").
fn std_fd<R>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> R) -> R {
    debug_assert!(fd == 0 || fd == 1);
    // SAFETY: fds 0-2 are open from before main (start.rs opens /dev/null
    // on any that was closed); fd 0 is closed only after find() has taken
    // it, past its last use here, and fd 1 is only ever replaced by dup2.
    f(unsafe { BorrowedFd::borrow_raw(fd) })
}

fn is_socket(fd: BorrowedFd<'_>) -> bool {
    fstat(fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK)
        .unwrap_or(false)
}

/// Checks that `fd` is a connected TCP socket and takes it.
fn check(fd: OwnedFd, what: &str) -> Found {
    let stderr_was_client = same_file(&fd, io::stderr().as_fd());
    let fail = |why: String| Found::SetupError(why, !stderr_was_client);
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(other) => return fail(format!("{what} is a {other:?} socket, not a TCP stream")),
        Err(e) => return fail(format!("{what} is not a socket: {e}")),
    }
    let stream = TcpStream::from(fd);
    let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(p), Ok(l)) => (p, l),
        (Err(e), _) | (_, Err(e)) => return fail(format!("{what} is not a connected TCP socket: {e}")),
    };
    quiet_std_fds(&stream);
    Found::Client(Conn { stream, peer, local }, stderr_was_client)
}

/// inetd may put the socket on fds 1 and 2 too. Point them at /dev/null
/// so that nothing written there can reach the client, and so that the
/// socket is really closed when its owner is dropped.
fn quiet_std_fds(socket: &impl AsFd) {
    let (on_out, on_err) = (
        std_fd(1, |out| same_file(socket, out)),
        same_file(socket, io::stderr().as_fd()),
    );
    if !(on_out || on_err) {
        return;
    }
    let Ok(null) = OpenOptions::new().write(true).open("/dev/null") else {
        return;
    };
    if on_out {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    if on_err {
        let _ = nix::unistd::dup2_stderr(&null);
    }
}

fn same_file(a: &impl AsFd, b: BorrowedFd<'_>) -> bool {
    match (fstat(a.as_fd()), fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}
