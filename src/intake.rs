//! Where the client socket comes from: fd 3 under `LISTEN_FDS` (a systemd
//! socket unit with `Accept=yes`), or fd 0 (inetd `nowait`, xinetd,
//! `StandardInput=socket`).

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt, SockType};
use nix::sys::stat::{fstat, SFlag};

/// A connected client socket and its two addresses.
pub struct Client {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// fd 2 was the client socket (plain inetd), so stderr may not be used
    /// for logging.
    pub stderr_was_client: bool,
}

/// What was found at start-up.
pub enum Found {
    Client(Client),
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
    std::env::var_os("LISTEN_FDS").is_some() || is_socket(0)
}

/// Looks for the client socket: the first `LISTEN_FDS` fd when that is
/// set for this process, else fd 0 if it is a socket.
pub fn find() -> Found {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 0 {
        return match fds.take_raw_fd(0) {
            Ok(Some(raw)) => {
                // SAFETY: systemd passed this fd to this process (listenfd
                // checked LISTEN_PID) and nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                // systemd passes it without close-on-exec; a rule's command
                // must not inherit the client's connection and hold it open.
                let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
                check(fd, "fd 3 (LISTEN_FDS)")
            }
            _ => Found::SetupError("LISTEN_FDS is set but fd 3 cannot be taken".into(), true),
        };
    }
    if is_socket(0) {
        // SAFETY: fd 0 is a socket handed to us by inetd; this is the only
        // place that takes ownership of it.
        return check(unsafe { OwnedFd::from_raw_fd(0) }, "stdin");
    }
    Found::Nothing
}

fn is_socket(fd: i32) -> bool {
    // SAFETY: the borrow lives only for this call, and fstat on a closed
    // fd just fails.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fstat(fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK)
        .unwrap_or(false)
}

/// Checks that `fd` is a connected TCP socket and takes it.
fn check(fd: OwnedFd, what: &str) -> Found {
    let stderr_was_client = same_file(&fd, 2);
    let fail = |why: String| Found::SetupError(why, !stderr_was_client);
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(other) => return fail(format!("{what} is a {other:?} socket, not a TCP stream")),
        Err(e) => return fail(format!("{what} is not a socket: {e}")),
    }
    if getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
        return fail(format!(
            "{what} is a listening socket: socks4d serves one accepted connection per run; \
             set Accept=yes in the socket unit (or use `nowait` in inetd.conf)"
        ));
    }
    let stream = TcpStream::from(fd);
    let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(p), Ok(l)) => (p, l),
        (Err(e), _) | (_, Err(e)) => return fail(format!("{what} is not a connected TCP socket: {e}")),
    };
    // inetd may put the socket on fds 1 and 2 too. Point them at /dev/null
    // so that nothing written there can reach the client, and so that the
    // socket is really closed when the stream is dropped.
    for other in [1, 2] {
        if same_file(&stream, other) {
            if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
                // SAFETY: fds 1 and 2 are the process's own standard fds;
                // dup2 replaces them atomically.
                unsafe {
                    nix::libc::dup2(null.as_raw_fd(), other);
                }
            }
        }
    }
    Found::Client(Client {
        stream,
        peer,
        local,
        stderr_was_client,
    })
}

fn same_file(a: &impl AsFd, b: i32) -> bool {
    // SAFETY: as in is_socket.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(b) };
    match (fstat(a.as_fd()), fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}
