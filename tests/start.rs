//! What std's runtime start used to do and socks4d now does itself
//! (src/start.rs): the standard descriptors are open before anything else
//! is, and SIGPIPE does not kill a handler.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

const EXIT: Duration = Duration::from_secs(20);

#[test]
fn a_closed_stderr_is_not_taken_by_the_destination_socket() {
    // With fd 2 closed, the first socket opened would get it, and the log
    // lines of --log-stderr would go to the destination.
    let dst = echo_dest();
    let mut s = spawn_on_with(socket_pair(), &["--ident", "off", "--log-stderr"], &[], |cmd| {
        // SAFETY: close is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::libc::close(2);
                Ok(())
            });
        }
    });
    s.client.write_all(&connect_req(dst.addr, b"u")).unwrap();
    assert_eq!(&read_reply(&mut s.client)[..2], &[0, 0x5A]);
    s.client.write_all(b"only this").unwrap();
    s.client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s.client), b"only this");
    assert_eq!(wait_exit(&mut s.child, EXIT).code(), Some(0));
}

#[test]
fn a_log_pipe_without_a_reader_refuses_instead_of_killing_the_handler() {
    // SIGPIPE would end the process at its first log line, before any
    // reply; ignored, the write fails and the grant becomes a refusal.
    // Close-on-exec: a read end inherited by what another test starts
    // meanwhile would be a reader.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    drop(read_end);
    let dst = echo_dest();
    let mut s = spawn_on_with(socket_pair(), &["--ident", "off", "--log-stderr"], &[], |cmd| {
        cmd.stderr(Stdio::from(write_end));
    });
    s.client.write_all(&connect_req(dst.addr, b"u")).unwrap();
    assert_eq!(read_reply(&mut s.client), [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    let status = wait_exit(&mut s.child, EXIT);
    assert_eq!(
        (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)),
        (Some(0), None)
    );
}
