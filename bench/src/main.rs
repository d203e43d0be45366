//! Side-by-side benchmark on loopback: a direct connection, socks4d under
//! `systemd-socket-activate --inetd`, socks4d `--listen`, Dante (when
//! installed) and the exec floor (`/bin/cat` under the same
//! `systemd-socket-activate --inetd`). Variants are interleaved within each
//! round; each figure is reported as median [min–max] over the rounds.
//!
//! Usage: socks4d-bench --bin PATH [--bin-static PATH] [--extra "ARGS"]
//!        [--bytes N] [--rounds N]
//!        [--latency N] [--conns N] [--idle N] [--out FILE] [--no-dante]
//!        [--rules N,N,...|none] [--c-relay PATH]
//!        [--external NAME=ADDR]... [--external-floor NAME=ADDR]... [--only-external]
//!        [--account-tree PID]
//!
//! `--rules` (default 1,100,1000,20000) adds, for each count, socks4d under
//! the same launcher with a rules file of that many lines, read as text
//! (`rules-N`) and compiled with `--check-config --compile` (`frozen-N`):
//! N-1 lines that do not match the bench's requests, then the permit that
//! does, so every connection goes through the whole file. They get the
//! per-connection figures (connect-to-reply and CPU per connection).
//! `--c-relay` adds bench/c-relay.c under the same launcher: a SOCKS4
//! CONNECT relay in C that does nothing else (no rules, log, ident or
//! confinement), the floor of a relay started per connection.
//! `--bin-static` adds a second build of socks4d (the static musl one)
//! under the same launcher and as `--listen`: `static-inetd` and
//! `static-listen`, with every figure the glibc build gets, so that the two
//! builds are compared in one run.
//!
//! `--external` adds a proxy someone else started (a systemd unit, inetd)
//! and `--external-floor` a handler that echoes the request back (the
//! floor of its launcher); they get the per-connection figures only
//! (latency, connections per second). `--only-external` starts no variants
//! of its own (no --bin needed); bench/container.sh runs it that way inside
//! a booted container, with `--account-tree` naming the container's init:
//! the CPU of that process tree (the instances it reaped included) during
//! each external variant's sequential connections is that variant's "CPU
//! µs per conn", all the container spent on a connection (systemd,
//! journald, the service).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const GIB: f64 = (1u64 << 30) as f64;
const T: Duration = Duration::from_secs(60);
const CHUNK: usize = 1 << 20;
const MSG: usize = 1024;

