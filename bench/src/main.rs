//! Side-by-side benchmark on loopback, variants interleaved and repeated:
//! direct (the ceiling), socks4d under socket activation, socks4d
//! --listen, Dante (when installed), and the exec floor (/bin/cat under
//! the same socket activation).
//!
//! Sizes come from the environment (see `Settings`), so a smoke run can be
//! tiny. It prints one table and writes it to `BENCH_OUT`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const GIB: f64 = (1u64 << 30) as f64;

struct Settings {
    socks4d: String,
    extra: Vec<String>,
    bytes: u64,
    rounds: usize,
    latency_n: usize,
    conns: usize,
    idle: usize,
    /// Concurrent relay counts for the scale table.
    scale: Vec<usize>,
    out: String,
}

impl Settings {
    fn from_env() -> Settings {
        let num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        Settings {
            socks4d: std::env::var("SOCKS4D").unwrap_or_else(|_| "target/release/socks4d".into()),
            extra: std::env::var("SOCKS4D_ARGS")
                .unwrap_or_else(|_| "--ident off".into())
                .split_whitespace()
                .map(String::from)
                .collect(),
            bytes: num("BENCH_BYTES", 1 << 30),
            rounds: num("BENCH_ROUNDS", 5) as usize,
            latency_n: num("BENCH_LATENCY_N", 500) as usize,
            conns: num("BENCH_CONNS", 2000) as usize,
            idle: num("BENCH_IDLE", 200) as usize,
            scale: std::env::var("BENCH_SCALE")
                .unwrap_or_else(|_| "50 200 500".into())
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect(),
            out: std::env::var("BENCH_OUT").unwrap_or_else(|_| "bench/results.txt".into()),
        }
    }
}

/// A server the variants relay to, on loopback.
#[derive(Clone, Copy)]
struct Servers {
    /// Reads to EOF, then answers the byte count as 8 bytes.
    sink: SocketAddr,
    /// Reads an 8-byte count, sends that many bytes, closes.
    source: SocketAddr,
    /// Echoes until EOF.
    echo: SocketAddr,
}

fn serve(handler: fn(TcpStream)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || handler(s));
        }
    });
    a
}

fn servers() -> Servers {
    Servers {
        sink: serve(|mut s| {
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k as u64,
                }
            }
            let _ = s.write_all(&n.to_be_bytes());
        }),
        source: serve(|mut s| {
            let mut len = [0u8; 8];
            if s.read_exact(&mut len).is_err() {
                return;
            }
            let mut left = u64::from_be_bytes(len);
            let buf = vec![0x5au8; 1 << 20];
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                if s.write_all(&buf[..k]).is_err() {
                    return;
                }
                left -= k as u64;
            }
        }),
        echo: serve(|mut s| {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        if s.write_all(&buf[..k]).is_err() {
                            break;
                        }
                    }
                }
            }
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Socks,
    /// /bin/cat under socket activation: echoes, speaks no SOCKS.
    Floor,
}

struct Variant {
    name: &'static str,
    kind: Kind,
    addr: Option<SocketAddr>,
    child: Option<Child>,
}

impl Drop for Variant {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let pid = c.id() as i32;
            let _ = Command::new("kill").arg("--").arg(format!("-{pid}")).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(cmd: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start")
}

fn wait_port(a: SocketAddr) {
    let t = Instant::now();
    // A probe connection may start a handler; it sees EOF and exits.
    while TcpStream::connect(a).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "nothing on {a}");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(100));
}

