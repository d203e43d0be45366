//! A rule's or a hook's shell command: its `%` substitutions, each value
//! sanitised, and its start, detached from the exchange.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// At most this many bytes of one substituted value reach a command.
pub const MAX_SUBST_LEN: usize = 256;
/// How long a `%A` or `%Z` reverse lookup may take before the IP is used.
pub const NAME_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

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
            Some(b'%') => b"%".to_vec(),
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

/// Replaces every byte outside `[0-9A-Za-z!@%_=+:,./-]` with `_` and cuts
/// the value at [`MAX_SUBST_LEN`] bytes, so that nothing a client sent
/// reaches the shell unescaped.
pub fn sanitize(value: &[u8]) -> Vec<u8> {
    value
        .iter()
        .take(MAX_SUBST_LEN)
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"!@%_=+:,./-".contains(&b) {
                b
            } else {
                b'_'
            }
        })
        .collect()
}

/// A command started by [`spawn`].
pub struct Spawned(mpsc::Receiver<()>);

impl Spawned {
    /// Waits, up to `limit`, until the shell has been started (the name
    /// lookups for `%A` and `%Z` come first). The command itself is not
    /// waited for.
    pub fn started(self, limit: Duration) {
        let _ = self.0.recv_timeout(limit);
    }
}

/// Runs `template`, expanded, with `/bin/sh -c`, on a thread of its own,
/// so that the exchange never waits for it: stdin, stdout and stderr are
/// /dev/null and it gets a process group of its own. `%A` and `%Z` are
/// looked up on that thread, each within [`NAME_LOOKUP_TIMEOUT`].
pub fn spawn(template: Vec<u8>, mut subst: Subst) -> Spawned {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new().name("command".into()).spawn(move || {
        if subst.client_name.is_none() && template.windows(2).any(|w| w == b"%A") {
            subst.client_name = subst.client.and_then(host_name);
        }
        if subst.dst_name.is_none() && template.windows(2).any(|w| w == b"%Z") {
            subst.dst_name = subst.dst.and_then(host_name);
        }
        let cmd = expand(&template, &subst);
        let child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(OsStr::from_bytes(&cmd))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let _ = tx.send(());
        // Reap it, should this process outlive it.
        if let Ok(mut child) = child {
            let _ = child.wait();
        }
    });
    if thread.is_err() {
        // No thread, no command; `started` then returns at once.
        return Spawned(mpsc::channel().1);
    }
    Spawned(rx)
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
            "echo bob__rm_-rf_/__x____y___q___r____a_b_c_d_"
        );
        assert_eq!(sanitize(b"0-9A-Za-z!@%_=+:,./-"), b"0-9A-Za-z!@%_=+:,./-");
        assert_eq!(sanitize(&[b'a'; 1000]).len(), MAX_SUBST_LEN);
    }

    #[test]
    fn unknown_and_trailing_escapes_stay_as_written() {
        let s = Subst {
            port: 80,
            ..Default::default()
        };
        assert_eq!(expand(b"%x%s%", &s), b"%x80%");
        assert_eq!(expand(b"", &s), b"");
        // No client address known: %a and %A are empty.
        assert_eq!(expand(b"[%a][%A]", &s), b"[][]");
    }
}
