//! What differs between the glibc build and the static musl build
//! (`cargo test --target x86_64-unknown-linux-musl` runs every group
//! against the latter): the static binary loads nothing at run time, takes
//! its options from `main`'s own arguments, and says where it looked when
//! a host name is not found, since it has no NSS.

use std::io::Write;
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::common::*;

/// `PT_INTERP`: the program header that names a dynamic loader.
const PT_INTERP: u32 = 3;

/// The program header types of the ELF64 file at `path`.
fn program_headers(path: &std::path::Path) -> Vec<u32> {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not an ELF64 file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count)
        .map(|i| u32::from_le_bytes(elf[phoff + i * size..][..4].try_into().unwrap()))
        .collect()
}

#[test]
#[cfg(target_env = "musl")]
fn the_static_build_has_no_dynamic_loader() {
    let headers = program_headers(&bin());
    assert!(!headers.is_empty());
    assert!(!headers.contains(&PT_INTERP), "{headers:?}");
}

#[test]
#[cfg(target_env = "gnu")]
fn the_glibc_build_is_dynamically_linked() {
    // The other half of the comparison the static build is measured by.
    assert!(program_headers(&bin()).contains(&PT_INTERP));
}

#[test]
fn options_are_read_in_this_build() {
    // Under #![no_main] std's own argument list is empty in a static musl
    // binary; socks4d takes argv from main.
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("socks4d {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(bin())
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen not-an-address: not an address"));
}

#[test]
fn an_argument_that_is_not_utf8_is_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(bin())
        .arg(std::ffi::OsStr::from_bytes(b"--user=\xff"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("argument 1 is not UTF-8"), "{err}");
}

/// Answers every query with NXDOMAIN (the name does not exist).
fn nxdomain_server(sock: std::net::UdpSocket) {
    let mut buf = [0u8; 512];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        if n < 12 {
            continue;
        }
        let mut answer = buf[..n].to_vec();
        // QR, the query's opcode and RD, RA, RCODE 3; no answer records.
        answer[2] = 0x80 | (buf[2] & 0x79);
        answer[3] = 0x80 | 3;
        answer[6..12].fill(0);
        let _ = sock.send_to(&answer, from);
    }
}

#[test]
fn a_name_the_resolver_does_not_find_gets_5b_and_a_line_saying_where_it_looked() {
    if !require_root() || !require("ip") {
        return;
    }
    // A network namespace of this thread's own whose name server on
    // 127.0.0.1:53 says NXDOMAIN to everything, and an /etc/resolv.conf
    // naming it for socks4d.
    let dir = TempDir::new("static");
    let conf = dir.path().join("resolv.conf");
    std::fs::write(&conf, "nameserver 127.0.0.1\noptions timeout:5 attempts:1\n").unwrap();
    let result = in_own_network(move || {
        let dns = std::net::UdpSocket::bind("127.0.0.1:53").unwrap();
        thread::spawn(move || nxdomain_server(dns));
        let mut s = spawn_on_with(
            socket_pair(),
            &["--ident", "off", "--log-stderr", "--connect-timeout", "8"],
            &[],
            |c| bind_over(c, &conf, "/etc/resolv.conf"),
        );
        s.client
            .write_all(&connect_4a("no-such-host.example", 80, b""))
            .unwrap();
        let reply = read_reply(&mut s.client);
        let (status, log) = finish(&mut s, Duration::from_secs(20));
        (reply, status, log)
    });
    let (reply, status, log) = result;
    assert_eq!(reply[1], 0x5B, "{log}");
    assert_eq!(status.code(), Some(0), "{log}");
    let d = line(&log, "decision");
    assert!(
        d.contains("reason=resolve-failed") && d.contains("no-such-host.example"),
        "{log}"
    );
    // The static build has no NSS, and its line says so; glibc's went
    // through nsswitch.conf and needs no such note.
    assert_eq!(
        d.contains("looks names up in /etc/hosts and DNS only, without NSS"),
        cfg!(target_env = "musl"),
        "{log}"
    );
    assert!(!d.contains("timed out"), "{log}");
}
