//! Access rules in the grammar of the classic CSTC `sockd.conf(5)`, one
//! rule per line:
//!
//! ```text
//! action [?=use_identd] [*=userlist] src_addr src_mask [dst_addr dst_mask] [op dst_port] [: shell_cmd]
//! ```
//!
//! plus the hook lines `#NO_IDENTD: cmd` and `#BAD_ID: cmd`, and, as an
//! extension, `addr/prefix` (IPv4 or IPv6) in place of `addr mask`.
//!
//! Parsing and [`decide`] are pure: the files a rules file names (userlists)
//! are read through a function the caller passes in. [`load`] does the
//! reading. [`spawn`] runs a rule's or a hook's shell command, detached.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::ident::Mode;

/// Where the rules are read from unless `-f` names another file.
pub const DEFAULT_FILE: &str = "/etc/socks4d.conf";
/// Service names for `eq telnet` and `%S`.
pub const SERVICES_FILE: &str = "/etc/services";
/// The longest rules-file line, without its newline.
pub const MAX_LINE_LEN: usize = 1023;
/// At most this many bytes of one substituted value reach a command.
pub const MAX_SUBST_LEN: usize = 256;
/// How long a `%A` or `%Z` reverse lookup may take before the IP is used.
pub const NAME_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// The `rule=` label of the built-in policy.
pub const BUILTIN: &str = "builtin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Permit,
    Deny,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Permit => "permit",
            Action::Deny => "deny",
        }
    }
}

/// An address with a mask: `ip` matches when `ip & mask == addr & mask`.
/// An IPv4 net never matches an IPv6 address, nor the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    V4 { addr: u32, mask: u32 },
    V6 { addr: u128, mask: u128 },
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Net::V4 { addr, mask }, IpAddr::V4(a)) => u32::from(a) & mask == addr & mask,
            (Net::V6 { addr, mask }, IpAddr::V6(a)) => u128::from(a) & mask == addr & mask,
            _ => false,
        }
    }
}

/// The comparison in `op dst_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortOp {
    Eq,
    Neq,
    Lt,
    Gt,
    Le,
    Ge,
}

impl PortOp {
    fn from_token(t: &[u8]) -> Option<PortOp> {
        Some(match t {
            b"eq" => PortOp::Eq,
            b"neq" => PortOp::Neq,
            b"lt" => PortOp::Lt,
            b"gt" => PortOp::Gt,
            b"le" => PortOp::Le,
            b"ge" => PortOp::Ge,
            _ => return None,
        })
    }

    /// Whether `port op against` holds.
    pub fn holds(self, port: u16, against: u16) -> bool {
        match self {
            PortOp::Eq => port == against,
            PortOp::Neq => port != against,
            PortOp::Lt => port < against,
            PortOp::Gt => port > against,
            PortOp::Le => port <= against,
            PortOp::Ge => port >= against,
        }
    }
}

/// One `permit` or `deny` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    /// The line as written, for `--explain`.
    pub text: String,
    pub action: Action,
    /// `?=`: overrides `--ident` for this line.
    pub ident: Option<Mode>,
    /// `*=`: the claimed user-ids this line applies to, files expanded.
    pub users: Option<Vec<Vec<u8>>>,
    pub src: Net,
    /// `None`: any destination.
    pub dst: Option<Net>,
    pub port: Option<(PortOp, u16)>,
    /// `: shell_cmd`, run when this line decides a request.
    pub command: Option<Vec<u8>>,
}

impl Rule {
    pub fn matches(&self, f: &Facts) -> bool {
        self.src.contains(f.src)
            && self.dst.map_or(true, |d| d.contains(f.dst))
            && self.port.map_or(true, |(op, p)| op.holds(f.port, p))
            && self.users.as_ref().map_or(true, |u| u.iter().any(|u| u == f.user))
    }
}

/// A `#NO_IDENTD:` or `#BAD_ID:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub line: usize,
    pub command: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The rules file's path.
    File(String),
    /// No rules file: permit loopback clients, deny the rest.
    Builtin,
}