fn have(p: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {p} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn variants(s: &Settings) -> Vec<Variant> {
    let mut v = vec![Variant {
        name: "direct",
        kind: Kind::Direct,
        addr: None,
        child: None,
    }];
    let activate = |argv: &[&str]| -> (Child, SocketAddr) {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = spawn(
            Command::new("systemd-socket-activate")
                .args(["--inetd", "-a", "-l", &addr.to_string()])
                .args(argv),
        );
        wait_port(addr);
        (child, addr)
    };
    let mut inetd_argv: Vec<&str> = vec![s.socks4d.as_str()];
    inetd_argv.extend(s.extra.iter().map(String::as_str));
    let (c, a) = activate(&inetd_argv);
    v.push(Variant {
        name: "socks4d inetd",
        kind: Kind::Socks,
        addr: Some(a),
        child: Some(c),
    });
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = spawn(
        Command::new(&s.socks4d)
            .arg("--listen")
            .arg(addr.to_string())
            .args(&s.extra),
    );
    wait_port(addr);
    v.push(Variant {
        name: "socks4d listen",
        kind: Kind::Socks,
        addr: Some(addr),
        child: Some(c),
    });
    if have("danted") {
        let port = free_port();
        let conf = std::env::temp_dir().join(format!("socks4d-bench-danted-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "logoutput: /dev/null\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
                 clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
                 socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }}\n"
            ),
        )
        .unwrap();
        let pidfile = std::env::temp_dir().join(format!("socks4d-bench-danted-{port}.pid"));
        let c = spawn(Command::new("danted").arg("-f").arg(&conf).arg("-p").arg(&pidfile));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_port(addr);
        v.push(Variant {
            name: "dante",
            kind: Kind::Socks,
            addr: Some(addr),
            child: Some(c),
        });
    }
    let (c, a) = activate(&["/bin/cat"]);
    v.push(Variant {
        name: "exec floor",
        kind: Kind::Floor,
        addr: Some(a),
        child: Some(c),
    });
    v
}

/// Opens a stream to `dst`: directly, or through the proxy with a SOCKS4
/// CONNECT (the 8-byte reply read and checked).
fn open(v: &Variant, dst: SocketAddr) -> TcpStream {
    let Some(proxy) = v.addr else {
        return TcpStream::connect(dst).unwrap();
    };
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    if v.kind == Kind::Socks {
        let SocketAddr::V4(d) = dst else { unreachable!() };
        let mut req = vec![4, 1];
        req.extend_from_slice(&d.port().to_be_bytes());
        req.extend_from_slice(&d.ip().octets());
        req.extend_from_slice(b"bench\0");
        s.write_all(&req).unwrap();
        let mut r = [0u8; 8];
        s.read_exact(&mut r).unwrap();
        assert_eq!(r[1], 0x5A, "{} refused", v.name);
    }
    s
}

/// CPU seconds (user+sys, children included) of `root` and every
/// descendant.
fn tree_cpu(root: u32) -> f64 {
    let tick = 100.0;
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut cpu: HashMap<u32, u64> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        parent.insert(pid, n(1) as u32);
        cpu.insert(pid, n(11) + n(12) + n(13) + n(14));
    }
    let mut total = 0;
    for (&pid, &c) in &cpu {
        let mut p = pid;
        loop {
            if p == root {
                total += c;
                break;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 && pp != p => p = pp,
                _ => break,
            }
        }
    }
    total as f64 / tick
}

/// Descendants of `root` (not `root` itself).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else { continue };
        let ppid = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        parent.insert(pid, ppid);
    }
    parent
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            while let Some(&pp) = parent.get(&p) {
                if pp == root {
                    return true;
                }
                if pp == 0 || pp == p {
                    break;
                }
                p = pp;
            }
            false
        })
        .collect()
}

/// (PSS, RSS) in KiB from smaps_rollup.
fn mem(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("Pss:"), get("Rss:"))
}

/// The processes that make up the variant's service: its root and all
/// descendants for Dante (it has several fixed processes), only the
/// descendants (the handlers) for the others.
fn service_pids(v: &Variant) -> Vec<u32> {
    let Some(c) = &v.child else { return Vec::new() };
    let mut p = descendants(c.id());
    if v.name == "dante" {
        p.push(c.id());
    }
    p
}