struct Opts {
    bin: String,
    /// The static build, measured beside `bin`.
    bin_static: Option<String>,
    extra: Vec<String>,
    bytes: u64,
    rounds: usize,
    latency: usize,
    conns: usize,
    idle: usize,
    out: String,
    dante: bool,
    external: Vec<(String, SocketAddr, bool)>,
    only_external: bool,
    /// The process tree whose CPU the external variants are charged with.
    account_tree: Option<u32>,
    /// Rules files of these many lines, read as text and frozen.
    rules: Vec<usize>,
    /// bench/c-relay.c built: the least a per-connection relay does.
    c_relay: Option<String>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        bin: String::new(),
        bin_static: None,
        extra: Vec::new(),
        bytes: 1 << 30,
        rounds: 5,
        latency: 500,
        conns: 2000,
        idle: 200,
        out: "bench/results.txt".into(),
        dante: true,
        external: Vec::new(),
        only_external: false,
        account_tree: None,
        rules: vec![1, 100, 1000, 20_000],
        c_relay: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match a.as_str() {
            "--bin" => o.bin = val()?,
            "--bin-static" => o.bin_static = Some(val()?),
            "--extra" => o.extra = val()?.split_whitespace().map(String::from).collect(),
            "--bytes" => o.bytes = num(val()?)?,
            "--rounds" => o.rounds = num(val()?)? as usize,
            "--latency" => o.latency = num(val()?)? as usize,
            "--conns" => o.conns = num(val()?)? as usize,
            "--idle" => o.idle = num(val()?)? as usize,
            "--out" => o.out = val()?,
            "--no-dante" => o.dante = false,
            "--external" | "--external-floor" => {
                let v = val()?;
                let (name, addr) = v.split_once('=').ok_or(format!("{a} {v}: expected NAME=ADDR"))?;
                let addr = addr.parse().map_err(|e| format!("{a} {v}: {e}"))?;
                o.external.push((name.to_string(), addr, a == "--external-floor"));
            }
            "--only-external" => o.only_external = true,
            "--account-tree" => o.account_tree = Some(num(val()?)? as u32),
            "--c-relay" => o.c_relay = Some(val()?),
            "--rules" => {
                let v = val()?;
                o.rules = if v.is_empty() || v == "none" {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|n| n.parse().map_err(|e| format!("--rules {v}: {e}")))
                        .collect::<Result<_, _>>()?
                };
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if o.bin.is_empty() && !o.only_external {
        return Err("--bin PATH is required".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------- servers

/// The destinations the clients reach, directly or through a proxy.
struct Dests {
    sink: SocketAddr,
    source: SocketAddr,
    echo: SocketAddr,
    hold: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

fn serve<F: Fn(TcpStream) + Send + Sync + Clone + 'static>(l: TcpListener, threads: usize, f: F) {
    for _ in 0..threads {
        let l = l.try_clone().unwrap();
        let f = f.clone();
        thread::spawn(move || loop {
            if let Ok((s, _)) = l.accept() {
                let _ = s.set_read_timeout(Some(T));
                let _ = s.set_write_timeout(Some(T));
                f(s);
            }
        });
    }
}

fn start_dests(bytes: Arc<AtomicU64>) -> Dests {
    // Sink: counts bytes to EOF, answers with the count (8 bytes LE).
    let l = listener();
    let sink = l.local_addr().unwrap();
    serve(l, 2, |mut s| {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(_) => return,
            }
        }
        let _ = s.write_all(&n.to_le_bytes());
    });
    // Source: sends the configured number of bytes, then closes.
    let l = listener();
    let source = l.local_addr().unwrap();
    serve(l, 2, move |mut s| {
        let buf = vec![0x5au8; CHUNK];
        let mut left = bytes.load(Ordering::Relaxed);
        while left > 0 {
            let k = left.min(CHUNK as u64) as usize;
            if s.write_all(&buf[..k]).is_err() {
                return;
            }
            left -= k as u64;
        }
    });
    // Echo: one message back, then wait for the close.
    let l = listener();
    let echo = l.local_addr().unwrap();
    serve(l, 40, |mut s| {
        let mut buf = [0u8; MSG];
        if s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
            let _ = s.read(&mut buf);
        }
    });
    // Hold: keeps every connection open until told to let go.
    let l = listener();
    let hold = l.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    serve(l, 1, move |s| h.lock().unwrap().push(s));
    Dests {
        sink,
        source,
        echo,
        hold,
        held,
    }
}

// --------------------------------------------------------------- variants

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Direct,
    Inetd,
    Listen,
    Dante,
    Floor,
    /// socks4d with a rules file: per-connection figures only.
    Rules,
    /// Started by someone else: per-connection figures only.
    External,
    ExternalFloor,
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
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    listener().local_addr().unwrap().port()
}

fn wait_up(addr: SocketAddr) -> io::Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, format!("{addr} never came up")))
}

fn spawn(name: &'static str, kind: Kind, cmd: &mut Command, addr: SocketAddr) -> io::Result<Variant> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let v = Variant {
        name,
        kind,
        addr: Some(addr),
        child: Some(child),
    };
    wait_up(addr)?;
    Ok(v)
}

fn activate(name: &'static str, kind: Kind, prog: &str, args: &[String]) -> io::Result<Variant> {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["--inetd", "-a", "-l", &addr.to_string(), prog]).args(args);
    spawn(name, kind, &mut cmd, addr)
}

fn dante(dir: &str) -> io::Result<Variant> {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let conf = format!(
        "logoutput: stderr\n\
         internal: 127.0.0.1 port = {port}\n\
         external: 127.0.0.1\n\
         clientmethod: none\n\
         socksmethod: none\n\
         user.privileged: root\n\
         user.unprivileged: nobody\n\
         client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
         socks pass {{ from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }}\n"
    );
    let path = format!("{dir}/danted.conf");
    std::fs::write(&path, conf)?;
    let pid = format!("{dir}/danted.pid");
    spawn(
        "dante",
        Kind::Dante,
        Command::new("danted").args(["-f", &path, "-p", &pid]),
        addr,
    )
}

// ------------------------------------------------------------ the client