/// A parsed rules file, or the built-in policy.
#[derive(Debug, Clone)]
pub struct Rules {
    pub origin: Origin,
    pub rules: Vec<Rule>,
    /// Run when the client host's identd gives no USERID answer.
    pub no_identd: Option<Hook>,
    /// Run when the identd names another user than the one claimed.
    pub bad_id: Option<Hook>,
    pub services: Services,
}

impl Rules {
    /// Loopback clients permitted (with the `--ident` mode), the rest
    /// denied.
    pub fn builtin(services: Services) -> Rules {
        let permit = |text: &str, src: Net| Rule {
            line: 0,
            text: text.into(),
            action: Action::Permit,
            ident: None,
            users: None,
            src,
            dst: None,
            port: None,
            command: None,
        };
        Rules {
            origin: Origin::Builtin,
            rules: vec![
                permit(
                    "permit 127.0.0.0/8",
                    Net::V4 {
                        addr: 0x7f00_0000,
                        mask: 0xff00_0000,
                    },
                ),
                permit(
                    "permit ::1/128",
                    Net::V6 {
                        addr: 1,
                        mask: u128::MAX,
                    },
                ),
            ],
            no_identd: None,
            bad_id: None,
            services,
        }
    }

    /// The `rule=` label of line `line`, or of no line matching.
    pub fn label(&self, line: Option<usize>) -> String {
        match (&self.origin, line) {
            (Origin::Builtin, _) => BUILTIN.into(),
            (Origin::File(f), Some(n)) => format!("{f}:{n}"),
            (Origin::File(_), None) => "default".into(),
        }
    }
}

/// What a request is decided on.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The USERID the client claimed.
    pub user: &'a [u8],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub port: u16,
}

/// The line that decided, if any; no line means deny.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub rules: &'a Rules,
    pub rule: Option<&'a Rule>,
}

impl Decision<'_> {
    pub fn permit(&self) -> bool {
        self.rule.is_some_and(|r| r.action == Action::Permit)
    }

    /// `file:line`, `default` (no line matched) or `builtin`.
    pub fn label(&self) -> String {
        self.rules.label(self.rule.map(|r| r.line))
    }

    /// The ident mode for this request: the line's `?=`, else `default`.
    pub fn ident(&self, default: Mode) -> Mode {
        self.rule.and_then(|r| r.ident).unwrap_or(default)
    }

    pub fn command(&self) -> Option<&[u8]> {
        self.rule.and_then(|r| r.command.as_deref())
    }
}

/// The first line that matches decides; if none does, deny.
pub fn decide<'a>(rules: &'a Rules, facts: &Facts) -> Decision<'a> {
    Decision {
        rules,
        rule: rules.rules.iter().find(|r| r.matches(facts)),
    }
}

/// An error in a rules file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(f, "{}:{}: {}", self.file, n, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// The rules to serve with, or every error that stops the file being used.
pub type Loaded = Result<Rules, Vec<Error>>;

/// The largest rules file or user-list file read. Real ones are a few
/// kilobytes, and every connection reads them.
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// Reads a whole file of at most [`MAX_FILE_LEN`] bytes.
fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut text)?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_LEN} bytes"),
        ));
    }
    Ok(text)
}

/// Reads and parses `path`. When the file is absent and was not `named`
/// on the command line, the built-in policy applies. A named file that is
/// missing, and any file that cannot be read or parsed, is an error.
pub fn load(path: &Path, named: bool) -> Loaded {
    let services = Services::system();
    let file = path.display().to_string();
    match read_capped(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && !named => Ok(Rules::builtin(services)),
        Err(e) => Err(vec![Error {
            file,
            line: None,
            message: format!("cannot read: {e}"),
        }]),
        Ok(text) => parse(&text, &file, services, &mut |p: &Path| read_capped(p)),
    }
}

