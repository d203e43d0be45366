//! Audit lines: where they go (syslog or stderr) and how wire-supplied
//! values are made safe to put in them.
//!
//! Every line is `event key=value ...` with keys in a fixed order. Values that
//! came from the network are quoted, escaped and capped by [`quote`], so a
//! client cannot forge a line, a key or a field.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

/// At most this many bytes of a wire-supplied value reach the log.
pub const MAX_LOGGED_VALUE_LEN: usize = 256;

/// Where log lines go. Opened once per process, before the client is read.
pub struct Log {
    sink: Mutex<Sink>,
}

enum Sink {
    Syslog(Logger<LoggerBackend, Formatter3164>),
    Stderr,
    /// No syslog socket and stderr not allowed: lines are dropped, since
    /// stdout and stderr may be the client's socket.
    Nowhere,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Log {
    /// Syslog with ident `socks4d`, the pid and `facility`.
    pub fn syslog(facility: Facility) -> Log {
        let formatter = Formatter3164 {
            facility,
            hostname: None,
            process: "socks4d".into(),
            pid: std::process::id(),
        };
        let sink = match syslog::unix(formatter) {
            Ok(logger) => Sink::Syslog(logger),
            Err(_) => Sink::Nowhere,
        };
        Log { sink: Mutex::new(sink) }
    }

    /// The same lines on stderr, prefixed `socks4d[PID]: `.
    pub fn stderr() -> Log {
        Log {
            sink: Mutex::new(Sink::Stderr),
        }
    }

    /// Call in a forked child: syslog lines then carry the child's pid.
    pub fn after_fork(&self) {
        let mut sink = match self.sink.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Sink::Syslog(logger) = &mut *sink {
            logger.formatter.pid = std::process::id();
        }
    }

    /// Writes one line. Failures to log are ignored: there is nowhere
    /// left to report them, and they must not change the exchange.
    pub fn write(&self, level: Level, line: &str) {
        let mut sink = match self.sink.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &mut *sink {
            Sink::Syslog(logger) => {
                let _ = match level {
                    Level::Info => logger.info(line),
                    Level::Warning => logger.warning(line),
                    Level::Error => logger.err(line),
                };
            }
            Sink::Stderr => {
                // One write(2) per line: stderr is unbuffered, and other
                // socks4d processes may share it, so a line written in
                // pieces could be interleaved with theirs.
                let text = format!("socks4d[{}]: {}\n", std::process::id(), line);
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
            Sink::Nowhere => {}
        }
    }

    pub fn info(&self, line: &str) {
        self.write(Level::Info, line)
    }

    pub fn warning(&self, line: &str) {
        self.write(Level::Warning, line)
    }

    pub fn error(&self, line: &str) {
        self.write(Level::Error, line)
    }
}

/// Quotes a wire-supplied value for a log line: printable ASCII is kept,
/// `"` and `\` are backslash-escaped, every other byte becomes `\xHH`, and
/// input past [`MAX_LOGGED_VALUE_LEN`] bytes is cut and marked with `...`
/// after the closing quote. The result never holds a control byte or an
/// unescaped quote.
pub fn quote(value: &[u8]) -> String {
    let shown = &value[..value.len().min(MAX_LOGGED_VALUE_LEN)];
    let mut out = String::with_capacity(shown.len() + 2);
    out.push('"');
    for &b in shown {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    if value.len() > shown.len() {
        out.push_str("...");
    }
    out
}

/// Builds one audit line, `event key=value key=value ...`.
pub struct Line {
    text: String,
}

impl Line {
    pub fn new(event: &str) -> Line {
        Line {
            text: event.to_string(),
        }
    }

    /// A value the program made itself (an address, a number, a keyword).
    pub fn field(mut self, key: &str, value: impl std::fmt::Display) -> Line {
        let _ = write!(self.text, " {key}={value}");
        self
    }

    /// An optional value the program made; `-` when absent.
    pub fn opt(self, key: &str, value: Option<impl std::fmt::Display>) -> Line {
        match value {
            Some(v) => self.field(key, v),
            None => self.field(key, "-"),
        }
    }

    /// A value from the wire or from another program: quoted and escaped.
    pub fn quoted(self, key: &str, value: &[u8]) -> Line {
        let q = quote(value);
        self.field(key, q)
    }

    /// An optional wire value; `-` when absent.
    pub fn opt_quoted(self, key: &str, value: Option<&[u8]>) -> Line {
        match value {
            Some(v) => self.quoted(key, v),
            None => self.field(key, "-"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Formats an address as `ip:port`, or `[ip6]:port`, with an IPv4-mapped
/// IPv6 address shown as plain IPv4.
pub fn addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => a.to_string(),
        },
        SocketAddr::V4(_) => a.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_values_are_kept() {
        assert_eq!(quote(b"alice"), "\"alice\"");
        assert_eq!(quote(b""), "\"\"");
    }

    #[test]
    fn newline_quote_and_backslash_are_escaped() {
        assert_eq!(
            quote(b"bob\n1 decision reason=granted\"\\"),
            "\"bob\\x0a1 decision reason=granted\\\"\\\\\""
        );
    }

    #[test]
    fn control_and_high_bytes_become_hex() {
        assert_eq!(quote(&[0, 0x1b, 0x7f, 0xc3, 0xa9]), "\"\\x00\\x1b\\x7f\\xc3\\xa9\"");
    }

    #[test]
    fn long_values_are_cut_and_marked() {
        let q = quote(&[b'a'; 1000]);
        assert_eq!(q.len(), MAX_LOGGED_VALUE_LEN + 2 + 3);
        assert!(q.ends_with("\"..."));
    }

    #[test]
    fn quoted_output_has_no_control_bytes_or_bare_quotes() {
        let all: Vec<u8> = (0..=255).collect();
        let q = quote(&all);
        let inner = &q[1..q.len() - 1];
        assert!(q.bytes().all(|b| (0x20..0x7f).contains(&b)));
        // Every quote inside is preceded by a backslash that is not itself escaped.
        let bytes = inner.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\' {
                i += 2;
                continue;
            }
            assert_ne!(bytes[i], b'"', "bare quote in {q}");
            i += 1;
        }
    }

    #[test]
    fn line_keeps_field_order() {
        let l = Line::new("decision")
            .field("client", "127.0.0.1:5")
            .quoted("user", b"x y")
            .opt("dst", None::<&str>)
            .opt_quoted("host", Some(b"h"));
        assert_eq!(l.as_str(), "decision client=127.0.0.1:5 user=\"x y\" dst=- host=\"h\"");
    }

    #[test]
    fn mapped_addresses_print_as_ipv4() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(addr(a), "127.0.0.1:80");
        let b: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(addr(b), "[::1]:80");
    }
}