fn upload(v: &Variant, srv: Servers, bytes: u64) -> (f64, f64) {
    let cpu0 = v.child.as_ref().map(|c| tree_cpu(c.id())).unwrap_or(0.0);
    let t = Instant::now();
    let mut s = open(v, srv.sink);
    let buf = vec![0xa5u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    assert_eq!(u64::from_be_bytes(n), bytes, "{}: upload lost bytes", v.name);
    let secs = t.elapsed().as_secs_f64();
    drop(s);
    thread::sleep(Duration::from_millis(50));
    let cpu = v.child.as_ref().map(|c| tree_cpu(c.id())).unwrap_or(0.0) - cpu0;
    (bytes as f64 / secs, cpu)
}

fn download(v: &Variant, srv: Servers, bytes: u64) -> (f64, f64) {
    let cpu0 = v.child.as_ref().map(|c| tree_cpu(c.id())).unwrap_or(0.0);
    let t = Instant::now();
    let mut s = open(v, srv.source);
    s.write_all(&bytes.to_be_bytes()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        match s.read(&mut buf).unwrap() {
            0 => break,
            k => got += k as u64,
        }
    }
    assert_eq!(got, bytes, "{}: download lost bytes", v.name);
    let secs = t.elapsed().as_secs_f64();
    drop(s);
    thread::sleep(Duration::from_millis(50));
    let cpu = v.child.as_ref().map(|c| tree_cpu(c.id())).unwrap_or(0.0) - cpu0;
    (bytes as f64 / secs, cpu)
}

/// Connect until the 8-byte reply (direct and floor: an 8-byte echo).
fn connect_to_reply(v: &Variant, srv: Servers) -> f64 {
    let t = Instant::now();
    match v.kind {
        Kind::Socks => {
            let s = open(v, srv.echo);
            let d = t.elapsed().as_secs_f64();
            drop(s);
            d
        }
        _ => {
            let mut s = match v.addr {
                Some(a) => TcpStream::connect(a).unwrap(),
                None => TcpStream::connect(srv.echo).unwrap(),
            };
            s.write_all(&[4, 1, 0, 80, 127, 0, 0, 1]).unwrap();
            let mut r = [0u8; 8];
            s.read_exact(&mut r).unwrap();
            t.elapsed().as_secs_f64()
        }
    }
}

/// Connections per second with `conc` clients, each doing connect +
/// handshake + 1 KiB request and response + close, every byte checked.
fn conns_per_sec(v: &Variant, srv: Servers, conc: usize, total: usize) -> f64 {
    let counter = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    thread::scope(|scope| {
        for _ in 0..conc {
            let counter = counter.clone();
            scope.spawn(move || {
                let req: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
                while counter.fetch_add(1, Ordering::Relaxed) < total {
                    let mut s = match v.addr {
                        None => TcpStream::connect(srv.echo).unwrap(),
                        Some(_) => open(v, srv.echo),
                    };
                    s.write_all(&req).unwrap();
                    let mut back = vec![0u8; req.len()];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, req, "{}: corrupted", v.name);
                }
            });
        }
    });
    total as f64 / t.elapsed().as_secs_f64()
}

/// PSS and RSS (KiB) of one handler while it relays, and PSS per held
/// connection over `n` idle relayed connections.
fn memory(v: &Variant, srv: Servers, n: usize) -> Option<(u64, u64, f64)> {
    v.child.as_ref()?;
    let base: u64 = service_pids(v).iter().map(|&p| mem(p).0).sum();
    let mut one = match v.addr {
        Some(_) => open(v, srv.echo),
        None => return None,
    };
    let chunk = vec![1u8; 1 << 20];
    let mut back = vec![0u8; 1 << 20];
    for _ in 0..4 {
        one.write_all(&chunk).unwrap();
        one.read_exact(&mut back).unwrap();
    }
    thread::sleep(Duration::from_millis(200));
    let (pss1, rss1) = if v.name == "dante" {
        let all: Vec<(u64, u64)> = service_pids(v).iter().map(|&p| mem(p)).collect();
        (
            all.iter().map(|m| m.0).sum::<u64>() - base,
            all.iter().map(|m| m.1).sum(),
        )
    } else {
        service_pids(v)
            .iter()
            .map(|&p| mem(p))
            .max_by_key(|m| m.1)
            .unwrap_or((0, 0))
    };
    drop(one);
    thread::sleep(Duration::from_millis(300));
    let base: u64 = service_pids(v).iter().map(|&p| mem(p).0).sum();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = open(v, srv.echo);
        s.write_all(&[9u8; 1024]).unwrap();
        let mut b = [0u8; 1024];
        s.read_exact(&mut b).unwrap();
        held.push(s);
    }
    thread::sleep(Duration::from_millis(500));
    let total: u64 = service_pids(v).iter().map(|&p| mem(p).0).sum();
    drop(held);
    thread::sleep(Duration::from_millis(500));
    Some((pss1, rss1, total.saturating_sub(base) as f64 / n as f64))
}

