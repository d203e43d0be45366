//! socks4d's log lines: finding them in a log, collecting a running
//! process's stderr as it comes, and a syslog daemon of the test's own.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::files::TempDir;

/// How long a wait for a log line may take before the test fails.
pub const LOG_WAIT: Duration = Duration::from_secs(30);

/// The first audit line of `event` (`decision`, `end`, ...) in `log`;
/// panics with the log when there is none.
pub fn line<'a>(log: &'a str, event: &str) -> &'a str {
    lines(log, event)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {event} line in log:\n{log}"))
}

/// Every audit line of `event` in `log`.
pub fn lines<'a>(log: &'a str, event: &str) -> Vec<&'a str> {
    let tag = format!("]: {event} ");
    log.lines().filter(|l| l.contains(&tag)).collect()
}

/// What a process writes to a pipe, collected on a thread as it comes.
#[derive(Clone)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    /// Collects the piped stderr of `child`, taking it.
    pub fn of(child: &mut Child) -> Log {
        Log::collect(child.stderr.take().expect("a piped stderr"))
    }

    /// Collects everything read from `from` until its end.
    pub fn collect(mut from: impl Read + Send + 'static) -> Log {
        let log = Log(Arc::new(Mutex::new(String::new())));
        let sink = log.0.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        log
    }

    /// Everything so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// The text once `pred` holds for it; panics with it after
    /// [`LOG_WAIT`].
    pub fn wait_for(&self, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if pred(&text) {
                return text;
            }
            assert!(start.elapsed() < LOG_WAIT, "the log never got there:\n{text}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lines about the client at `client` (its audit lines say
    /// `client=ADDR`), once its end line is written.
    pub fn wait_client(&self, client: std::net::SocketAddr) -> String {
        let tag = format!("client={} ", socks4d::audit::addr(client));
        let mine = |text: &str| -> String {
            text.lines()
                .filter(|l| l.contains(&tag))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        mine(&self.wait_for(|text| mine(text).contains("]: end ")))
    }

    /// The text once it holds `what`.
    pub fn wait_contains(&self, what: &str) -> String {
        self.wait_count(what, 1)
    }

    /// The text once it holds `what` at least `count` times.
    pub fn wait_count(&self, what: &str, count: usize) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if text.matches(what).count() >= count {
                return text;
            }
            assert!(start.elapsed() < LOG_WAIT, "{count} x {what:?} not in:\n{text}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A syslog daemon of the test's own: a datagram socket that collects
/// lines, and can stop reading, as a stuck journald or rsyslogd does.
/// Programs reach it through [`super::private_dev`], which puts it at
/// /dev/log.
pub struct FakeSyslog {
    pub path: PathBuf,
    state: Arc<SyslogState>,
    _dir: TempDir,
}

struct SyslogState {
    lines: Mutex<Vec<String>>,
    reading: AtomicBool,
    stop: AtomicBool,
    socket: Mutex<Option<UnixDatagram>>,
}

/// What fills a stalled logger's queue; never a socks4d line.
const FILLER: &[u8] = b"<14>filler";

impl FakeSyslog {
    pub fn start() -> FakeSyslog {
        let dir = TempDir::new("syslog");
        let path = dir.path().join("log");
        let state = Arc::new(SyslogState {
            lines: Mutex::new(Vec::new()),
            reading: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            socket: Mutex::new(None),
        });
        let s = FakeSyslog { path, state, _dir: dir };
        s.bind();
        let state = s.state.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !state.stop.load(SeqCst) {
                let sock = state.socket.lock().unwrap().as_ref().map(|s| s.try_clone().unwrap());
                let (Some(sock), true) = (sock, state.reading.load(SeqCst)) else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if let Ok(n) = sock.recv(&mut buf) {
                    if &buf[..n] != FILLER {
                        let text = String::from_utf8_lossy(&buf[..n])
                            .trim_end_matches(['\0', '\n'])
                            .to_string();
                        state.lines.lock().unwrap().push(text);
                    }
                }
            }
        });
        s
    }

    /// Binds a new socket at the path, as a restarted logger does.
    fn bind(&self) {
        let _ = std::fs::remove_file(&self.path);
        let sock = UnixDatagram::bind(&self.path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        // Writable for the unprivileged users socks4d runs as.
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o666)).unwrap();
        *self.state.socket.lock().unwrap() = Some(sock);
    }

    /// Stops reading and fills the socket's queue, so that a sender finds
    /// no room: the state of a stuck logger.
    pub fn stall(&self) {
        self.state.reading.store(false, SeqCst);
        // Longer than one receive wait of the reader.
        thread::sleep(Duration::from_millis(100));
        let filler = UnixDatagram::unbound().unwrap();
        filler.connect(&self.path).unwrap();
        filler.set_nonblocking(true).unwrap();
        let mut sent = 0;
        while filler.send(FILLER).is_ok() {
            sent += 1;
            assert!(sent < 100_000, "the log socket's queue never fills");
        }
    }

    /// Reads again.
    pub fn resume(&self) {
        self.state.reading.store(true, SeqCst);
    }

    /// Goes away and comes back on a new socket, as a restarted daemon
    /// does; senders connected to the old one get ECONNREFUSED.
    pub fn restart(&self) {
        *self.state.socket.lock().unwrap() = None;
        self.bind();
    }

    /// Every line so far, one per line.
    pub fn text(&self) -> String {
        self.state.lines.lock().unwrap().join("\n")
    }

    /// Waits until `pred` holds for the lines so far, at most `limit`.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if pred(&text) {
                return text;
            }
            assert!(start.elapsed() < limit, "log never got there:\n{text}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeSyslog {
    fn drop(&mut self) {
        self.state.stop.store(true, SeqCst);
    }
}
