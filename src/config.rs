//! Command-line options. Parsing is pure: it takes the arguments and
//! returns what to do, or a usage error naming the bad argument.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use syslog::Facility;

use crate::addr::Net;
use crate::ident::Mode;
use crate::rules;

/// Real clients send their request with the connection; a connection
/// that has said nothing for this long holds a handler for nothing.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The protocol's two-minute timer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(7200);
pub const DEFAULT_MAX_CHILDREN: usize = 256;
/// As systemd's `MaxConnectionsPerSource=` in socks4d.socket.
pub const DEFAULT_MAX_PER_SOURCE: usize = 32;
pub const DEFAULT_IDENT_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_LOG_TIMEOUT: Duration = crate::audit::DEFAULT_LOG_TIMEOUT;
/// How long a rule's or hook's command may run before it is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Exit status after a setup error (or a file that cannot be used).
pub const EXIT_SETUP: u8 = 1;
/// Exit status after a usage error (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Timeouts above a day are surely mistakes.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// Everything one exchange needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// `None`: no idle limit.
    pub idle_timeout: Option<Duration>,
    pub socks4a: bool,
    pub log_stderr: bool,
    pub log_facility: Facility,
    /// How long one log line may wait for the logger.
    pub log_timeout: Duration,
    /// `--listen` addresses; empty in inetd and socket-unit modes.
    pub listen: Vec<SocketAddr>,
    pub max_children: usize,
    /// At most this many handlers at once for one client source (an IPv4
    /// address, an IPv6 /64), a trusted load balancer not counted.
    pub max_per_source: usize,
    /// BIND: the address to listen on, instead of the route lookup.
    pub bind_address: Option<IpAddr>,
    /// BIND: listen on the first free port in this inclusive range.
    pub bind_ports: Option<(u16, u16)>,
    /// The user to become when started as root.
    pub user: String,
    /// Ident mode for rules without `?=`.
    pub ident: Mode,
    pub ident_timeout: Duration,
    /// How long a rule's or hook's command may run; its process group is
    /// killed after that.
    pub command_timeout: Duration,
    /// The rules file, and whether it was named with `-f`.
    pub rules_file: PathBuf,
    pub rules_file_named: bool,
    /// `--max-children` was given: only for modes that accept connections.
    pub max_children_given: bool,
    /// Beyond the confinement's own list: directories a handler and its
    /// commands may read (`--readable`) and write (`--writable`).
    pub readable: Vec<PathBuf>,
    pub writable: Vec<PathBuf>,
    /// `--route`: the route file, if any.
    pub route_file: Option<PathBuf>,
    /// `--chain`: the chain file, if any; without one every request
    /// leaves this host directly.
    pub chain_file: Option<PathBuf>,
    /// `--outgoing-address`: the source of CONNECTs no route decides.
    pub outgoing: Outgoing,
    /// `--proxy-protocol`: the peers (load balancers) whose connections
    /// must begin with a PROXY protocol header.
    pub proxy_protocol: Vec<Net>,
    /// `--check-config --compile`: also write the frozen rules file.
    pub compile: bool,
}

/// Where CONNECTs leave from when no route line decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Outgoing {
    /// The kernel chooses (by its routing table).
    #[default]
    Kernel,
    /// The local address the client connected to.
    Same,
    /// These addresses, one per family; a destination of a family with
    /// none is left to the kernel.
    Fixed { v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr> },
}

impl Outgoing {
    /// The source for a connection to `dst` from a host reached at `own`:
    /// `None` for the kernel's choice, which is also what a family
    /// mismatch gets.
    pub fn source(self, dst: IpAddr, own: IpAddr) -> Option<IpAddr> {
        let ip = match self {
            Outgoing::Kernel => None,
            Outgoing::Same => Some(own),
            Outgoing::Fixed { v4, v6 } => match dst {
                IpAddr::V4(_) => v4.map(IpAddr::V4),
                IpAddr::V6(_) => v6.map(IpAddr::V6),
            },
        };
        ip.filter(|ip| ip.is_ipv4() == dst.is_ipv4() && !ip.is_unspecified())
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            socks4a: true,
            log_stderr: false,
            log_facility: Facility::LOG_DAEMON,
            log_timeout: DEFAULT_LOG_TIMEOUT,
            listen: Vec::new(),
            max_children: DEFAULT_MAX_CHILDREN,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            bind_address: None,
            bind_ports: None,
            user: crate::privilege::DEFAULT_USER.to_string(),
            ident: Mode::Required,
            ident_timeout: DEFAULT_IDENT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            rules_file: PathBuf::from(rules::DEFAULT_FILE),
            rules_file_named: false,
            max_children_given: false,
            readable: Vec::new(),
            writable: Vec::new(),
            route_file: None,
            chain_file: None,
            outgoing: Outgoing::Kernel,
            proxy_protocol: Vec::new(),
            compile: false,
        }
    }
}

