//! Sockets and peers: loopback connections (from addresses of their own
//! where an identd is asked), the SOCKS client's bytes, destinations, an
//! HTTP server, and payloads with their checksums.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::skip::require_root;
use super::{encode, Cd, Request, IO_TIMEOUT};

/// A connected pair on loopback: (client end, server end).
pub fn socket_pair() -> (TcpStream, TcpStream) {
    socket_pair_at("127.0.0.1")
}

/// A connected pair whose server end is on `ip` (a loopback address).
pub fn socket_pair_at(ip: &str) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    (c, s)
}

/// A connected pair whose client end is bound to the loopback address
/// `src` and whose server end is on `ip`: socks4d, given the server end,
/// sees a client at `src` and asks `src`'s identd (see [`identd_listener`]).
pub fn socket_pair_from(src: Ipv4Addr, ip: &str) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let c = connect_from(src, l.local_addr().unwrap());
    let (s, _) = l.accept().unwrap();
    (c, s)
}

/// As [`socket_pair_from`], with the client end made by a thread whose
/// file-system uid is `uid`: the socket belongs to that user, whom an
/// identd names as its owner.
pub fn socket_pair_as(uid: u32, src: Ipv4Addr, ip: &str) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let to = l.local_addr().unwrap();
    let c = thread::spawn(move || {
        // SAFETY: setfsuid(2) changes this thread's file-system uid only,
        // and the thread ends here.
        unsafe { nix::libc::setfsuid(uid) };
        connect_from(src, to)
    })
    .join()
    .unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

/// The port socks4d asks identification servers on: always 113.
pub const IDENT_PORT: u16 = 113;

/// A listener for an identification server: port 113 on a loopback
/// address of its own in 127.113.0.0/16, so that tests running at once,
/// in this process or another, each have one. A client that connects from
/// that address ([`socket_pair_from`], [`connect_from`]) is asked about
/// there. Binding port 113 needs root: `None` (a skip, or a failure under
/// CI, as [`require_root`]) without it.
pub fn identd_listener() -> Option<(TcpListener, Ipv4Addr)> {
    if !require_root() {
        return None;
    }
    for candidate in loopback_addresses(113) {
        match TcpListener::bind((candidate, IDENT_PORT)) {
            Ok(l) => return Some((l, candidate)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("bind {candidate}:{IDENT_PORT}: {e}"),
        }
    }
    panic!("no free port {IDENT_PORT} in 127.113.0.0/16");
}

/// What a [`fake_identd`] does with each query.
pub enum Identd {
    /// Answers `<ports> : <rest>` with the ports it was asked about.
    Answer(String),
    /// Answers this exact text, whatever was asked.
    Raw(&'static str),
    /// Accepts and says nothing for [`IO_TIMEOUT`].
    Silent,
}

/// A fake identd on port 113 of a loopback address of its own
/// ([`identd_listener`]), for the rest of the test: returns its address,
/// which the client must connect from, and a receiver of (the query line,
/// the address the query came from) for each query; `None` without root
/// (a skip, or a failure under CI).
pub fn fake_identd(behaviour: Identd) -> Option<(Ipv4Addr, mpsc::Receiver<(String, SocketAddr)>)> {
    let (l, ip) = identd_listener()?;
    let over = ServersOfTest::current().add(&l);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let accepted = std::iter::from_fn(|| loop {
            match l.accept() {
                Ok(a) => return Some(a),
                Err(_) if over.load(Ordering::SeqCst) => return None,
                Err(_) => continue,
            }
        });
        for (mut s, from) in accepted {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut q = String::new();
            let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut q);
            let _ = tx.send((q.clone(), from));
            match &behaviour {
                Identd::Answer(rest) => {
                    let ports = q.trim_end();
                    let _ = s.write_all(format!("{ports} : {rest}\r\n").as_bytes());
                }
                Identd::Raw(text) => {
                    let _ = s.write_all(text.as_bytes());
                }
                Identd::Silent => thread::sleep(IO_TIMEOUT),
            }
        }
    });
    Some((ip, rx))
}

