//! What std's runtime start did before `main` that socks4d needs, done
//! explicitly. `src/main.rs` is `#![no_main]`: std's start installs SIGSEGV
//! and SIGBUS handlers on an alternate signal stack of its own (mapped with
//! a guard page, and unmapped again at exit) for a message on stderr when
//! the stack overflows: the process dies either way, and under inetd
//! stderr may be the client's socket. In the glibc build it also reads
//! `/proc/self/maps` and the CPU affinity to find the main thread's stack.
//! Per connection, in the static build: 11 system calls, 3 page faults,
//! 2 700 instructions and 40-100 µs of a handler's 510-640 µs of CPU; in
//! the glibc build 19 system calls, 7 page faults, about 90 000
//! instructions and 90-185 µs (bench/README.md, "Start-up"). Two of its
//! steps matter and are kept here.

use nix::libc;

/// Makes the process ready for the rest of `main`, as std's start would:
///
/// - SIGPIPE is ignored, so that a write to a closed pipe or socket (a
///   logger's stderr, a client gone) fails with EPIPE instead of killing
///   the process before its audit line. Commands started with
///   `std::process::Command` get the default disposition back.
/// - Descriptors 0, 1 and 2 are open: each closed one is opened on
///   `/dev/null`, so that no socket or file opened later takes its number
///   and receives what is meant for a standard stream.
pub fn prepare() {
    // SAFETY: setting a signal's disposition to SIG_IGN involves no
    // handler code; the process is single-threaded here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    open_std_fds();
}

/// Opens `/dev/null` on each of 0, 1 and 2 that is closed, with one `poll`
/// when none is (POLLNVAL marks a closed one).
fn open_std_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd for the call.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    let closed = |fd: &libc::pollfd| {
        if polled >= 0 {
            fd.revents & libc::POLLNVAL != 0
        } else {
            // poll itself failed (EINTR, ENOMEM): ask each descriptor.
            // SAFETY: F_GETFD on any number only reads the fd table.
            let bad = unsafe { libc::fcntl(fd.fd, libc::F_GETFD) } == -1;
            bad && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
        }
    };
    for fd in fds.iter().filter(|fd| closed(fd)) {
        // SAFETY: a NUL-terminated path; the lowest free descriptor is the
        // closed standard one (the lower ones are open by now).
        let got = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if got != fd.fd && got >= 0 {
            // SAFETY: `got` was just opened here and is owned by nobody.
            unsafe {
                libc::dup2(got, fd.fd);
                libc::close(got);
            }
        }
    }
}

/// The arguments after the program's name, from `main`'s own `argc` and
/// `argv`. std's `env::args` is not used: under `#![no_main]` only
/// glibc fills it in (through `.init_array`), and a static musl build
/// would silently see no options at all. An argument that is not UTF-8
/// is an error naming it, not an abort.
///
/// # Safety
///
/// `argv` must hold `argc` pointers to NUL-terminated strings, as the C
/// runtime passes them to `main`.
pub unsafe fn args(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> Result<Vec<String>, String> {
    let n = usize::try_from(argc).unwrap_or(0);
    (1..n)
        .map(|i| {
            // SAFETY: i < argc, and each entry is a C string (the caller's
            // contract).
            let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
            arg.to_str()
                .map(str::to_owned)
                .map_err(|_| format!("argument {i} is not UTF-8: {}", arg.to_string_lossy()))
        })
        .collect()
}