/// The request `--explain` asks about, as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub user: String,
    pub src: String,
    pub dst: String,
    pub port: String,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Serve(Config),
    /// `--check-config`: parse the rules file and report.
    CheckConfig(Config),
    /// `--explain USER SRC DST PORT`: which line decides that request.
    Explain(Config, Query),
    Help,
    Version,
}

/// `--help`: one line per option, with its default.
pub const HELP: &str = "\
usage: socks4d [OPTION]...            one connection, on stdin (inetd) or fd 3 (Accept=yes)
       socks4d --listen ADDR:PORT [OPTION]...
       socks4d --check-config [--compile] [-f FILE]
       socks4d --explain USER SRC DST PORT [-f FILE]

Serving
  --listen ADDR:PORT          listen there and fork a handler per connection (repeatable)
  --max-children N            with --listen or a passed listening socket: at most N at once (256)
  --max-per-source N          ... and N from one IPv4 address or IPv6 /64 (32)
  --user NAME|UID:GID         the user to become when started as root (nobody)
  --readable DIR              a directory handlers and commands may also read (repeatable)
  --writable DIR              a directory they may write, not read (repeatable)
Rules and requests
  -f, --config FILE           the rules file (/etc/socks4d.conf; if absent: loopback clients only)
  --ident required|optional|off   ask the client's identd, for rules without ?= (required)
  -I, -i                      --ident required, --ident optional
  --ident-timeout SECS        (15)
  --no-socks4a                refuse SOCKS4a requests (host names)
  --route FILE                the outgoing address by destination (classic sockd.route)
  --chain FILE                which requests leave through a parent proxy (none: all direct)
  --outgoing-address ADDR|same    where CONNECTs leave from (the kernel's choice)
  --bind-address ADDR         where BIND listens (the route to the application server)
  --bind-ports LO-HI          BIND ports, chosen at random (any)
  --proxy-protocol CIDR[,CIDR...] load balancers whose PROXY header names the client (none)
Timeouts
  --request-timeout SECS      for the whole request (10)
  --connect-timeout SECS      for a CONNECT, a SOCKS4a lookup, BIND's wait (120)
  --idle-timeout SECS         a relay with no data either way ends (7200; 0: never)
  --command-timeout SECS      a rule's command is killed after it (60)
Logging
  --log-stderr                audit lines to stderr instead of syslog (not under inetd)
  --log-facility NAME         (daemon)
  --log-timeout SECS          the longest a line may wait for the logger (5)
Checking
  --check-config [--compile]  check the rules file (and compile it for speed)
  --explain USER SRC DST PORT which rule decides that request
  -h, --help; -V, --version

See socks4d(8), socks4d.conf(5) and socks4d.chain(5).";

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Action, String> {
    let mut cfg = Config::default();
    let mut check = false;
    let mut explain = false;
    let mut words: Vec<String> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--opt value` and `--opt=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Action::Help),
            "-V" | "--version" => return Ok(Action::Version),
            "--listen" => {
                let v = value("an ADDR:PORT")?;
                let addr = SocketAddr::from_str(&v).map_err(|_| {
                    format!("--listen {v}: not an address and port (e.g. 127.0.0.1:1080 or [::1]:1080)")
                })?;
                cfg.listen.push(addr);
            }
            "--max-children" => {
                let v = value("a number")?;
                cfg.max_children = parse_number(&name, &v, 1, 1_000_000)? as usize;
                cfg.max_children_given = true;
            }
            "--max-per-source" => {
                let v = value("a number")?;
                cfg.max_per_source = parse_number(&name, &v, 1, 1_000_000)? as usize;
                cfg.max_children_given = true;
            }
            "--request-timeout" => cfg.request_timeout = parse_secs(&name, &value("seconds")?, 1)?,
            "--connect-timeout" => cfg.connect_timeout = parse_secs(&name, &value("seconds")?, 1)?,
            "--idle-timeout" => {
                let d = parse_secs(&name, &value("seconds")?, 0)?;
                cfg.idle_timeout = (!d.is_zero()).then_some(d);
            }
            "--bind-address" => {
                let v = value("an IP address")?;
                cfg.bind_address =
                    Some(IpAddr::from_str(&v).map_err(|_| format!("--bind-address {v}: not an IP address"))?);
            }
            "--bind-ports" => {
                let v = value("a range LO-HI")?;
                let bad = || format!("--bind-ports {v}: expected LO-HI with 1 <= LO <= HI <= 65535");
                let (lo, hi) = v.split_once('-').ok_or_else(bad)?;
                let lo = parse_number(&name, lo, 1, 65535).map_err(|_| bad())? as u16;
                let hi = parse_number(&name, hi, 1, 65535).map_err(|_| bad())? as u16;
                if lo > hi {
                    return Err(bad());
                }
                cfg.bind_ports = Some((lo, hi));
            }
            "--user" => {
                let v = value("a user name")?;
                if v.is_empty() {
                    return Err("--user needs a user name".into());
                }
                cfg.user = v;
            }
            "--ident" => {
                let v = value("required, optional or off")?;
                cfg.ident = match v.as_str() {
                    "required" => Mode::Required,
                    "optional" => Mode::Optional,
                    "off" => Mode::Off,
                    _ => return Err(format!("--ident {v}: expected required, optional or off")),
                };
            }
            "-I" => cfg.ident = Mode::Required,
            "-i" => cfg.ident = Mode::Optional,
            "--ident-timeout" => cfg.ident_timeout = parse_secs(&name, &value("seconds")?, 1)?,
            "--command-timeout" => cfg.command_timeout = parse_secs(&name, &value("seconds")?, 1)?,
            "-f" | "--config" => {
                cfg.rules_file = PathBuf::from(value("a file")?);
                cfg.rules_file_named = true;
            }
            "--readable" | "--writable" => {
                let v = value("a directory")?;
                if !v.starts_with('/') {
                    return Err(format!("{name} {v}: needs an absolute path"));
                }
                let list = if name == "--readable" {
                    &mut cfg.readable
                } else {
                    &mut cfg.writable
                };
                list.push(PathBuf::from(v));
            }
            "--route" => cfg.route_file = Some(PathBuf::from(value("a file")?)),
            "--chain" => cfg.chain_file = Some(PathBuf::from(value("a file")?)),
            "--outgoing-address" => {
                let v = value("an IP address or `same`")?;
                cfg.outgoing = outgoing(cfg.outgoing, &v)?;
            }
            "--proxy-protocol" => {
                let v = value("networks (CIDR[,CIDR...])")?;
                for part in v.split(',') {
                    let net = Net::parse(part.trim()).map_err(|e| format!("--proxy-protocol {v}: {e}"))?;
                    cfg.proxy_protocol.push(net);
                }
            }
            "--check-config" => check = true,
            "--compile" => cfg.compile = true,
            // USER SRC DST PORT are the arguments that are not options,
            // before or after the others (`--explain -f FILE alice ...`).
            "--explain" => explain = true,
            "--no-socks4a" => cfg.socks4a = false,
            "--log-stderr" => cfg.log_stderr = true,
            "--log-timeout" => cfg.log_timeout = parse_secs(&name, &value("seconds")?, 1)?,
            "--log-facility" => {
                let v = value("a facility name")?;
                cfg.log_facility = Facility::from_str(&v)
                    .map_err(|_| format!("--log-facility {v}: unknown facility (e.g. daemon, local0)"))?;
            }
            _ if inline.is_some() => return Err(format!("{name}: unknown option")),
            _ if !arg.starts_with('-') => words.push(arg),
            _ => return Err(format!("{arg}: unknown option")),
        }
    }
    if explain {
        const WHAT: [&str; 4] = ["USER", "SRC", "DST", "PORT"];
        if let Some(extra) = words.get(WHAT.len()) {
            return Err(format!(
                "{extra}: unexpected argument (--explain takes USER SRC DST PORT)"
            ));
        }
        let mut words = words.into_iter();
        let mut next = |what: &str| {
            words
                .next()
                .ok_or_else(|| format!("--explain needs USER SRC DST PORT (missing {what})"))
        };
        let (user, src, dst, port) = (next(WHAT[0])?, next(WHAT[1])?, next(WHAT[2])?, next(WHAT[3])?);
        return Ok(Action::Explain(cfg, Query { user, src, dst, port }));
    }
    if let Some(word) = words.first() {
        return Err(format!("{word}: unexpected argument (only --explain takes arguments)"));
    }
    if cfg.compile && !check {
        return Err("--compile needs --check-config".into());
    }
    if check {
        return Ok(Action::CheckConfig(cfg));
    }
    Ok(Action::Serve(cfg))
}