fn socks_req(dst: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(d) = dst else { unreachable!() };
    let mut r = vec![4, 1];
    r.extend_from_slice(&d.port().to_be_bytes());
    r.extend_from_slice(&d.ip().octets());
    r.extend_from_slice(b"bench\0");
    r
}

/// Connects to `dst`, through the variant when it has an address, and
/// completes the handshake. Returns the stream and the connect-to-reply
/// time.
fn open(v: &Variant, dst: SocketAddr) -> io::Result<(TcpStream, Duration)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(v.addr.unwrap_or(dst))?;
    s.set_read_timeout(Some(T))?;
    s.set_write_timeout(Some(T))?;
    let _ = s.set_nodelay(true);
    match v.kind {
        Kind::Direct => {}
        Kind::Floor | Kind::ExternalFloor => {
            // cat echoes: the "reply" is the request coming back.
            s.write_all(b"\x04\x01\0\0\0\0\0\0")?;
            let mut r = [0u8; 8];
            s.read_exact(&mut r)?;
            if &r != b"\x04\x01\0\0\0\0\0\0" {
                return Err(io::Error::other("floor echoed wrong bytes"));
            }
        }
        _ => {
            s.write_all(&socks_req(dst))?;
            let mut r = [0u8; 8];
            s.read_exact(&mut r)?;
            if r[0] != 0 || r[1] != 0x5a {
                return Err(io::Error::other(format!("refused: {r:02x?}")));
            }
        }
    }
    Ok((s, t.elapsed()))
}

fn upload(v: &Variant, d: &Dests, bytes: u64) -> io::Result<f64> {
    let (mut s, _) = open(v, d.sink)?;
    let buf = vec![0xa5u8; CHUNK];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k])?;
        left -= k as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)?;
    let secs = t.elapsed().as_secs_f64();
    if u64::from_le_bytes(ack) != bytes {
        return Err(io::Error::other(format!(
            "sink got {} of {bytes}",
            u64::from_le_bytes(ack)
        )));
    }
    Ok(bytes as f64 / secs)
}

fn download(v: &Variant, d: &Dests, bytes: u64) -> io::Result<f64> {
    let (mut s, _) = open(v, d.source)?;
    let mut buf = vec![0u8; CHUNK];
    let t = Instant::now();
    let mut n = 0u64;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            k => n += k as u64,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if n != bytes {
        return Err(io::Error::other(format!("got {n} of {bytes}")));
    }
    Ok(bytes as f64 / secs)
}

/// Sequential connect-to-reply times in ms: (p50, p99).
fn latency(v: &Variant, d: &Dests, n: usize) -> io::Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, took) = open(v, d.echo)?;
        ms.push(took.as_secs_f64() * 1e3);
        drop(s);
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok((pct(&ms, 50.0), pct(&ms, 99.0)))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One request/response connection with every byte checked.
fn exchange(v: &Variant, d: &Dests, seed: u8) -> io::Result<()> {
    let (mut s, _) = open(v, d.echo)?;
    let msg: Vec<u8> = (0..MSG)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    s.write_all(&msg)?;
    let mut back = vec![0u8; MSG];
    s.read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::other("echo mismatch"));
    }
    Ok(())
}

