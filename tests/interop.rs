//! Real SOCKS clients through socks4d started per connection by
//! `systemd-socket-activate --inetd -a`, the way inetd starts it: curl,
//! socat, ncat and OpenBSD netcat. Every transfer is checked by checksum,
//! and the audit lines by what each client is known to send.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Options given to socks4d after the ones each test needs.
const SOCKS4D_ARGS: &[&str] = &["--ident", "off", "--log-stderr"];

/// How long one client run may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(40);
/// Bytes sent each way through the echo destination.
const ECHO_LEN: usize = 4 << 20;

/// socks4d behind `systemd-socket-activate --inetd -a` on a loopback port,
/// its audit lines (`--log-stderr`) going to a file.
struct Proxy {
    guard: Option<Guard>,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
    _tmp: TempDir,
}

impl Proxy {
    /// Starts it, or returns `None` when the program is missing outside CI.
    fn start(tag: &str) -> Option<Proxy> {
        if !require("systemd-socket-activate") {
            return None;
        }
        let tmp = TempDir::new(tag);
        let log = tmp.0.join("socks4d.log");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new("systemd-socket-activate")
            .args(["--inetd", "-a", "-l", &addr.to_string()])
            .arg(bin())
            .args(SOCKS4D_ARGS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("start systemd-socket-activate");
        let pid = child.id();
        let proxy = Proxy {
            guard: Some(Guard(child)),
            pid,
            addr,
            log,
            _tmp: tmp,
        };
        wait_listening(addr);
        Some(proxy)
    }

    /// The socks4d lines so far (socket-activate's own lines left out).
    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("socks4d["))
            .map(String::from)
            .collect()
    }

    /// Waits for the one granted exchange's decision line and its end line,
    /// and returns both.
    fn granted(&self) -> (String, String) {
        let start = Instant::now();
        loop {
            let lines = self.lines();
            let decisions: Vec<&String> = lines
                .iter()
                .filter(|l| l.contains("]: decision ") && l.contains("reason=granted"))
                .collect();
            assert!(decisions.len() <= 1, "more than one granted exchange:\n{lines:#?}");
            if let Some(decision) = decisions.first() {
                let pid = &decision[..decision.find("]: ").unwrap()];
                if let Some(end) = lines.iter().find(|l| l.starts_with(pid) && l.contains("]: end ")) {
                    return (decision.to_string(), end.clone());
                }
            }
            assert!(
                start.elapsed() < IO_TIMEOUT,
                "no granted exchange with an end line:\n{lines:#?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Checks that every socks4d it started has exited, then stops it.
    fn stop(mut self) {
        wait_no_children(self.pid, Duration::from_secs(20));
        drop(self.guard.take());
        assert!(!alive(self.pid), "systemd-socket-activate {} survived", self.pid);
    }
}

/// Runs a client that sends `ECHO_LEN` bytes on its stdin to an echo
/// destination through the proxy and prints what comes back; checks the
/// bytes both ways. `args` builds the client's arguments from the proxy and
/// destination addresses.
fn echo_through<F>(proxy: &Proxy, program: &str, args: F, seed: u64) -> Output
where
    F: FnOnce(SocketAddr, SocketAddr) -> Vec<String>,
{
    let dst = echo_dest();
    let data = payload(ECHO_LEN, seed);
    let out = run_with_input(
        Command::new(program).args(args(proxy.addr, dst.addr)),
        data.clone(),
        CLIENT_LIMIT,
    );
    assert!(
        out.status.success(),
        "{program}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len(), "{program}: bytes back");
    assert_eq!(checksum(&out.stdout), checksum(&data), "{program}: checksum");
    dst.handle.join().unwrap();
    out
}

fn assert_has(line: &str, want: &str) {
    assert!(line.contains(want), "{want:?} not in {line}");
}

#[test]
fn curl_socks4_and_socks4a() {
    if !require("curl") {
        return;
    }
    let body = payload(3 << 20, 61);
    let web = http_server(body.clone());
    for (mode, host) in [("--socks4", "127.0.0.1"), ("--socks4a", "localhost")] {
        let Some(proxy) = Proxy::start("curl") else { return };
        let got = curl_via(mode, proxy.addr, &format!("http://{host}:{}/file", web.port()));
        assert_eq!(got.len(), body.len(), "{mode}");
        assert_eq!(checksum(&got), checksum(&body), "{mode}");
        let (decision, end) = proxy.granted();
        assert_has(&decision, &format!("cmd=connect dst={web}"));
        if mode == "--socks4a" {
            assert_has(&decision, "host=\"localhost\"");
        } else {
            assert_has(&decision, "host=-");
        }
        assert_has(&end, &format!("down={}", body.len() as u64 + http_head_len(body.len())));
        proxy.stop();
    }
}

/// The length of `http_server`'s response head for a body of `len` bytes.
fn http_head_len(len: usize) -> u64 {
    format!("HTTP/1.0 200 OK\r\nContent-Length: {len}\r\n\r\n").len() as u64
}

#[test]
fn socat_socks4_with_socksuser() {
    if !require("socat") {
        return;
    }
    let Some(proxy) = Proxy::start("socat4") else { return };
    echo_through(
        &proxy,
        "socat",
        |p, d| {
            vec![
                "-t".into(),
                "20".into(),
                "-".into(),
                format!(
                    "SOCKS4:{}:{}:{},socksport={},socksuser=alice",
                    p.ip(),
                    d.ip(),
                    d.port(),
                    p.port()
                ),
            ]
        },
        62,
    );
    let (decision, end) = proxy.granted();
    assert_has(&decision, "user=\"alice\" cmd=connect");
    assert_has(&decision, "host=-");
    assert_has(&end, &format!("up={ECHO_LEN} down={ECHO_LEN}"));
    proxy.stop();
}

#[test]
fn socat_socks4a_with_socksuser() {
    if !require("socat") {
        return;
    }
    let Some(proxy) = Proxy::start("socat4a") else { return };
    echo_through(
        &proxy,
        "socat",
        |p, d| {
            vec![
                "-t".into(),
                "20".into(),
                "-".into(),
                format!(
                    "SOCKS4A:{}:localhost:{},socksport={},socksuser=bob",
                    p.ip(),
                    d.port(),
                    p.port()
                ),
            ]
        },
        63,
    );
    let (decision, end) = proxy.granted();
    assert_has(&decision, "user=\"bob\" cmd=connect");
    assert_has(&decision, "host=\"localhost\"");
    assert_has(&end, &format!("up={ECHO_LEN} down={ECHO_LEN}"));
    proxy.stop();
}

#[test]
fn ncat_proxy_type_socks4() {
    if !require("ncat") {
        return;
    }
    let Some(proxy) = Proxy::start("ncat") else { return };
    echo_through(
        &proxy,
        "ncat",
        |p, d| {
            vec![
                "--proxy".into(),
                p.to_string(),
                "--proxy-type".into(),
                "socks4".into(),
                "--proxy-auth".into(),
                "carol".into(),
                d.ip().to_string(),
                d.port().to_string(),
            ]
        },
        64,
    );
    let (decision, end) = proxy.granted();
    assert_has(&decision, "user=\"carol\" cmd=connect");
    assert_has(&end, &format!("up={ECHO_LEN} down={ECHO_LEN}"));
    proxy.stop();
}

#[test]
fn openbsd_nc_x4_sends_an_empty_userid() {
    // Debian's nc may be another netcat; nc.openbsd is netcat-openbsd's.
    let Some(nc) = require_program("netcat-openbsd", &["nc.openbsd"]) else {
        return;
    };
    let Some(proxy) = Proxy::start("nc") else { return };
    echo_through(
        &proxy,
        &nc.to_string_lossy(),
        |p, d| {
            vec![
                // Shut down the sending side at EOF on stdin, then read on.
                "-N".into(),
                "-X".into(),
                "4".into(),
                "-x".into(),
                p.to_string(),
                d.ip().to_string(),
                d.port().to_string(),
            ]
        },
        65,
    );
    let (decision, end) = proxy.granted();
    assert_has(&decision, "user=\"\" cmd=connect");
    assert_has(&end, &format!("up={ECHO_LEN} down={ECHO_LEN}"));
    proxy.stop();
}
