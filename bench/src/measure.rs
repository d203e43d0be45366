//! What a client measures through one variant: bulk transfers, the
//! connect-to-reply time, connections per second and the memory of held
//! connections. Every byte that comes back is checked.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::account::{self, Mem};
use crate::dests::{Dests, CHUNK, MSG, T};
use crate::variants::{Kind, Variant};

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
        _ => socks_connect(&mut s, dst)?,
    }
    Ok((s, t.elapsed()))
}

/// Asks the SOCKS4 server at the other end of `s` to CONNECT to `dst`,
/// and reads its grant.
pub fn socks_connect(s: &mut TcpStream, dst: SocketAddr) -> io::Result<()> {
    s.write_all(&socks_req(dst))?;
    let mut r = [0u8; 8];
    s.read_exact(&mut r)?;
    if r[0] != 0 || r[1] != 0x5a {
        return Err(io::Error::other(format!("refused: {r:02x?}")));
    }
    Ok(())
}

/// Sends `bytes` to the sink; bytes per second.
pub fn upload(v: &Variant, d: &Dests, bytes: u64) -> io::Result<f64> {
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

/// Receives `bytes` from the source, with the handler's (PSS, RSS)
/// sampled mid-transfer; bytes per second.
pub fn download_sampled(v: &Variant, d: &Dests, bytes: u64) -> io::Result<(f64, Option<Mem>)> {
    let sample = Mutex::new(None);
    let done = AtomicBool::new(false);
    let rate = thread::scope(|sc| {
        sc.spawn(|| {
            let t = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if t.elapsed() > Duration::from_millis(150) {
                    if v.kind != Kind::Dante {
                        *sample.lock().unwrap() = v.handler().and_then(account::mem);
                    }
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        let r = download(v, d, bytes);
        done.store(true, Ordering::Relaxed);
        r
    })?;
    let m = *sample.lock().unwrap();
    Ok((rate, m))
}

/// Sequential connect-to-reply times in ms: (p50, p99).
pub fn latency(v: &Variant, d: &Dests, n: usize) -> io::Result<(f64, f64)> {
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
    echo(&mut open(v, d.echo)?.0, seed)
}

/// One message to the echo destination at the other end of `s` and back,
/// every byte checked.
pub fn echo(s: &mut TcpStream, seed: u8) -> io::Result<()> {
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

/// `total` exchanges shared by `clients` concurrent clients; connections
/// per second.
pub fn conns_per_sec(v: &Variant, d: &Dests, clients: usize, total: usize) -> io::Result<f64> {
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

/// Opens `n` relayed connections to the hold destination and keeps them.
/// Returns the growth of the variant's tree (PSS, RSS) per connection,
/// and the (PSS, RSS) of one handler holding a connection.
pub fn idle_cost(v: &Variant, d: &Dests, n: usize) -> io::Result<(Mem, Option<Mem>)> {
    let root = v.pid().ok_or_else(|| io::Error::other("no process"))?;
    thread::sleep(Duration::from_millis(300));
    let before = account::tree_mem(root);
    let mut open_ = Vec::with_capacity(n);
    for _ in 0..n {
        open_.push(open(v, d.hold)?.0);
    }
    thread::sleep(Duration::from_millis(500));
    let after = account::tree_mem(root);
    let one = v.handler().and_then(account::mem);
    drop(open_);
    d.held.lock().unwrap().clear();
    thread::sleep(Duration::from_millis(300));
    Ok((((after.0 - before.0) / n as f64, (after.1 - before.1) / n as f64), one))
}
