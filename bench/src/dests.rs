//! The destinations the clients reach, directly or through a proxy: each a
//! loopback listener served by threads of this process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Read and write timeout of every bench socket.
pub const T: Duration = Duration::from_secs(60);
/// Bytes per read or write of a bulk transfer.
pub const CHUNK: usize = 1 << 20;
/// Bytes of one request/response exchange with the echo destination.
pub const MSG: usize = 1024;

pub struct Dests {
    /// Counts bytes to EOF, answers with the count (8 bytes LE).
    pub sink: SocketAddr,
    /// Sends the configured number of bytes, then closes.
    pub source: SocketAddr,
    /// One message back, then waits for the close.
    pub echo: SocketAddr,
    /// Keeps every connection open until `held` is cleared.
    pub hold: SocketAddr,
    pub held: Arc<Mutex<Vec<TcpStream>>>,
}

pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

/// Accepts on `l` in `threads` threads, each connection handed to `f`.
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

/// Starts the four destinations; the source sends `bytes` per connection.
pub fn start(bytes: u64) -> Dests {
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
    let l = listener();
    let source = l.local_addr().unwrap();
    serve(l, 2, move |mut s| {
        let buf = vec![0x5au8; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let k = left.min(CHUNK as u64) as usize;
            if s.write_all(&buf[..k]).is_err() {
                return;
            }
            left -= k as u64;
        }
    });
    let l = listener();
    let echo = l.local_addr().unwrap();
    serve(l, 40, |mut s| {
        let mut buf = [0u8; MSG];
        if s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
            let _ = s.read(&mut buf);
        }
    });
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