/// A loopback address of its own for a real identd: one where port 113
/// was free a moment ago ([`identd_listener`]). `None` without root.
pub fn identd_address() -> Option<Ipv4Addr> {
    identd_listener().map(|(_, ip)| ip)
}

/// A loopback address in 127.114.0.0/16, where no test listens on
/// anything: a client from there gets its ident query refused.
pub fn quiet_address() -> Ipv4Addr {
    loopback_addresses(114).next().unwrap()
}

/// Addresses 127.`second`.x.y, from a starting point that differs between
/// calls and between processes, each once.
fn loopback_addresses(second: u8) -> impl Iterator<Item = Ipv4Addr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const HOSTS: u32 = 254 * 254;
    let start = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 104_729);
    (0..HOSTS).map(move |i| {
        let n = start.wrapping_add(i) % HOSTS;
        Ipv4Addr::new(127, second, (n / 254 + 1) as u8, (n % 254 + 1) as u8)
    })
}

/// Connects from the loopback address `src`, with test timeouts.
pub fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let deadline = socks4d::net::Deadline::after(IO_TIMEOUT);
    let s = socks4d::net::connect(to, Some(SocketAddr::new(src.into(), 0)), deadline).unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Connects to a proxy at `addr`, with test timeouts.
pub fn connect_to(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// An address where nothing listens, and nothing will while the tests
/// run: a socket bound there and never listening holds the port (a
/// connection to it is refused), so that no other test's listener takes
/// it meanwhile.
pub fn closed_port() -> SocketAddr {
    use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    let bound: SockaddrIn = getsockname(fd.as_raw_fd()).unwrap();
    // Held for the rest of the process.
    std::mem::forget(fd);
    SocketAddr::from(([127, 0, 0, 1], bound.port()))
}

/// A port free now, for a server a test starts (it may be taken by
/// another meanwhile: the server's start then fails, and the test says
/// so).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts on `addr`.
pub fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(start.elapsed() < IO_TIMEOUT, "nothing listening on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A CONNECT request's bytes.
pub fn connect_req(dst: SocketAddr, user: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(v4) = dst else { panic!("IPv4 only") };
    encode(&Request {
        command: Cd::Connect,
        port: v4.port(),
        ip: *v4.ip(),
        userid: user.to_vec(),
        hostname: None,
    })
}

/// A SOCKS4a CONNECT request's bytes.
pub fn connect_4a(host: &str, port: u16, user: &[u8]) -> Vec<u8> {
    encode(&Request {
        command: Cd::Connect,
        port,
        ip: Ipv4Addr::new(0, 0, 0, 1),
        userid: user.to_vec(),
        hostname: Some(host.as_bytes().to_vec()),
    })
}

/// Reads the 8-byte reply.
pub fn read_reply(s: &mut TcpStream) -> [u8; 8] {
    let mut r = [0u8; 8];
    s.read_exact(&mut r).expect("read 8-byte reply");
    r
}

/// Reads to EOF. Panics on a reset or a timeout.
pub fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read to EOF");
    v
}

/// Sends `data` from another thread (then a half-close) while reading
/// what comes back to EOF: a relay test's exchange without a deadlock on
/// full socket buffers.
pub fn send_and_read(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let mut w = s.try_clone().expect("clone the client socket");
    let sent = data.to_vec();
    let writer = thread::spawn(move || {
        w.write_all(&sent).expect("send the payload");
        w.shutdown(Shutdown::Write).expect("half-close");
    });
    let back = read_all(s);
    writer.join().expect("the writer thread");
    back
}

/// True when the peer closed: EOF or reset, with no data.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// A destination on loopback that accepts one connection and hands it to
/// `f` on a thread.
pub struct Dest {
    pub addr: SocketAddr,
    pub handle: JoinHandle<()>,
}

pub fn dest<F: FnOnce(TcpStream) + Send + 'static>(f: F) -> Dest {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // Never called, it goes when the test does; called, at once.
    let servers = ServersOfTest::current();
    let over = servers.add(&l);
    let servers = Arc::downgrade(&servers.0);
    let handle = thread::spawn(move || {
        let accepted = l.accept();
        if let Some(servers) = servers.upgrade() {
            servers.remove(&over);
        }
        drop(l);
        let Ok((s, _)) = accepted else { return };
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        f(s)
    });
    Dest { addr, handle }
}