/// `n` relays at once through `v`, each echoing 1 MiB in 64 KiB steps
/// and then held: total PSS and RSS of the handlers (KiB) while all are
/// open, and the CPU seconds the service spent.
fn scale(v: &Variant, srv: Servers, n: usize) -> (u64, u64, f64, f64) {
    let root = v.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let cpu0 = tree_cpu(root);
    let t = Instant::now();
    let barrier = Arc::new(std::sync::Barrier::new(n + 1));
    let done = Arc::new(std::sync::Barrier::new(n + 1));
    let mut workers = Vec::new();
    for _ in 0..n {
        let (barrier, done) = (barrier.clone(), done.clone());
        let v_addr = v.addr;
        let v_kind = v.kind;
        workers.push(thread::spawn(move || {
            let v = Variant {
                name: "scale",
                kind: v_kind,
                addr: v_addr,
                child: None,
            };
            let mut s = open(&v, srv.echo);
            let chunk = vec![3u8; 64 << 10];
            let mut back = vec![0u8; 64 << 10];
            for _ in 0..16 {
                s.write_all(&chunk).unwrap();
                s.read_exact(&mut back).unwrap();
            }
            barrier.wait();
            done.wait();
            drop(s);
        }));
    }
    barrier.wait();
    let wall = t.elapsed().as_secs_f64();
    let pids = service_pids(v);
    let pss: u64 = pids.iter().map(|&p| mem(p).0).sum();
    let rss: u64 = pids.iter().map(|&p| mem(p).1).sum();
    done.wait();
    for w in workers {
        w.join().unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    (pss, rss, tree_cpu(root) - cpu0, wall)
}

/// Median, min, max.
fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let s = Settings::from_env();
    let srv = servers();
    let vs = variants(&s);
    let names: Vec<&str> = vs.iter().map(|v| v.name).collect();
    let mut up: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut down: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut cpu: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut lat: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut c8: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut c32: HashMap<&str, Vec<f64>> = HashMap::new();

    for round in 0..s.rounds {
        eprintln!("round {}/{}", round + 1, s.rounds);
        for v in &vs {
            if v.kind != Kind::Floor {
                let (bu, cu) = upload(v, srv, s.bytes);
                let (bd, cd) = download(v, srv, s.bytes);
                up.entry(v.name).or_default().push(bu);
                down.entry(v.name).or_default().push(bd);
                cpu.entry(v.name)
                    .or_default()
                    .push((cu + cd) / (2.0 * s.bytes as f64 / GIB));
            }
            let per_round = s.latency_n.div_ceil(s.rounds).max(1);
            for _ in 0..per_round {
                lat.entry(v.name).or_default().push(connect_to_reply(v, srv));
            }
            c8.entry(v.name).or_default().push(conns_per_sec(v, srv, 8, s.conns));
            c32.entry(v.name).or_default().push(conns_per_sec(v, srv, 32, s.conns));
        }
    }
    let mut memo: HashMap<&str, (u64, u64, f64)> = HashMap::new();
    for v in &vs {
        if let Some(m) = memory(v, srv, s.idle) {
            memo.insert(v.name, m);
        }
    }

    // The table.
    let mut out = String::new();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let _ = writeln!(
        out,
        "socks4d bench: {} rounds, {} MiB per transfer, {} latency samples, {} connections per conn/s run, {} held connections, {} CPUs",
        s.rounds,
        s.bytes >> 20,
        s.latency_n,
        s.conns,
        s.idle,
        cpus
    );
    let _ = writeln!(
        out,
        "figures: median [min-max]; (x) ratio to direct, or to the exec floor for start-up and memory"
    );
    let _ = write!(out, "{:<28}", "");
    for n in &names {
        let _ = write!(out, "{n:>26}");
    }
    let _ = writeln!(out);
    let row =
        |out: &mut String, label: &str, data: &HashMap<&str, Vec<f64>>, scale: f64, unit: &str, base: Option<&str>| {
            let _ = write!(out, "{:<28}", format!("{label} ({unit})"));
            let base_med = base.and_then(|b| data.get(b)).map(|x| stats(x.clone()).0);
            for n in &names {
                match data.get(n) {
                    Some(x) if !x.is_empty() => {
                        let (m, lo, hi) = stats(x.clone());
                        let ratio = base_med.map(|b| format!(" ({:.2}x)", m / b)).unwrap_or_default();
                        let cell = format!("{:.2} [{:.2}-{:.2}]{}", m * scale, lo * scale, hi * scale, ratio);
                        let _ = write!(out, "{cell:>26}");
                    }
                    _ => {
                        let _ = write!(out, "{:>26}", "-");
                    }
                }
            }
            let _ = writeln!(out);
        };
    row(&mut out, "upload", &up, 1e-9, "GB/s", Some("direct"));
    row(&mut out, "download", &down, 1e-9, "GB/s", Some("direct"));
    row(&mut out, "CPU per GiB", &cpu, 1e3, "ms", None);
    let p50: HashMap<&str, Vec<f64>> = lat
        .iter()
        .map(|(k, v)| (*k, vec![percentile(v.clone(), 0.5)]))
        .collect();
    let p99: HashMap<&str, Vec<f64>> = lat
        .iter()
        .map(|(k, v)| (*k, vec![percentile(v.clone(), 0.99)]))
        .collect();
    row(&mut out, "connect-to-reply p50", &p50, 1e3, "ms", Some("exec floor"));
    row(&mut out, "connect-to-reply p99", &p99, 1e3, "ms", Some("exec floor"));
    row(&mut out, "conn/s, 8 clients", &c8, 1.0, "1/s", Some("exec floor"));
    row(&mut out, "conn/s, 32 clients", &c32, 1.0, "1/s", Some("exec floor"));
    let m = |f: fn(&(u64, u64, f64)) -> f64| -> HashMap<&str, Vec<f64>> {
        memo.iter().map(|(k, v)| (*k, vec![f(v)])).collect()
    };
    row(
        &mut out,
        "PSS, one relaying",
        &m(|x| x.0 as f64),
        1.0,
        "KiB",
        Some("exec floor"),
    );
    row(
        &mut out,
        "RSS, one relaying",
        &m(|x| x.1 as f64),
        1.0,
        "KiB",
        Some("exec floor"),
    );
    row(
        &mut out,
        "PSS per held connection",
        &m(|x| x.2),
        1.0,
        "KiB",
        Some("exec floor"),
    );
    if let Some(v) = vs.iter().find(|v| v.name == "socks4d inetd") {
        let _ = writeln!(
            out,
            "\nscale, socks4d inetd: N relays at once, each echoing 1 MiB, then all held"
        );
        let _ = writeln!(
            out,
            "{:>6} {:>14} {:>14} {:>14} {:>10}",
            "N", "PSS total MiB", "RSS total MiB", "CPU s", "wall s"
        );
        for &n in &s.scale {
            let (pss, rss, cpu, wall) = scale(v, srv, n);
            let _ = writeln!(
                out,
                "{n:>6} {:>14.1} {:>14.1} {cpu:>14.2} {wall:>10.2}",
                pss as f64 / 1024.0,
                rss as f64 / 1024.0
            );
        }
    }
    print!("{out}");
    if let Some(dir) = std::path::Path::new(&s.out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&s.out, &out).unwrap();
    eprintln!("written to {}", s.out);
}