/// Adds one `--outgoing-address` value to what earlier ones said: `same`
/// alone, or at most one address of each family.
fn outgoing(so_far: Outgoing, v: &str) -> Result<Outgoing, String> {
    let twice = || format!("--outgoing-address {v}: given twice (at most `same`, or one IPv4 and one IPv6 address)");
    if v == "same" {
        return match so_far {
            Outgoing::Kernel => Ok(Outgoing::Same),
            _ => Err(twice()),
        };
    }
    let ip: IpAddr = v
        .parse()
        .map_err(|_| format!("--outgoing-address {v}: not an IP address or `same`"))?;
    if ip.is_unspecified() {
        return Err(format!("--outgoing-address {v}: leave it out to let the kernel choose"));
    }
    let (mut v4, mut v6) = match so_far {
        Outgoing::Kernel => (None, None),
        Outgoing::Fixed { v4, v6 } => (v4, v6),
        Outgoing::Same => return Err(twice()),
    };
    match ip {
        IpAddr::V4(a) if v4.is_none() => v4 = Some(a),
        IpAddr::V6(a) if v6.is_none() => v6 = Some(a),
        _ => return Err(twice()),
    }
    Ok(Outgoing::Fixed { v4, v6 })
}

fn parse_number(name: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{name} {v}: expected a whole number from {min} to {max}")),
    }
}