/// Parses the text of rules file `file`. Userlist files are read with
/// `read`. Every line is checked, and every error returned.
pub fn parse(
    text: &[u8],
    file: &str,
    services: Services,
    read: &mut dyn FnMut(&Path) -> io::Result<Vec<u8>>,
) -> Loaded {
    let mut rules = Rules {
        origin: Origin::File(file.into()),
        rules: Vec::new(),
        no_identd: None,
        bad_id: None,
        services,
    };
    let mut errors = Vec::new();
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (i, line) in lines.into_iter().enumerate() {
        let n = i + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match parse_line(line, n, &rules.services, read) {
            Ok(Item::Nothing) => {}
            Ok(Item::Rule(r)) => rules.rules.push(*r),
            // As in the classic server, the first hook line of each kind is
            // the one that runs.
            Ok(Item::NoIdentd(h)) => {
                rules.no_identd.get_or_insert(h);
            }
            Ok(Item::BadId(h)) => {
                rules.bad_id.get_or_insert(h);
            }
            Err(message) => errors.push(Error {
                file: file.into(),
                line: Some(n),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

enum Item {
    Nothing,
    Rule(Box<Rule>),
    NoIdentd(Hook),
    BadId(Hook),
}

const NO_IDENTD: &[u8] = b"#NO_IDENTD:";
const BAD_ID: &[u8] = b"#BAD_ID:";

fn parse_line(
    line: &[u8],
    n: usize,
    services: &Services,
    read: &mut dyn FnMut(&Path) -> io::Result<Vec<u8>>,
) -> Result<Item, String> {
    if line.len() > MAX_LINE_LEN {
        return Err(format!("line longer than {MAX_LINE_LEN} bytes"));
    }
    if line.contains(&0) {
        return Err("NUL byte in line".into());
    }
    for (prefix, make) in [(NO_IDENTD, Item::NoIdentd as fn(Hook) -> Item), (BAD_ID, Item::BadId)] {
        if let Some(cmd) = line.strip_prefix(prefix) {
            let command = trim(cmd);
            if command.is_empty() {
                return Err(format!("no command after {}", String::from_utf8_lossy(prefix)));
            }
            return Ok(make(Hook {
                line: n,
                command: command.to_vec(),
            }));
        }
    }

    let (body, command) = split_command(line);
    let command = match command.map(trim) {
        Some([]) => return Err("no command after ':'".into()),
        c => c.map(<[u8]>::to_vec),
    };
    let tokens: Vec<&[u8]> = body.split(|&b| is_blank(b)).filter(|t| !t.is_empty()).collect();
    let Some((&first, mut rest)) = tokens.split_first() else {
        return match command {
            Some(_) => Err("a command but no rule".into()),
            None => Ok(Item::Nothing),
        };
    };
    let action = match first {
        b"permit" => Action::Permit,
        b"deny" => Action::Deny,
        other => return Err(format!("unknown action {} (permit or deny)", show(other))),
    };

    let mut ident = None;
    if let Some(flag) = rest.first().and_then(|t| t.strip_prefix(b"?=")) {
        ident = Some(match flag {
            b"I" => Mode::Required,
            b"i" => Mode::Optional,
            b"n" | b"" => Mode::Off,
            other => return Err(format!("unknown ident flag ?={} (?=I, ?=i or ?=n)", show(other))),
        });
        rest = &rest[1..];
    }
    let mut users = None;
    if let Some(list) = rest.first().and_then(|t| t.strip_prefix(b"*=")) {
        users = Some(userlist(list, read)?);
        rest = &rest[1..];
    }

    let mut tokens = rest.iter().copied().peekable();
    let src = net(&mut tokens, "source")?;
    let mut dst = None;
    let mut port = None;
    if tokens.peek().is_some_and(|t| PortOp::from_token(t).is_none()) {
        dst = Some(net(&mut tokens, "destination")?);
    }
    if let Some(op) = tokens.next() {
        let op =
            PortOp::from_token(op).ok_or_else(|| format!("expected eq, neq, lt, gt, le or ge, not {}", show(op)))?;
        let p = tokens.next().ok_or("no port after the comparison")?;
        port = Some((op, port_number(p, services)?));
    }
    if let Some(extra) = tokens.next() {
        return Err(format!("unexpected {} after the rule", show(extra)));
    }
    Ok(Item::Rule(Box::new(Rule {
        line: n,
        text: String::from_utf8_lossy(trim(line)).into_owned(),
        action,
        ident,
        users,
        src,
        dst,
        port,
        command,
    })))
}

/// Splits a rule line at the `:` that starts its command, and drops a `#`
/// comment. As in the classic server, whichever of the two comes first
/// counts; a `:` within an IPv6 address starts nothing.
fn split_command(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut i = 0;
    while i < line.len() {
        if is_blank(line[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < line.len() && !is_blank(line[i]) {
            i += 1;
        }
        let token = &line[start..i];
        match token.iter().position(|&b| b == b'#' || b == b':') {
            None => {}
            Some(p) if token[p] == b'#' => return (&line[..start + p], None),
            Some(_) if is_ipv6_token(token) => {}
            Some(p) => return (&line[..start + p], Some(&line[start + p + 1..])),
        }
    }
    (line, None)
}

fn is_ipv6_token(t: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(t) else { return false };
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse::<Ipv6Addr>().is_ok()
}

/// `addr/prefix`, or `addr mask` in two tokens.
fn net<'a>(tokens: &mut impl Iterator<Item = &'a [u8]>, what: &str) -> Result<Net, String> {
    let t = tokens.next().ok_or_else(|| format!("no {what} address"))?;
    let s = std::str::from_utf8(t).map_err(|_| format!("{what} address {} is not an IP address", show(t)))?;
    if let Some((a, prefix)) = s.split_once('/') {
        let ip = ip(a, what)?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u32 = match prefix.parse() {
            Ok(b) if b <= max && prefix.bytes().all(|c| c.is_ascii_digit()) => b,
            _ => return Err(format!("{what} prefix /{prefix} is not a number from 0 to {max}")),
        };
        return Ok(match ip {
            IpAddr::V4(a) => Net::V4 {
                addr: a.into(),
                mask: u32::MAX.checked_shl(32 - bits).unwrap_or(0),
            },
            IpAddr::V6(a) => Net::V6 {
                addr: a.into(),
                mask: u128::MAX.checked_shl(128 - bits).unwrap_or(0),
            },
        });
    }
    let addr = ip(s, what)?;
    let m = tokens
        .next()
        .ok_or_else(|| format!("no mask after {what} address {s}"))?;
    let m = std::str::from_utf8(m).map_err(|_| format!("{what} mask {} is not an IP address", show(m)))?;
    match (addr, ip(m, what)?) {
        (IpAddr::V4(a), IpAddr::V4(m)) => Ok(Net::V4 {
            addr: a.into(),
            mask: m.into(),
        }),
        (IpAddr::V6(a), IpAddr::V6(m)) => Ok(Net::V6 {
            addr: a.into(),
            mask: m.into(),
        }),
        _ => Err(format!("{what} address {s} and mask {m} are not of one family")),
    }
}

fn ip(s: &str, what: &str) -> Result<IpAddr, String> {
    s.parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .or_else(|_| s.parse::<Ipv6Addr>().map(IpAddr::V6))
        .map_err(|_| format!("{what} {} is not an IP address", show(s.as_bytes())))
}

/// A port number, or a TCP service name from /etc/services.
pub fn port_number(t: &[u8], services: &Services) -> Result<u16, String> {
    if !t.is_empty() && t.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("port {} is above 65535", show(t)));
    }
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| services.port(s))
        .ok_or_else(|| format!("{} is neither a port number nor a service in {SERVICES_FILE}", show(t)))
}

/// `*=alice,bob,/etc/socks4d.users`: names, and absolute paths of files
/// of names (whitespace separated, `#` comments).
fn userlist(list: &[u8], read: &mut dyn FnMut(&Path) -> io::Result<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
    if list.is_empty() {
        return Err("empty user list after *=".into());
    }
    let mut users = Vec::new();
    for item in list.split(|&b| b == b',') {
        if item.is_empty() {
            return Err("empty name in the user list".into());
        }
        if item.first() == Some(&b'/') {
            let path = Path::new(OsStr::from_bytes(item));
            let text = read(path).map_err(|e| format!("user list file {}: {e}", path.display()))?;
            for line in text.split(|&b| b == b'\n') {
                let line = line.split(|&b| b == b'#').next().unwrap_or_default();
                users.extend(
                    line.split(|b| b.is_ascii_whitespace())
                        .filter(|u| !u.is_empty())
                        .map(<[u8]>::to_vec),
                );
            }
        } else if item.contains(&b'/') {
            return Err(format!("user list file {} is not an absolute path", show(item)));
        } else {
            users.push(item.to_vec());
        }
    }
    Ok(users)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A token quoted for an error message.
fn show(t: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(t))
}

/// TCP services from /etc/services: names and aliases to ports, ports to
/// their first name. The file is read on first use only: most rules files
/// name no service, and every connection would pay for the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    table: OnceCell<ServiceTable>,
    /// Where to read the table from on first use; `None`: empty.
    path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServiceTable {
    by_name: HashMap<String, u16>,
    by_port: HashMap<u16, String>,
}

impl Services {
    /// The system's table, read from [`SERVICES_FILE`] when first needed.
    pub fn system() -> Services {
        Services {
            table: OnceCell::new(),
            path: Some(PathBuf::from(SERVICES_FILE)),
        }
    }

    /// A table from the text of a services file.
    pub fn parse(text: &[u8]) -> Services {
        Services {
            table: OnceCell::from(ServiceTable::parse(text)),
            path: None,
        }
    }

    fn table(&self) -> &ServiceTable {
        self.table.get_or_init(|| {
            let text = self.path.as_ref().and_then(|p| read_capped(p).ok()).unwrap_or_default();
            ServiceTable::parse(&text)
        })
    }

    pub fn port(&self, name: &str) -> Option<u16> {
        self.table().by_name.get(name).copied()
    }

    pub fn name(&self, port: u16) -> Option<&str> {
        self.table().by_port.get(&port).map(String::as_str)
    }
}

impl ServiceTable {
    fn parse(text: &[u8]) -> ServiceTable {
        let mut s = ServiceTable::default();
        for line in String::from_utf8_lossy(text).lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((port, "tcp")) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else { continue };
            s.by_port.entry(port).or_insert_with(|| name.to_string());
            for n in std::iter::once(name).chain(fields) {
                s.by_name.entry(n.to_string()).or_insert(port);
            }
        }
        s
    }
}

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

    const SERVICES: &str = "ftp\t\t21/tcp\ntelnet\t\t23/tcp\nhttp\t\t80/tcp\t\twww # WorldWideWeb\ndomain\t53/udp\n";

    fn services() -> Services {
        Services::parse(SERVICES.as_bytes())
    }

    fn rules_with(text: &str, files: &[(&str, &str)]) -> Loaded {
        let files: HashMap<String, String> = files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
        parse(text.as_bytes(), "test.conf", services(), &mut |p: &Path| {
            files
                .get(p.to_str().unwrap())
                .map(|t| t.as_bytes().to_vec())
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        })
    }

    fn rules(text: &str) -> Rules {
        rules_with(text, &[]).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn errors(text: &str) -> Vec<String> {
        rules_with(text, &[])
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    /// The deciding line's number (0: none), and whether it permits.
    fn check(r: &Rules, user: &str, src: &str, dst: &str, port: u16) -> (usize, bool) {
        let d = decide(
            r,
            &Facts {
                user: user.as_bytes(),
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                port,
            },
        );
        (d.rule.map_or(0, |r| r.line), d.permit())
    }

    /// The example of the classic sockd.conf(5), as administrators have it.
    const CLASSIC: &str = include_str!("../tests/data/classic-sockd.conf");

    #[test]
    fn classic_example_decides_as_test_sockd_conf() {
        let r = rules(CLASSIC);
        assert_eq!(r.rules.len(), 4);
        assert_eq!(
            r.rules[0].command.as_deref(),
            Some(&b"/bin/echo rejected %u >>/tmp/x"[..])
        );
        assert_eq!(r.no_identd.as_ref().unwrap().line, 5);
        assert_eq!(
            r.no_identd.as_ref().unwrap().command,
            b"/bin/echo please run identd on %A"
        );
        assert_eq!(
            r.bad_id.as_ref().unwrap().command,
            b"/bin/echo %U pretends to be %u on %A"
        );
        // The cases and answers of the classic test script.
        assert_eq!(check(&r, "clyde", "128.12.6.34", "112.3.24.1", 21), (1, false));
        assert_eq!(check(&r, "ylee", "128.12.6.4", "137.12.4.15", 23), (2, true));
        assert_eq!(check(&r, "jane", "128.12.2.13", "137.12.4.15", 23), (3, false));
        assert_eq!(check(&r, "jim", "128.12.6.4", "126.87.13.2", 23), (3, false));
        assert_eq!(check(&r, "ylee", "128.12.6.4", "126.87.13.2", 21), (4, true));
        assert_eq!(check(&r, "sam", "128.12.36.7", "10.53.23.1", 70), (4, true));
        assert_eq!(check(&r, "don", "23.2.6.127", "10.53.23.1", 70), (0, false));
        assert_eq!(check(&r, "clyde", "128.12.1.62", "112.3.24.1", 21), (4, true));
    }

    #[test]
    fn first_match_wins_and_default_is_deny() {
        let r = rules("deny 10.0.0.1 255.255.255.255\npermit 10.0.0.0 255.0.0.0\n");
        assert_eq!(check(&r, "u", "10.0.0.1", "1.2.3.4", 80), (1, false));
        assert_eq!(check(&r, "u", "10.9.9.9", "1.2.3.4", 80), (2, true));
        assert_eq!(check(&r, "u", "11.0.0.1", "1.2.3.4", 80), (0, false));
        assert_eq!(check(&rules(""), "u", "10.0.0.1", "1.2.3.4", 80), (0, false));
    }

    #[test]
    fn masks_need_not_be_contiguous() {
        let r = rules("permit 0.0.0.7 0.0.0.255 10.0.0.0 255.0.0.0\n");
        assert_eq!(check(&r, "u", "192.168.1.7", "10.1.1.1", 1), (1, true));
        assert_eq!(check(&r, "u", "192.168.1.8", "10.1.1.1", 1), (0, false));
        assert_eq!(check(&r, "u", "192.168.1.7", "11.1.1.1", 1), (0, false));
        let any = rules("permit 0.0.0.0 0.0.0.0\n");
        assert_eq!(check(&any, "u", "8.8.8.8", "1.1.1.1", 1), (1, true));
        // An IPv4 rule says nothing about IPv6 clients.
        assert_eq!(check(&any, "u", "::1", "1.1.1.1", 1), (0, false));
    }

    #[test]
    fn cidr_v4_and_v6() {
        let r = rules("deny 192.168.1.128/25\npermit 192.168.0.0/16 10.0.0.0/8\npermit 2001:db8::/32 ::/0 eq 443\npermit ::1/128 : echo hi\npermit fe80:: ffff:: : echo ll\n");
        assert_eq!(check(&r, "u", "192.168.1.200", "10.0.0.1", 1), (1, false));
        assert_eq!(check(&r, "u", "192.168.1.100", "10.0.0.1", 1), (2, true));
        assert_eq!(check(&r, "u", "192.168.1.100", "11.0.0.1", 1), (0, false));
        assert_eq!(check(&r, "u", "2001:db8:1::5", "2001:4860::1", 443), (3, true));
        assert_eq!(check(&r, "u", "2001:db8:1::5", "2001:4860::1", 80), (0, false));
        assert_eq!(check(&r, "u", "2001:db9::5", "2001:4860::1", 443), (0, false));
        assert_eq!(check(&r, "u", "::1", "127.0.0.1", 9), (4, true));
        assert_eq!(r.rules[3].command.as_deref(), Some(&b"echo hi"[..]));
        assert_eq!(check(&r, "u", "fe80::1", "127.0.0.1", 9), (5, true));
        assert_eq!(r.rules[4].command.as_deref(), Some(&b"echo ll"[..]));
        let all = rules("permit 0.0.0.0/0\n");
        assert_eq!(check(&all, "u", "1.2.3.4", "5.6.7.8", 9), (1, true));
    }

    #[test]
    fn port_operators_and_service_names() {
        for (op, yes, no) in [
            ("eq", &[23][..], &[22, 24][..]),
            ("neq", &[22, 24], &[23]),
            ("lt", &[1, 22], &[23, 24]),
            ("gt", &[24, 65535], &[23, 22]),
            ("le", &[22, 23], &[24]),
            ("ge", &[23, 24], &[22]),
        ] {
            for port in ["23", "telnet"] {
                let r = rules(&format!("permit 0.0.0.0 0.0.0.0 {op} {port}\n"));
                for &p in yes {
                    assert!(check(&r, "u", "1.1.1.1", "2.2.2.2", p).1, "{op} {port}: {p}");
                }
                for &p in no {
                    assert!(!check(&r, "u", "1.1.1.1", "2.2.2.2", p).1, "{op} {port}: {p}");
                }
            }
        }
        // Aliases name ports too; UDP-only services do not.
        assert_eq!(rules("permit 0.0.0.0/0 eq www\n").rules[0].port, Some((PortOp::Eq, 80)));
        assert!(errors("permit 0.0.0.0/0 eq domain\n")[0].contains("domain"));
    }

    #[test]
    fn userlists_names_and_files() {
        let r = rules_with(
            "permit *=root,/etc/ops.users 0.0.0.0/0\ndeny 0.0.0.0/0\n",
            &[("/etc/ops.users", "# operators\nalice bob\t carol # not dave\n\n")],
        )
        .unwrap();
        for u in ["root", "alice", "bob", "carol"] {
            assert_eq!(check(&r, u, "1.1.1.1", "2.2.2.2", 1), (1, true), "{u}");
        }
        for u in ["dave", "Alice", "", "not"] {
            assert_eq!(check(&r, u, "1.1.1.1", "2.2.2.2", 1), (2, false), "{u}");
        }
    }

    #[test]
    fn ident_flags() {
        let r = rules("permit ?=I 1.0.0.0/8\npermit ?=i 2.0.0.0/8\npermit ?=n 3.0.0.0/8\npermit ?= 4.0.0.0/8\npermit ?=i *=x 5.0.0.0/8\npermit 6.0.0.0/8\n");
        let modes: Vec<_> = r.rules.iter().map(|r| r.ident).collect();
        assert_eq!(
            modes,
            [
                Some(Mode::Required),
                Some(Mode::Optional),
                Some(Mode::Off),
                Some(Mode::Off),
                Some(Mode::Optional),
                None
            ]
        );
        let d = decide(
            &r,
            &Facts {
                user: b"u",
                src: "3.3.3.3".parse().unwrap(),
                dst: "9.9.9.9".parse().unwrap(),
                port: 1,
            },
        );
        assert_eq!(d.ident(Mode::Required), Mode::Off);
        assert_eq!(d.label(), "test.conf:3");
    }

    #[test]
    fn comments_and_commands() {
        let r =
            rules("# a comment\n\n   \t\npermit 1.0.0.0/8 # permit 2.0.0.0/8\npermit 2.0.0.0/8 : echo a # b : c\r\n");
        assert_eq!(r.rules.len(), 2);
        assert_eq!(r.rules[0].command, None);
        assert_eq!(r.rules[1].command.as_deref(), Some(&b"echo a # b : c"[..]));
        assert_eq!(r.rules[1].line, 5);
        // The classic `addr mask: cmd` and `eq port:cmd`.
        let r = rules("deny 1.0.0.0 255.0.0.0: echo x\ndeny 1.0.0.0 255.0.0.0 eq 23:echo y\n");
        assert_eq!(r.rules[0].command.as_deref(), Some(&b"echo x"[..]));
        assert_eq!(r.rules[1].port, Some((PortOp::Eq, 23)));
        assert_eq!(r.rules[1].command.as_deref(), Some(&b"echo y"[..]));
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let errs = errors(
            "permit 0.0.0.0/0\n\
             allow 1.2.3.4 255.255.255.255\n\
             permit 1.2.3.4\n\
             permit 1.2.3.4/33\n\
             permit host.example 255.0.0.0\n\
             permit 1.2.3.4 ffff::\n\
             permit 0.0.0.0/0 eq\n\
             permit 0.0.0.0/0 eq 70000\n\
             permit 0.0.0.0/0 eq nosuchservice\n\
             permit 0.0.0.0/0 1.0.0.0/8 between 5\n\
             permit 0.0.0.0/0 1.0.0.0/8 eq 5 6\n\
             permit ?=x 0.0.0.0/0\n\
             permit *= 0.0.0.0/0\n\
             permit *=a,,b 0.0.0.0/0\n\
             permit *=/no/such/file 0.0.0.0/0\n\
             permit *=etc/users 0.0.0.0/0\n\
             permit 0.0.0.0/0 :\n\
             #NO_IDENTD:\n\
             permit\n",
        );
        let lines: Vec<&str> = errs.iter().map(|e| e.split(':').nth(1).unwrap()).collect();
        let want: Vec<String> = (2..=19).map(|n| n.to_string()).collect();
        assert_eq!(lines, want, "{errs:#?}");
        assert!(
            errs[0].starts_with("test.conf:2: unknown action \"allow\""),
            "{}",
            errs[0]
        );
        assert!(errs[13].contains("/no/such/file"), "{}", errs[13]);
    }

    #[test]
    fn long_lines_are_refused() {
        let ok = format!("permit 0.0.0.0/0 : {}\n", "x".repeat(MAX_LINE_LEN - 19));
        assert_eq!(rules(&ok).rules.len(), 1);
        let long = format!("permit 0.0.0.0/0 : {}\n", "x".repeat(MAX_LINE_LEN - 18));
        assert!(errors(&long)[0].starts_with("test.conf:1: line longer than 1023 bytes"));
    }

    #[test]
    fn first_hook_line_of_each_kind_runs() {
        let r = rules("#BAD_ID: one\n#BAD_ID: two\n#NO_IDENTD:three\n");
        assert_eq!(r.bad_id.unwrap().command, b"one");
        assert_eq!(r.no_identd.unwrap().command, b"three");
    }

    #[test]
    fn builtin_policy() {
        let r = Rules::builtin(services());
        assert_eq!(check(&r, "u", "127.0.0.1", "1.1.1.1", 1), (0, true));
        assert_eq!(check(&r, "u", "127.9.9.9", "1.1.1.1", 1), (0, true));
        assert_eq!(check(&r, "u", "::1", "1.1.1.1", 1), (0, true));
        assert_eq!(check(&r, "u", "10.0.0.1", "1.1.1.1", 1), (0, false));
        assert_eq!(r.label(None), "builtin");
    }

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
    fn services_file() {
        let s = services();
        assert_eq!(s.port("telnet"), Some(23));
        assert_eq!(s.port("www"), Some(80));
        assert_eq!(s.port("domain"), None);
        assert_eq!(s.name(80), Some("http"));
        assert_eq!(port_number(b"8080", &s), Ok(8080));
        assert!(port_number(b"65536", &s).is_err());
    }
}