/// A destination that echoes everything back, then closes its side.
pub fn echo_dest() -> Dest {
    dest(echo)
}

/// Echoes everything back, then closes the sending side.
pub fn echo(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// An echo server for any number of connections, for the test's life.
pub fn echo_server() -> SocketAddr {
    serve_each("127.0.0.1", |s| {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        thread::spawn(move || echo(s));
    })
}

/// A destination that keeps every connection open until the list is
/// cleared.
pub fn holder() -> (SocketAddr, Arc<Mutex<Vec<TcpStream>>>) {
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    let addr = serve_each("127.0.0.1", move |s| h.lock().unwrap().push(s));
    (addr, held)
}

/// A server on port 0 of `ip` that hands each connection to `f`, on its
/// accept thread, for as long as the test runs; returns its address.
pub fn serve_each(ip: &str, mut f: impl FnMut(TcpStream) + Send + 'static) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let over = ServersOfTest::current().add(&l);
    thread::spawn(move || loop {
        match l.accept() {
            Ok((s, _)) => f(s),
            Err(_) if over.load(Ordering::SeqCst) => return,
            Err(_) => continue,
        }
    });
    addr
}

/// The listening sockets of the servers the running test started. When
/// its thread ends, each is shut down: its accept thread ends, and the
/// thread and the descriptor no longer add up in the one process that
/// runs every group.
#[derive(Clone)]
pub struct ServersOfTest(Arc<Listeners>);

struct Listeners(Mutex<Vec<(TcpListener, Arc<AtomicBool>)>>);

thread_local! {
    static SERVERS: RefCell<Option<ServersOfTest>> = const { RefCell::new(None) };
}

impl ServersOfTest {
    /// The running test's: this thread's, or those it adopted.
    pub fn current() -> ServersOfTest {
        SERVERS.with(|s| {
            s.borrow_mut()
                .get_or_insert_with(|| ServersOfTest(Arc::new(Listeners(Mutex::new(Vec::new())))))
                .clone()
        })
    }

    /// Makes them this thread's too, for a thread that starts servers for
    /// the test (in a network namespace of its own, say) and ends before
    /// it does.
    pub fn adopt(self) {
        SERVERS.with(|s| *s.borrow_mut() = Some(self));
    }

    /// Adds `l`; returns the flag set once it is shut down.
    fn add(&self, l: &TcpListener) -> Arc<AtomicBool> {
        let over = Arc::new(AtomicBool::new(false));
        let dup = l.try_clone().unwrap();
        self.0 .0.lock().unwrap().push((dup, over.clone()));
        over
    }
}

impl Listeners {
    /// Closes the copy of the listener whose flag is `over`.
    fn remove(&self, over: &Arc<AtomicBool>) {
        self.0.lock().unwrap().retain(|(_, o)| !Arc::ptr_eq(o, over));
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for (l, over) in self.0.get_mut().unwrap().drain(..) {
            over.store(true, Ordering::SeqCst);
            // A blocked accept(2) returns (EINVAL) once its socket is shut.
            let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }
}

/// Reads an HTTP request's head (up to the blank line); `None` when the
/// connection ends first.
pub fn read_http_head(s: &mut TcpStream) -> Option<String> {
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.extend_from_slice(&b[..n]),
        }
    }
    Some(String::from_utf8_lossy(&req).into_owned())
}

/// A tiny HTTP/1.0 server on 127.0.0.1 that serves `body` to any GET, for
/// as long as the test runs.
pub fn http_server(body: Vec<u8>) -> SocketAddr {
    serve_each("127.0.0.1", move |mut s| {
        let body = body.clone();
        thread::spawn(move || {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            if read_http_head(&mut s).is_none() {
                return;
            }
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        });
    })
}

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// FNV-1a, enough to tell that two large buffers match.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}