fn conns_per_sec(v: &Variant, d: &Dests, clients: usize, total: usize) -> io::Result<f64> {
    let per = total.div_ceil(clients);
    let t = Instant::now();
    let errors = thread::scope(|sc| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                sc.spawn(move || -> io::Result<()> {
                    for i in 0..per {
                        exchange(v, d, (c * 7 + i) as u8)?;
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect::<Vec<_>>()
    });
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok((per * clients) as f64 / t.elapsed().as_secs_f64())
}

// ------------------------------------------------------ /proc accounting

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// `root` and all its descendants.
fn tree(root: u32) -> Vec<u32> {
    let mut parent = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() {
            if let Some(f) = stat_fields(pid) {
                parent.insert(pid, f[1].parse::<u32>().unwrap_or(0));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

/// user+sys seconds of the tree, reaped children included.
fn cpu(root: u32) -> f64 {
    let hz = 100.0; // USER_HZ on Linux
    tree(root)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| f[11..15].iter().map(|x| x.parse::<f64>().unwrap_or(0.0)).sum::<f64>() / hz)
        .sum()
}

/// (PSS, RSS) in KiB from smaps_rollup.
fn mem(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|x| x.parse::<f64>().ok())
    };
    Some((get("Pss:")?, get("Rss:")?))
}

fn tree_mem(root: u32) -> (f64, f64) {
    tree(root)
        .into_iter()
        .filter_map(mem)
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn root_pid(v: &Variant) -> Option<u32> {
    v.child.as_ref().map(|c| c.id())
}

/// The newest handler process under the variant's launcher.
fn handler(v: &Variant) -> Option<u32> {
    let root = root_pid(v)?;
    tree(root).into_iter().filter(|&p| p != root).max()
}

/// Opens `n` relayed connections to the hold server and keeps them.
/// Returns (tree PSS, tree RSS) growth per connection in KiB, and the
/// (PSS, RSS) of one handler holding a connection.
/// (PSS, RSS) in KiB.
type Mem = (f64, f64);

fn idle_cost(v: &Variant, d: &Dests, n: usize) -> io::Result<(Mem, Option<Mem>)> {
    let root = root_pid(v).ok_or_else(|| io::Error::other("no process"))?;
    thread::sleep(Duration::from_millis(300));
    let before = tree_mem(root);
    let mut open_ = Vec::with_capacity(n);
    for _ in 0..n {
        open_.push(open(v, d.hold)?.0);
    }
    thread::sleep(Duration::from_millis(500));
    let after = tree_mem(root);
    let one = handler(v).and_then(mem);
    drop(open_);
    d.held.lock().unwrap().clear();
    thread::sleep(Duration::from_millis(300));
    Ok((((after.0 - before.0) / n as f64, (after.1 - before.1) / n as f64), one))
}

/// Download with the handler's memory sampled mid-transfer.
fn download_sampled(v: &Variant, d: &Dests, bytes: u64) -> io::Result<(f64, Option<(f64, f64)>)> {
    let sample = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicU64::new(0));
    let rate = thread::scope(|sc| {
        let (s2, d2) = (sample.clone(), done.clone());
        sc.spawn(move || {
            let t = Instant::now();
            while d2.load(Ordering::Relaxed) == 0 {
                if t.elapsed() > Duration::from_millis(150) {
                    if v.kind != Kind::Dante {
                        *s2.lock().unwrap() = handler(v).and_then(mem);
                    }
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        let r = download(v, d, bytes);
        done.store(1, Ordering::Relaxed);
        r
    })?;
    let m = *sample.lock().unwrap();
    Ok((rate, m))
}

// ------------------------------------------------------------------ run

/// The scale table: per-connection cost by rules-file size, as text and
/// frozen, each against the one-line text file.
fn rules_table(s: &Samples, counts: &[usize]) -> String {
    let p50 = "connect-to-reply p50 ms";
    let cpu = "CPU µs per conn";
    let base = |fig: &str| s.med(fig, "rules-1");
    let ratio = |fig: &str, var: &str| match (s.med(fig, var), base(fig)) {
        (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
        _ => "-".into(),
    };
    let mut out = String::from(
        "\n| rules lines | text: p50 ms | text: CPU µs/conn | frozen: p50 ms | frozen: CPU µs/conn | frozen / 1-line text: p50, CPU (target) |\n|---|---|---|---|---|---|\n",
    );
    for &n in counts {
        let (t, f) = (format!("rules-{n}"), format!("frozen-{n}"));
        let target = match n {
            1000 => " (<= 1.2)",
            20_000 => " (<= 2)",
            _ => "",
        };
        out += &format!(
            "| {n} | {} | {} | {} | {} | {}, {}{target} |\n",
            s.cell(p50, &t),
            s.cell(cpu, &t),
            s.cell(p50, &f),
            s.cell(cpu, &f),
            ratio(p50, &f),
            ratio(cpu, &f)
        );
    }
    out
}

#[derive(Default)]
struct Samples(BTreeMap<(String, &'static str), Vec<f64>>);

impl Samples {
    fn add(&mut self, fig: &str, var: &'static str, x: f64) {
        self.0.entry((fig.to_string(), var)).or_default().push(x);
    }
    fn med(&self, fig: &str, var: &str) -> Option<f64> {
        let v = self.0.iter().find(|((f, n), _)| f == fig && *n == var)?.1;
        let mut s = v.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Some(if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        })
    }
    fn cell(&self, fig: &str, var: &str) -> String {
        let Some(v) = self.0.iter().find(|((f, n), _)| f == fig && *n == var).map(|x| x.1) else {
            return "-".into();
        };
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let m = self.med(fig, var).unwrap();
        if v.len() == 1 {
            fmt(m)
        } else {
            format!("{} [{}–{}]", fmt(m), fmt(min), fmt(max))
        }
    }
}

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("socks4d-bench: {e}");
            std::process::exit(64);
        }
    };
    let bytes = Arc::new(AtomicU64::new(o.bytes));
    let d = start_dests(bytes);
    let dir = std::env::temp_dir().join(format!("socks4d-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut vars = vec![Variant {
        name: "direct",
        kind: Kind::Direct,
        addr: None,
        child: None,
    }];
    for (name, addr, floor) in &o.external {
        // Names live as long as the run; leak them into &'static str.
        let name: &'static str = Box::leak(name.clone().into_boxed_str());
        vars.push(Variant {
            name,
            kind: if *floor { Kind::ExternalFloor } else { Kind::External },
            addr: Some(*addr),
            child: None,
        });
    }
    if !o.only_external {
        local_variants(&o, &dir, &mut vars);
    }
    run(&o, d, vars, dir);
}

/// The variants this client starts itself.
fn local_variants(o: &Opts, dir: &std::path::Path, vars: &mut Vec<Variant>) {
    let up = |r: io::Result<Variant>, what: &str| match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("socks4d-bench: {what} not measured: {e}");
            None
        }
    };
    let builds = [
        Some(("socks4d-inetd", "socks4d-listen", &o.bin)),
        o.bin_static.as_ref().map(|b| ("static-inetd", "static-listen", b)),
    ];
    for (inetd, listen, bin) in builds.into_iter().flatten() {
        vars.extend(up(activate(inetd, Kind::Inetd, bin, &o.extra), inetd));
        let laddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // Every bench client comes from 127.0.0.1: no per-source limit
        // below the 32 concurrent clients (and the children still ending).
        let mut listen_args = vec![
            "--listen".to_string(),
            laddr.to_string(),
            "--max-per-source".to_string(),
            "1000".to_string(),
        ];
        listen_args.extend(o.extra.iter().cloned());
        vars.extend(up(
            spawn(listen, Kind::Listen, Command::new(bin).args(&listen_args), laddr),
            listen,
        ));
    }
    if o.dante {
        vars.extend(up(dante(dir.to_str().unwrap()), "dante"));
    }
    vars.extend(up(activate("exec-floor", Kind::Floor, "/bin/cat", &[]), "exec floor"));
    if let Some(c) = &o.c_relay {
        vars.extend(up(activate("c-relay", Kind::Inetd, c, &[]), "c-relay"));
    }
    for &n in &o.rules {
        for frozen in [false, true] {
            let name: &'static str =
                Box::leak(format!("{}-{n}", if frozen { "frozen" } else { "rules" }).into_boxed_str());
            let made = rules_file(o, dir, n, frozen).and_then(|path| {
                let mut args = o.extra.clone();
                args.extend(["-f".to_string(), path]);
                activate(name, Kind::Rules, &o.bin, &args)
            });
            vars.extend(up(made, name));
        }
    }
}

/// A rules file of `n` lines in `dir` (compiled when `frozen`): `n - 1`
/// lines in three forms that no bench request matches, then the permit
/// for loopback clients.
fn rules_file(o: &Opts, dir: &std::path::Path, n: usize, frozen: bool) -> io::Result<String> {
    let mut text = String::new();
    for i in 0..n.saturating_sub(1) {
        let (a, b, c) = ((i >> 16) & 255, (i >> 8) & 255, i & 255);
        let port = 1024 + i % 50_000;
        text += &match i % 3 {
            0 => format!("deny 10.{a}.{b}.{c} 255.255.255.255 192.0.2.0 255.255.255.0 eq {port}\n"),
            1 => format!("deny 10.{a}.{b}.{c}/32 198.51.100.0/24 ge {port}\n"),
            _ => format!("permit ?=n 10.{a}.{b}.{c} 255.255.255.255 eq 25\n"),
        };
    }
    text += "permit 127.0.0.0 255.0.0.0\n";
    let path = dir.join(format!("{}-{n}.conf", if frozen { "frozen" } else { "rules" }));
    std::fs::write(&path, text)?;
    let path = path.display().to_string();
    if frozen {
        let out = Command::new(&o.bin)
            .args(["--check-config", "--compile", "-f", &path])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "--compile {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(path)
}

/// The time now, UTC, as `YYYY-MM-DD HH:MM`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

/// The load averages over 1, 5 and 15 minutes, as /proc/loadavg has them.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn run(o: &Opts, d: Dests, vars: Vec<Variant>, dir: std::path::PathBuf) {
    let (started, load_before) = (utc_now(), load());
    let mut s = Samples::default();
    let mut failures = Vec::new();
    let gib = o.bytes as f64 / GIB;
    for round in 0..o.rounds {
        eprintln!("round {}/{}", round + 1, o.rounds);
        // Each round runs the variants in a different order.
        let n = vars.len();
        for k in 0..n {
            let v = &vars[(k + round) % n];
            let mut run = |what: &str, r: io::Result<()>| {
                if let Err(e) = r {
                    failures.push(format!("{} {what}: {e}", v.name));
                }
            };
            let per_connection_only =
                matches!(v.kind, Kind::Floor | Kind::Rules | Kind::External | Kind::ExternalFloor);
            if !per_connection_only {
                let root = root_pid(v);
                let c0 = root.map(cpu);
                run(
                    "upload",
                    upload(v, &d, o.bytes).map(|r| s.add("upload MB/s", v.name, r / 1e6)),
                );
                // The handler's end is reaped before the next reading.
                let c_up = root.map(|root| {
                    thread::sleep(Duration::from_millis(200));
                    cpu(root)
                });
                run(
                    "download",
                    download_sampled(v, &d, o.bytes).map(|(r, m)| {
                        s.add("download MB/s", v.name, r / 1e6);
                        if let Some((pss, rss)) = m {
                            s.add("handler PSS KiB (relaying)", v.name, pss);
                            s.add("handler RSS KiB (relaying)", v.name, rss);
                        }
                    }),
                );
                if let (Some(root), Some(c0), Some(c_up)) = (root, c0, c_up) {
                    thread::sleep(Duration::from_millis(200));
                    let c_end = cpu(root);
                    s.add("CPU ms per GiB", v.name, (c_end - c0) * 1e3 / (2.0 * gib));
                    s.add("CPU ms per GiB, up", v.name, (c_up - c0) * 1e3 / gib);
                    s.add("CPU ms per GiB, down", v.name, (c_end - c_up) * 1e3 / gib);
                }
            }
            let external = matches!(v.kind, Kind::External | Kind::ExternalFloor);
            let root = if external { o.account_tree } else { root_pid(v) };
            if external && root.is_some() {
                // What the previous variant left running ends first.
                thread::sleep(Duration::from_millis(500));
            }
            let c0 = root.map(cpu);
            run(
                "latency",
                latency(v, &d, o.latency).map(|(p50, p99)| {
                    s.add("connect-to-reply p50 ms", v.name, p50);
                    s.add("connect-to-reply p99 ms", v.name, p99);
                }),
            );
            if let (Some(root), Some(c0)) = (root, c0) {
                // Let the launcher reap the last handlers first.
                thread::sleep(Duration::from_millis(300));
                s.add("CPU µs per conn", v.name, (cpu(root) - c0) * 1e6 / o.latency as f64);
            }
            if v.kind == Kind::Rules {
                continue;
            }
            for c in [8, 32] {
                let fig = format!("conn/s, {c} clients");
                run(
                    &fig.clone(),
                    conns_per_sec(v, &d, c, o.conns).map(|r| s.add(&fig, v.name, r)),
                );
            }
            if !matches!(v.kind, Kind::Direct | Kind::External | Kind::ExternalFloor) {
                run(
                    "idle",
                    idle_cost(v, &d, o.idle).map(|((pss, rss), one)| {
                        s.add(&format!("PSS KiB per held conn ({})", o.idle), v.name, pss);
                        s.add(&format!("RSS KiB per held conn ({})", o.idle), v.name, rss);
                        if let (Some((p, r)), true) = (one, v.kind != Kind::Dante) {
                            s.add("handler PSS KiB (idle)", v.name, p);
                            s.add("handler RSS KiB (idle)", v.name, r);
                        }
                    }),
                );
            }
        }
    }

    let names: Vec<&str> = vars.iter().filter(|v| v.kind != Kind::Rules).map(|v| v.name).collect();
    let figs = [
        "upload MB/s".to_string(),
        "download MB/s".to_string(),
        "CPU ms per GiB".to_string(),
        "CPU ms per GiB, up".to_string(),
        "CPU ms per GiB, down".to_string(),
        "connect-to-reply p50 ms".to_string(),
        "connect-to-reply p99 ms".to_string(),
        "CPU µs per conn".to_string(),
        "conn/s, 8 clients".to_string(),
        "conn/s, 32 clients".to_string(),
        "handler PSS KiB (relaying)".to_string(),
        "handler RSS KiB (relaying)".to_string(),
        "handler PSS KiB (idle)".to_string(),
        "handler RSS KiB (idle)".to_string(),
        format!("PSS KiB per held conn ({})", o.idle),
        format!("RSS KiB per held conn ({})", o.idle),
    ];
    let mut out = String::new();
    out += &format!(
        "socks4d bench: {} round(s), {:.2} GiB per bulk run, {} sequential connections, {} per conn/s run, {} held; median [min–max]\n",
        o.rounds, gib, o.latency, o.conns, o.idle
    );
    out += &format!(
        "run {started} to {} UTC, {} CPUs; load average (1, 5, 15 min) {load_before} at the start, {} at the end\n\n",
        utc_now(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    out += &format!("| {:<28} |", "figure");
    for n in &names {
        out += &format!(" {n:<24} |");
    }
    out += "\n|";
    out += &"-".repeat(30);
    out += "|";
    for _ in &names {
        out += &"-".repeat(26);
        out += "|";
    }
    out += "\n";
    for f in &figs {
        out += &format!("| {f:<28} |");
        for n in &names {
            out += &format!(" {:<24} |", s.cell(f, n));
        }
        out += "\n";
    }

    // Ratios of medians behind the targets.
    let r = |f: &str, a: &str, b: &str| match (s.med(f, a), s.med(f, b)) {
        (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
        _ => "-".into(),
    };
    let held = format!("PSS KiB per held conn ({})", o.idle);
    let lines = [
        (
            "upload, inetd / direct (>= 0.70)",
            r("upload MB/s", "socks4d-inetd", "direct"),
        ),
        (
            "download, inetd / direct (>= 0.70)",
            r("download MB/s", "socks4d-inetd", "direct"),
        ),
        (
            "upload, inetd / dante (>= 1.6)",
            r("upload MB/s", "socks4d-inetd", "dante"),
        ),
        (
            "download, inetd / dante (>= 1.6)",
            r("download MB/s", "socks4d-inetd", "dante"),
        ),
        (
            "CPU per GiB, inetd / dante (<= 0.25)",
            r("CPU ms per GiB", "socks4d-inetd", "dante"),
        ),
        (
            "p50, inetd / floor (<= 1.10)",
            r("connect-to-reply p50 ms", "socks4d-inetd", "exec-floor"),
        ),
        (
            "conn/s 8, inetd / floor (>= 0.90)",
            r("conn/s, 8 clients", "socks4d-inetd", "exec-floor"),
        ),
        (
            "conn/s 32, inetd / floor (>= 0.90)",
            r("conn/s, 32 clients", "socks4d-inetd", "exec-floor"),
        ),
        (
            "CPU per conn, inetd / floor (<= 1.2)",
            r("CPU µs per conn", "socks4d-inetd", "exec-floor"),
        ),
        (
            "p50, inetd / c-relay (no target)",
            r("connect-to-reply p50 ms", "socks4d-inetd", "c-relay"),
        ),
        (
            "CPU per conn, inetd / c-relay (no target)",
            r("CPU µs per conn", "socks4d-inetd", "c-relay"),
        ),
        (
            "conn/s 8, inetd / c-relay (no target)",
            r("conn/s, 8 clients", "socks4d-inetd", "c-relay"),
        ),
        (
            "PSS per held conn, inetd / c-relay (no target)",
            r(&held, "socks4d-inetd", "c-relay"),
        ),
        (
            "p50, listen / dante (<= 1.00)",
            r("connect-to-reply p50 ms", "socks4d-listen", "dante"),
        ),
        (
            "PSS per held conn, inetd / floor (<= 1.0)",
            r(&held, "socks4d-inetd", "exec-floor"),
        ),
        // Under a booted systemd (bench/container.sh).
        (
            "p50, accept-yes unit / trivial accept-yes unit (<= 1.50)",
            r("connect-to-reply p50 ms", "unit-accept-yes", "unit-floor"),
        ),
        (
            "conn/s 8, accept-yes unit / trivial accept-yes unit (>= 0.67)",
            r("conn/s, 8 clients", "unit-accept-yes", "unit-floor"),
        ),
        (
            "conn/s 32, accept-yes unit / trivial accept-yes unit (>= 0.67)",
            r("conn/s, 32 clients", "unit-accept-yes", "unit-floor"),
        ),
        (
            "CPU per conn, accept-yes unit / trivial accept-yes unit (no target)",
            r("CPU µs per conn", "unit-accept-yes", "unit-floor"),
        ),
        (
            "p50, accept-no unit / --listen (<= 1.20)",
            r("connect-to-reply p50 ms", "unit-accept-no", "listen"),
        ),
        (
            "conn/s 8, accept-no unit / --listen (>= 0.80)",
            r("conn/s, 8 clients", "unit-accept-no", "listen"),
        ),
        (
            "conn/s 32, accept-no unit / --listen (>= 0.80)",
            r("conn/s, 32 clients", "unit-accept-no", "listen"),
        ),
    ];
    let mut lines: Vec<(String, String)> = lines.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    // Each build's relay against the C relay's, in both directions.
    for (var, label) in [("socks4d-inetd", "inetd"), ("static-inetd", "static inetd")] {
        for (fig, what, target) in [
            ("upload MB/s", "upload", ">= 1.0"),
            ("download MB/s", "download", ">= 1.0"),
            ("CPU ms per GiB, up", "CPU per GiB up", "<= 1.0"),
            ("CPU ms per GiB, down", "CPU per GiB down", "<= 1.0"),
        ] {
            lines.push((format!("{what}, {label} / c-relay ({target})"), r(fig, var, "c-relay")));
        }
    }
    // The static build against the floor, and against the glibc build.
    for (fig, what, target) in [
        ("connect-to-reply p50 ms", "p50", "<= 1.10"),
        ("conn/s, 8 clients", "conn/s 8", ">= 0.90"),
        ("conn/s, 32 clients", "conn/s 32", ">= 0.90"),
        ("CPU µs per conn", "CPU per conn", "<= 1.2"),
        (held.as_str(), "PSS per held conn", "<= 1.0"),
    ] {
        lines.push((
            format!("{what}, static inetd / floor ({target})"),
            r(fig, "static-inetd", "exec-floor"),
        ));
    }
    for (fig, what, target) in [
        ("upload MB/s", "upload", ">= 1.0"),
        ("download MB/s", "download", ">= 1.0"),
        ("CPU ms per GiB", "CPU per GiB", "no target"),
        ("connect-to-reply p50 ms", "p50", "no target"),
        ("CPU µs per conn", "CPU per conn", "no target"),
        ("conn/s, 8 clients", "conn/s 8", "no target"),
        (held.as_str(), "PSS per held conn", "no target"),
    ] {
        lines.push((
            format!("{what}, static inetd / inetd ({target})"),
            r(fig, "static-inetd", "socks4d-inetd"),
        ));
    }
    for (fig, what) in [
        ("connect-to-reply p50 ms", "p50"),
        ("CPU µs per conn", "CPU per conn"),
        ("conn/s, 8 clients", "conn/s 8"),
    ] {
        lines.push((
            format!("{what}, static --listen / --listen (no target)"),
            r(fig, "static-listen", "socks4d-listen"),
        ));
    }
    out += "\n| ratio (target) | value |\n|---|---|\n";
    // Only the ratios whose variants ran.
    for (k, v) in lines.into_iter().filter(|(_, v)| v != "-") {
        out += &format!("| {k} | {v} |\n");
    }
    if !o.rules.is_empty() {
        out += &rules_table(&s, &o.rules);
    }
    if !failures.is_empty() {
        out += "\nfailures:\n";
        for f in &failures {
            out += &format!("  {f}\n");
        }
    }
    print!("{out}");
    if let Err(e) = std::fs::write(&o.out, &out) {
        eprintln!("socks4d-bench: {}: {e}", o.out);
    }
    drop(vars);
    let _ = std::fs::remove_dir_all(&dir);
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