fn parse_secs(name: &str, v: &str, min: u64) -> Result<Duration, String> {
    parse_number(name, v, min, MAX_TIMEOUT_SECS).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn serve(s: &str) -> Config {
        match parse_args(args(s)) {
            Ok(Action::Serve(c)) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = serve("");
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.max_per_source, 32);
        assert_eq!(serve("--max-per-source 4").max_per_source, 4);
        assert!(parse_args(args("--max-per-source 0")).is_err());
        assert_eq!(c.connect_timeout, Duration::from_secs(120));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(7200)));
        assert!(c.socks4a);
        assert!(c.listen.is_empty());
        assert_eq!(c.max_children, 256);
        assert_eq!(c.log_timeout, Duration::from_secs(5));
        assert_eq!(c.command_timeout, Duration::from_secs(60));
        assert_eq!(serve("--command-timeout=5").command_timeout, Duration::from_secs(5));
        assert!(parse_args(args("--command-timeout 0"))
            .unwrap_err()
            .contains("--command-timeout 0"));
        assert_eq!(serve("--log-timeout 2").log_timeout, Duration::from_secs(2));
        assert!(parse_args(args("--log-timeout 0"))
            .unwrap_err()
            .contains("--log-timeout 0"));
    }

    #[test]
    fn options() {
        let c = serve("--listen 127.0.0.1:1080 --listen=[::1]:1081 --max-children 3 --idle-timeout 0 --no-socks4a --connect-timeout=5 --log-facility local3");
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.max_children, 3);
        assert_eq!(c.idle_timeout, None);
        assert!(!c.socks4a);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert!(matches!(c.log_facility, Facility::LOG_LOCAL3));
    }

    #[test]
    fn ident_and_rules_options() {
        let c = serve("");
        assert_eq!(c.ident, Mode::Required);
        assert_eq!(c.ident_timeout, Duration::from_secs(15));
        assert_eq!(c.rules_file, PathBuf::from("/etc/socks4d.conf"));
        assert!(!c.rules_file_named);
        assert_eq!(serve("-i").ident, Mode::Optional);
        assert_eq!(serve("-i -I").ident, Mode::Required);
        assert_eq!(serve("--ident off").ident, Mode::Off);
        let c = serve("-f /tmp/x.conf --ident-timeout 3");
        assert!(c.rules_file_named);
        assert_eq!(c.ident_timeout, Duration::from_secs(3));
        assert!(matches!(
            parse_args(args("--check-config -f a")),
            Ok(Action::CheckConfig(_))
        ));
        match parse_args(args("--explain bob 10.0.0.1 10.0.0.2 telnet")) {
            Ok(Action::Explain(_, q)) => assert_eq!((q.user.as_str(), q.port.as_str()), ("bob", "telnet")),
            other => panic!("{other:?}"),
        }
        assert!(parse_args(args("--explain bob 10.0.0.1"))
            .unwrap_err()
            .contains("missing DST"));
        // -f FILE may come after --explain, as socks4d(8) shows it.
        for line in [
            "--explain -f /x.conf alice 10.0.0.1 10.0.0.2 80",
            "-f /x.conf --explain alice 10.0.0.1 10.0.0.2 80",
            "--explain alice 10.0.0.1 10.0.0.2 80 -f /x.conf",
            "--explain alice -i 10.0.0.1 10.0.0.2 80 --config=/x.conf",
        ] {
            match parse_args(args(line)) {
                Ok(Action::Explain(cfg, Query { user, src, dst, port })) => {
                    assert_eq!(cfg.rules_file, PathBuf::from("/x.conf"), "{line}");
                    assert!(cfg.rules_file_named);
                    assert_eq!(
                        [user, src, dst, port],
                        ["alice", "10.0.0.1", "10.0.0.2", "80"],
                        "{line}"
                    );
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        assert!(parse_args(args("--explain a b c d e"))
            .unwrap_err()
            .starts_with("e: unexpected argument"));
        assert!(parse_args(args("-f /x.conf alice"))
            .unwrap_err()
            .starts_with("alice: unexpected argument"));
        assert!(parse_args(args("--ident maybe")).unwrap_err().contains("--ident maybe"));
    }

    #[test]
    fn bind_options() {
        let c = serve("--bind-address 192.0.2.1 --bind-ports 40000-40010");
        assert_eq!(c.bind_address, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(c.bind_ports, Some((40000, 40010)));
    }

    #[test]
    fn route_outgoing_and_proxy_options() {
        let c = serve("");
        assert_eq!((c.route_file, c.outgoing), (None, Outgoing::Kernel));
        assert_eq!(c.chain_file, None);
        assert_eq!(
            serve("--chain /etc/socks4d.chain").chain_file,
            Some(PathBuf::from("/etc/socks4d.chain"))
        );
        assert!(c.proxy_protocol.is_empty());
        let c = serve("--route /etc/socks4d.route --outgoing-address same --proxy-protocol 127.0.0.9,10.0.0.0/8 --proxy-protocol=::1");
        assert_eq!(c.route_file, Some(PathBuf::from("/etc/socks4d.route")));
        assert_eq!(c.outgoing, Outgoing::Same);
        assert_eq!(c.proxy_protocol.len(), 3);
        assert!(c.proxy_protocol[1].contains("10.1.2.3".parse().unwrap()));
        let c = serve("--outgoing-address 127.0.0.3 --outgoing-address ::1");
        let (v4, v6): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        assert_eq!(c.outgoing.source(v4, v6), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(c.outgoing.source(v6, v4), Some("::1".parse().unwrap()));
        let c = serve("--outgoing-address 127.0.0.3");
        assert_eq!(c.outgoing.source(v6, v4), None, "no IPv6 source: the kernel chooses");
        assert_eq!(
            Outgoing::Same.source(v4, "127.0.0.2".parse().unwrap()),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(Outgoing::Same.source(v6, "127.0.0.2".parse().unwrap()), None);
        assert_eq!(Outgoing::Kernel.source(v4, v4), None);
        for (a, want) in [
            ("--outgoing-address same --outgoing-address same", "given twice"),
            (
                "--outgoing-address 127.0.0.1 --outgoing-address 127.0.0.2",
                "given twice",
            ),
            ("--outgoing-address 127.0.0.1 --outgoing-address same", "given twice"),
            ("--outgoing-address eth0", "not an IP address"),
            ("--outgoing-address 0.0.0.0", "kernel"),
            (
                "--proxy-protocol 127.0.0.0/33",
                "--proxy-protocol 127.0.0.0/33: prefix /33",
            ),
            ("--proxy-protocol 127.0.0.1,lb", "lb is not an IP address"),
            ("--route", "needs a file"),
            ("--chain", "needs a file"),
        ] {
            let err = parse_args(args(a)).unwrap_err();
            assert!(err.contains(want), "{a}: {err}");
        }
    }

    #[test]
    fn errors_name_the_argument() {
        for (a, want) in [
            ("--listen nowhere", "--listen nowhere"),
            ("--request-timeout 0", "--request-timeout 0"),
            ("--connect-timeout 99999999", "--connect-timeout"),
            ("--bogus", "--bogus"),
            ("--listen", "needs"),
            ("--writable tmp", "absolute"),
            ("--log-facility nope", "nope"),
            ("--bind-ports 10-5", "--bind-ports 10-5"),
            ("--bind-ports 0-5", "LO-HI"),
            ("--bind-ports 7", "LO-HI"),
            ("--bind-address host", "--bind-address host"),
            ("--compile", "--compile needs --check-config"),
        ] {
            let err = parse_args(args(a)).unwrap_err();
            assert!(err.contains(want), "{a}: {err}");
        }
    }
}
