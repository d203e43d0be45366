//! The chain file (`--chain FILE`): which requests leave through a parent
//! proxy, in the form of the classic CSTC `socks.conf`, one line per
//! route, the first that matches deciding:
//!
//! ```text
//! direct  [*=users] DST [op port]
//! deny    [*=users] DST [op port]
//! sockd   @=HOST[:PORT][,HOST[:PORT]...] [*=users] DST [op port]
//! socks4a @=... [*=users] DST [op port]
//! socks5  @=... [%=FILE] [*=users] DST [op port]
//! http    @=... [*=users] DST [op port]
//! ```
//!
//! `DST` is `addr mask`, `addr/prefix` (IPv4 or IPv6), `0/0` (every
//! destination) or `.domain` (a SOCKS4a name: the domain and every name
//! under it). `*=` lists the claimed user-ids as the rules' `*=` does,
//! files included; `op port` is the rules' port test. `@=` names the
//! parents, tried in order; `%=` names a file of `user:password` for a
//! SOCKS5 parent. A request that no line matches is refused ([`decide`]
//! says why): the chain never sends a request where no line said to.
//!
//! The chain routes; it does not guard. The rules file decides who may
//! go where, with every address of a name judged; the chain only says by
//! which way a permitted request leaves. So a `.domain` line matches the
//! name a SOCKS4a client sent and nothing else: a request by address
//! does not match it, whatever the address's name.
//!
//! Parsing ([`parse`]) and deciding ([`decide`]) are pure: user-list
//! files are read through the rules' [`Lookups`], credential files
//! through [`Secrets`]. [`load`] reads the file and what it names as a
//! [`Trust`] believes them; a credential file must besides be open to no
//! one but its owner.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::addr::{is_host_name, Net};
use crate::parent::{Credentials, Protocol, MAX_FIELD_LEN};
use crate::rules::lex;
use crate::rules::trust::{self, Trust};
use crate::rules::{self, users, Error, Lookups, PortOp, Services, System, MAX_FILE_LEN, MAX_LINE_LEN};
use crate::text::{self, show};

/// The longest credential file.
pub const MAX_SECRET_LEN: u64 = 1024;

/// What a line does with the requests it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Connect (or BIND) from this host, as without the chain.
    Direct,
    /// Refuse: 91.
    Deny,
    /// Through a parent of this list, tried in order.
    Parent(Via),
}

/// The parents of a line and how to speak to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub protocol: Protocol,
    /// At least one.
    pub parents: Vec<Parent>,
    /// `%=FILE`: SOCKS5's user and password, read when the file is
    /// loaded.
    pub credentials: Option<Secret>,
}

/// A credential file and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub path: PathBuf,
    pub credentials: Credentials,
}

/// One parent of `@=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub host: Host,
    pub port: u16,
}

/// A parent's host: an address, or a name looked up when it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Addr(IpAddr),
    Name(String),
}

impl fmt::Display for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Addr(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
            Host::Addr(IpAddr::V4(a)) => write!(f, "{a}:{}", self.port),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// What a line's destination field matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dst {
    /// `0/0`: every destination, by address or by name.
    Any,
    /// Addresses in a net. A request known only by its name matches a
    /// net of a whole family (`0.0.0.0 0.0.0.0`, `::/0`), and no other.
    Net(Net),
    /// `.domain`: a SOCKS4a name that is the domain or under it; held in
    /// lower case without a final dot.
    Domain(String),
}

impl Dst {
    /// Whether a request to `dst` (its address, if known) by `name` (its
    /// SOCKS4a name, if any, lower case without a final dot) matches:
    /// `None` when that cannot be told without the address (a request
    /// known only by its name, and a net narrower than a whole family).
    fn matches(&self, dst: Option<IpAddr>, name: Option<&str>) -> Option<bool> {
        match self {
            Dst::Any => Some(true),
            Dst::Net(n) => match dst {
                Some(ip) => Some(n.contains(ip)),
                None if matches!(n, Net::V4 { mask: 0, .. } | Net::V6 { mask: 0, .. }) => Some(true),
                None => None,
            },
            Dst::Domain(d) => Some(name.is_some_and(|n| in_domain(n, d))),
        }
    }
}

/// Whether `name` is `domain` or a name under it, letter case aside.
fn in_domain(name: &str, domain: &str) -> bool {
    let (n, d) = (name.as_bytes(), domain.as_bytes());
    if n.len() == d.len() {
        return n.eq_ignore_ascii_case(d);
    }
    n.len() > d.len() && n[n.len() - d.len() - 1] == b'.' && n[n.len() - d.len()..].eq_ignore_ascii_case(d)
}

/// One line of the chain file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub line: usize,
    /// The line as written, without a comment, for `--explain`.
    pub text: String,
    pub action: Action,
    /// `*=`: the claimed user-ids this line applies to, files expanded.
    pub users: Option<Vec<Vec<u8>>>,
    pub dst: Dst,
    pub port: Option<(PortOp, u16)>,
}

impl Line {
    /// Whether this line matches a request of `user` to `dst` by `name`
    /// (normalised) on `port`; `None` when that needs the address.
    fn matches(&self, user: &[u8], dst: Option<IpAddr>, name: Option<&str>, port: u16) -> Option<bool> {
        let others = self.port.is_none_or(|(op, p)| op.holds(port, p))
            && self.users.as_ref().is_none_or(|list| list.iter().any(|u| u == user));
        if others {
            self.dst.matches(dst, name)
        } else {
            Some(false)
        }
    }
}

impl Line {
    /// The line in the file's own form, written so that it parses back to
    /// the same line: explicit ports, nets as `addr/prefix` where the mask
    /// allows, user lists expanded, bytes as they were.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        match &self.action {
            Action::Direct => out.extend_from_slice(b"direct"),
            Action::Deny => out.extend_from_slice(b"deny"),
            Action::Parent(via) => {
                out.extend_from_slice(via.protocol.name().as_bytes());
                let list: Vec<String> = via.parents.iter().map(Parent::to_string).collect();
                out.extend_from_slice(format!(" @={}", list.join(",")).as_bytes());
                if let Some(s) = &via.credentials {
                    out.extend_from_slice(b" %=");
                    out.extend_from_slice(s.path.as_os_str().as_bytes());
                }
            }
        }
        if let Some(users) = &self.users {
            out.extend_from_slice(b" *=");
            out.extend_from_slice(&users.join(&b","[..]));
        }
        let dst = match &self.dst {
            Dst::Any => " 0/0".to_string(),
            Dst::Net(n) => format!(" {}", show_net(*n)),
            Dst::Domain(d) => format!(" .{d}"),
        };
        out.extend_from_slice(dst.as_bytes());
        if let Some((op, p)) = self.port {
            out.extend_from_slice(format!(" {} {p}", op_name(op)).as_bytes());
        }
        out
    }
}

/// [`Line::to_bytes`], bytes that are not UTF-8 replaced.
impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

fn op_name(op: PortOp) -> &'static str {
    match op {
        PortOp::Eq => "eq",
        PortOp::Neq => "neq",
        PortOp::Lt => "lt",
        PortOp::Gt => "gt",
        PortOp::Le => "le",
        PortOp::Ge => "ge",
    }
}

/// A net as `addr/prefix`, or `addr mask` when the mask is not a prefix.
fn show_net(n: Net) -> String {
    match n {
        Net::V4 { addr, mask } if mask.leading_ones() + mask.trailing_zeros() == 32 => {
            format!("{}/{}", Ipv4Addr::from(addr), mask.leading_ones())
        }
        Net::V4 { addr, mask } => format!("{} {}", Ipv4Addr::from(addr), Ipv4Addr::from(mask)),
        Net::V6 { addr, mask } if mask.leading_ones() + mask.trailing_zeros() == 128 => {
            format!("{}/{}", Ipv6Addr::from(addr), mask.leading_ones())
        }
        Net::V6 { addr, mask } => format!("{} {}", Ipv6Addr::from(addr), Ipv6Addr::from(mask)),
    }
}

/// The lines of one chain file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// The file's path.
    pub file: String,
    pub lines: Vec<Line>,
    /// The user-list and credential files read, in order, for noticing a
    /// change.
    pub files: Vec<PathBuf>,
}

impl Chain {
    /// `file:line` of `line`, as the audit line and `--explain` name it.
    pub fn label(&self, line: &Line) -> String {
        format!("{}:{}", self.file, line.line)
    }
}

/// The chain to route with, or every error that stops the file being
/// used.
pub type Loaded = Result<Chain, Vec<Error>>;

/// How the chain routes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed<'c> {
    /// This line decides: the first that matches.
    By(&'c Line),
    /// No line matches: the request is refused.
    Unmatched,
    /// The request is known only by its name, and a line by address could
    /// match it before any line decides: its addresses are needed.
    NeedsAddress,
}

/// How `chain` routes a request of claimed user-id `user` to destination
/// `dst` (its address, when known: the address the rules judged,
/// [`crate::addr::judged`]) by SOCKS4a name `name` (as sent; letter case
/// and a final dot do not matter), on `port`: by the first line that
/// matches.
///
/// No line matching means the request is refused: the chain sends
/// nothing where no line said to, so a file meant to send everything
/// through a parent cannot leak a request it forgot out through this
/// host's own address, and a destination this host cannot reach directly
/// is refused at once instead of at the connect timeout. A file that
/// wants the rest sent direct ends with `direct 0/0`.
///
/// A request known only by its name (`dst` `None`) matches `.domain`
/// lines, `0/0` and the nets of a whole family (`0.0.0.0 0.0.0.0`,
/// `::/0`); when a narrower net could match it first, it is
/// [`Routed::NeedsAddress`]. A request by address matches no `.domain`
/// line.
pub fn decide<'c>(chain: &'c Chain, user: &[u8], dst: Option<IpAddr>, name: Option<&str>, port: u16) -> Routed<'c> {
    let name = name.map(|n| n.strip_suffix('.').unwrap_or(n));
    for line in &chain.lines {
        match line.matches(user, dst, name, port) {
            Some(true) => return Routed::By(line),
            Some(false) => continue,
            None => return Routed::NeedsAddress,
        }
    }
    Routed::Unmatched
}

/// What a credential file is read through.
pub trait Secrets {
    /// The bytes of credential file `path`, or why it is not to be used.
    fn read(&mut self, path: &Path) -> Result<Vec<u8>, String>;
}

/// Fixed files, for tests and fuzzing.
impl Secrets for rules::Fixed {
    fn read(&mut self, path: &Path) -> Result<Vec<u8>, String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| "cannot read: not found".into())
    }
}

/// The real file system: a credential file is read when `trust` believes
/// it (root's, or the starting user's, and writable by no one else, on a
/// believed path) and others than its owner and its group cannot read it
/// (mode 0600, 0400, 0640 or 0440). The group is for a socks4d that never
/// runs as root (socks4d@.service as `User=socks4d`, say) or reads its
/// files after leaving root (`--listen`): `root:socks4d` mode 0640.
pub struct SystemSecrets {
    trust: Trust,
    /// The files read, in order.
    read: Vec<PathBuf>,
}

impl SystemSecrets {
    pub fn new(trust: &Trust) -> SystemSecrets {
        SystemSecrets {
            trust: trust.clone(),
            read: Vec::new(),
        }
    }
}

impl Secrets for SystemSecrets {
    fn read(&mut self, path: &Path) -> Result<Vec<u8>, String> {
        self.read.push(path.to_path_buf());
        let (file, meta) = self.trust.open(path).map_err(|e| unreadable(&e))?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o037 != 0 {
            return Err(format!(
                "open to others than its owner and its group (mode {mode:04o}); a file that holds a password \
                 must be mode 0600 or 0400 (or 0640 with a group socks4d runs in)"
            ));
        }
        trust::read_capped(&file, meta.len(), MAX_SECRET_LEN).map_err(|e| unreadable(&e))
    }
}

/// Why a credential file could not be read, with what to do when this
/// process may not read it.
fn unreadable(e: &std::io::Error) -> String {
    let why = trust::describe(e);
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return why;
    }
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    format!(
        "{why}; socks4d reads it as uid {uid} gid {gid}: make it root:GROUP mode 0640 with a group socks4d runs \
         in, or start socks4d as root"
    )
}

/// Parses the text of chain file `file`: every line is checked, and every
/// error returned, each with its line. Port names come from `services`,
/// user-list files through `lookups`, credential files through
/// `secrets`.
pub fn parse(
    text: &[u8],
    file: &str,
    services: &Services,
    lookups: &mut dyn Lookups,
    secrets: &mut dyn Secrets,
) -> Loaded {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text::lines(text) {
        match parse_line(raw, services, lookups, secrets) {
            Ok(None) => {}
            Ok(Some((body, action, users, dst, port))) => lines.push(Line {
                line: n,
                text: String::from_utf8_lossy(lex::trim(body)).into_owned(),
                action,
                users,
                dst,
                port,
            }),
            Err(message) => errors.push(Error {
                file: file.into(),
                line: Some(n),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(Chain {
            file: file.into(),
            lines,
            files: Vec::new(),
        })
    } else {
        Err(errors)
    }
}

/// A parsed line: its text without the comment, and its parts.
type Parts<'t> = (&'t [u8], Action, Option<Vec<Vec<u8>>>, Dst, Option<(PortOp, u16)>);

/// One line: nothing (blank or a comment), or a route.
fn parse_line<'t>(
    raw: &'t [u8],
    services: &Services,
    lookups: &mut dyn Lookups,
    secrets: &mut dyn Secrets,
) -> Result<Option<Parts<'t>>, String> {
    if raw.len() > MAX_LINE_LEN {
        return Err(format!("line longer than {MAX_LINE_LEN} bytes"));
    }
    if raw.contains(&0) {
        return Err("NUL byte in line".into());
    }
    let body = match raw.iter().position(|&b| b == b'#') {
        Some(hash) => &raw[..hash],
        None => raw,
    };
    let fields: Vec<&[u8]> = lex::fields(body).map(|(_, f)| f).collect();
    let Some((&first, mut rest)) = fields.split_first() else {
        return Ok(None);
    };
    let protocol = match first {
        b"direct" | b"deny" => None,
        b"sockd" => Some(Protocol::Socks4),
        b"socks4a" => Some(Protocol::Socks4a),
        b"socks5" => Some(Protocol::Socks5),
        b"http" => Some(Protocol::Http),
        other => {
            return Err(format!(
                "unknown action {} (direct, deny, sockd, socks4a, socks5 or http)",
                show(other)
            ))
        }
    };
    let word = String::from_utf8_lossy(first);

    let (mut parents, mut secret, mut users) = (None, None, None);
    while let Some(&f) = rest.first() {
        let (key, value) = match f {
            [k @ (b'@' | b'%' | b'*' | b'?'), b'=', value @ ..] => (*k, value),
            _ => break,
        };
        rest = &rest[1..];
        match key {
            b'@' if protocol.is_none() => return Err(format!("{word} takes no parents (@=)")),
            b'@' if parents.is_some() => return Err("a second @= field".into()),
            b'@' => parents = Some(parent_list(value, protocol.unwrap_or(Protocol::Socks4))?),
            b'%' if protocol != Some(Protocol::Socks5) => {
                return Err(format!("%= (a user and password) is for socks5 lines only, not {word}"))
            }
            b'%' if secret.is_some() => return Err("a second %= field".into()),
            b'%' => secret = Some(credentials(value, secrets)?),
            b'*' if users.is_some() => return Err("a second *= field".into()),
            b'*' if value.is_empty() => return Err("empty *= (leave the field out to match every user-id)".into()),
            b'*' => users = Some(users::parse_list(value, lookups)?),
            _ => {
                return Err(format!(
                    "{} has no meaning in the chain file (ident is the rules file's: ?= goes there)",
                    show(f)
                ))
            }
        }
    }
    let action = match (protocol, parents) {
        (None, _) if first == b"deny" => Action::Deny,
        (None, _) => Action::Direct,
        (Some(_), None) => {
            return Err(format!(
                "{word} needs its parents: {word} @=HOST[:PORT][,HOST[:PORT]...] (there is no default parent)"
            ))
        }
        (Some(protocol), Some(parents)) => Action::Parent(Via {
            protocol,
            parents,
            credentials: secret,
        }),
    };

    let mut at = 0;
    let dst = destination(rest, &mut at)?;
    let mut port = None;
    let command = |t: &[u8]| t.starts_with(b":");
    if let Some(&t) = rest.get(at).filter(|t| !command(t)) {
        let op = PortOp::from_token(t).ok_or_else(|| format!("expected eq, neq, lt, gt, le or ge, not {}", show(t)))?;
        let p = rest.get(at + 1).ok_or("no port after the comparison")?;
        port = Some((op, rules::port_number(p, services)?));
        at += 2;
    }
    if let Some(&extra) = rest.get(at) {
        if command(extra) {
            return Err("a command (: shell_cmd): the chain file runs none; the rules file's lines can".into());
        }
        return Err(format!("unexpected {} after the line", show(extra)));
    }
    Ok(Some((body, action, users, dst, port)))
}

/// The field that matches every destination, of both families and by
/// name.
const ANY: &[u8] = b"0/0";

/// The destination at `fields[*at]`: `0/0`, `.domain`, `addr/prefix` (one
/// field) or `addr mask` (two). Advances `at` past it.
fn destination(fields: &[&[u8]], at: &mut usize) -> Result<Dst, String> {
    let Some(&t) = fields.get(*at) else {
        return Err("no destination (addr mask, addr/prefix, 0/0 or .domain)".into());
    };
    *at += 1;
    if t == ANY {
        return Ok(Dst::Any);
    }
    if t.starts_with(b":")
        && text_of(t)
            .and_then(|s| s.split('/').next()?.parse::<Ipv6Addr>().ok())
            .is_none()
    {
        return Err("a command (: shell_cmd) where the destination goes: the chain file runs none".into());
    }
    let s = text_of(t).ok_or_else(|| format!("destination {} is not text", show(t)))?;
    if let Some(domain) = s.strip_prefix('.') {
        // A name as the resolver takes it, a final dot allowed.
        if !is_host_name(domain) {
            return Err(format!("destination {} is not .domain.name", show(t)));
        }
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        return Ok(Dst::Domain(domain.to_ascii_lowercase()));
    }
    if s.contains('/') {
        return Net::parse(s)
            .map(Dst::Net)
            .map_err(|e| format!("destination {}: {e}", show(t)));
    }
    let ip: IpAddr = s.parse().map_err(|_| {
        if is_host_name(s) {
            format!(
                "destination {s} is a host name: the chain matches names as SOCKS4a clients send them, with \
                 .{s} for that name and those under it; or write the address"
            )
        } else {
            format!("destination {} is not an IP address", show(t))
        }
    })?;
    let Some(&m) = fields.get(*at) else {
        return Err(format!("no mask after destination {s} (or write {s}/prefix)"));
    };
    *at += 1;
    let mask: IpAddr = text_of(m)
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("mask {} is not an address mask", show(m)))?;
    Net::with_mask(ip, mask)
        .map(Dst::Net)
        .ok_or_else(|| format!("destination {s} and mask {mask} are not of one family"))
}

fn text_of(t: &[u8]) -> Option<&str> {
    std::str::from_utf8(t).ok()
}

/// The parents of `@=`: `HOST[:PORT]` separated by commas, where HOST is
/// an IPv4 address, an IPv6 address (in brackets when a port follows) or
/// a host name; a parent without a port gets `protocol`'s.
fn parent_list(list: &[u8], protocol: Protocol) -> Result<Vec<Parent>, String> {
    let s = text_of(list).ok_or_else(|| format!("@={} is not text", show(list)))?;
    if s.is_empty() {
        return Err("empty @= (name the parents: @=HOST[:PORT],...)".into());
    }
    s.split(',').map(|item| parent(item, protocol)).collect()
}

fn parent(item: &str, protocol: Protocol) -> Result<Parent, String> {
    let shown = || show(item.as_bytes());
    if item.is_empty() {
        return Err("empty parent in the @= list (an extra comma?)".into());
    }
    // A bare IPv6 address has no port.
    if let Ok(a) = item.parse::<Ipv6Addr>() {
        return Ok(Parent {
            host: host_addr(IpAddr::V6(a)),
            port: protocol.default_port(),
        });
    }
    let (host, port) = if let Some(bracketed) = item.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("parent {}: no ] after the IPv6 address", shown()))?;
        let a: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("parent {}: {} is not an IPv6 address", shown(), show(inside.as_bytes())))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("parent {}: expected :PORT after ]", shown()))?,
            ),
        };
        (Host::Addr(IpAddr::V6(a)), port)
    } else {
        let (h, port) = match item.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (item, None),
        };
        let host = match h.parse::<Ipv4Addr>() {
            Ok(a) => host_addr(IpAddr::V4(a)),
            Err(_) if is_host_name(h) => Host::Name(h.to_string()),
            Err(_) => {
                return Err(format!(
                    "parent {}: {} is neither an IP address nor a host name (IPv6 with a port: [addr]:port)",
                    shown(),
                    show(h.as_bytes())
                ))
            }
        };
        (host, port)
    };
    let port = match port {
        None => protocol.default_port(),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "parent {}: port {} is not a number from 1 to 65535",
                    shown(),
                    show(p.as_bytes())
                ))
            }
        },
    };
    Ok(Parent { host, port })
}

/// An address as the connection to it uses it: an IPv4-mapped IPv6
/// address as IPv4.
fn host_addr(ip: IpAddr) -> Host {
    Host::Addr(match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

/// The credential file of `%=`: an absolute path to a file of one line,
/// `user:password`, each 1 to 255 bytes, the password everything after
/// the first colon. No message quotes the file's content.
fn credentials(value: &[u8], secrets: &mut dyn Secrets) -> Result<Secret, String> {
    if value.first() != Some(&b'/') {
        return Err(format!(
            "%={}: the credential file must be an absolute path",
            show(value)
        ));
    }
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(value));
    let at = |why: &str| format!("credential file {}: {why}", path.display());
    let bytes = secrets.read(&path).map_err(|why| at(&why))?;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    if body.iter().any(|&b| b == b'\n' || b == b'\r' || b == 0) {
        return Err(at(
            "more than one line, or a NUL byte; it holds one line, user:password",
        ));
    }
    let Some(colon) = body.iter().position(|&b| b == b':') else {
        return Err(at(
            "no ':' between the user and the password; it holds one line, user:password",
        ));
    };
    let (user, password) = (&body[..colon], &body[colon + 1..]);
    let fits = |f: &[u8]| (1..=MAX_FIELD_LEN).contains(&f.len());
    if !fits(user) || !fits(password) {
        return Err(at("the user and the password must each be 1 to 255 bytes (RFC 1929)"));
    }
    Ok(Secret {
        path: path.clone(),
        credentials: Credentials {
            user: user.to_vec(),
            password: password.to_vec(),
        },
    })
}

/// Reads and parses chain file `path`, the user lists and credential
/// files it names included, as `trust` believes them. A file that is
/// missing, unreadable, not believed or has an error is an error: no
/// service (every request 91) until it is fixed, as for the rules file.
pub fn load(path: &Path, trust: &Trust) -> Loaded {
    let file = path.display().to_string();
    let text = trust.read(path, MAX_FILE_LEN).map_err(|e| {
        vec![Error {
            file: file.clone(),
            line: None,
            message: trust::describe(&e),
        }]
    })?;
    let mut lookups = System::new(trust);
    let mut secrets = SystemSecrets::new(trust);
    let mut chain = parse(&text, &file, &Services::system(trust), &mut lookups, &mut secrets)?;
    chain.files = lookups.into_files();
    chain.files.extend(secrets.read);
    Ok(chain)
}

/// What `--check-config` says about a parsed chain, beyond its errors:
/// warnings, each with its line (`None`: the file as a whole), in file
/// order.
pub fn notes(chain: &Chain) -> Vec<(Option<usize>, String)> {
    let mut out = Vec::new();
    // The line by which every request is matched, if any: a `0/0` line
    // for every user and port, or lines for all of both families.
    let (mut v4, mut v6) = (false, false);
    let mut covered: Option<usize> = None;
    for l in &chain.lines {
        if let Some(m) = covered {
            out.push((
                Some(l.line),
                format!("never used: line {m} matches every request before this line"),
            ));
            continue;
        }
        if let Action::Parent(Via {
            protocol: Protocol::Socks4,
            ..
        }) = l.action
        {
            if matches!(l.dst, Dst::Any | Dst::Net(Net::V6 { .. })) {
                out.push((
                    Some(l.line),
                    "a sockd (SOCKS4) parent carries IPv4 addresses only: the IPv6 destinations this line \
                     matches are refused; use socks4a or socks5 for them"
                        .into(),
                ));
            }
        }
        let whole = l.users.is_none() && l.port.is_none();
        match l.dst {
            Dst::Any if whole => covered = Some(l.line),
            Dst::Net(Net::V4 { mask: 0, .. }) if whole => v4 = true,
            Dst::Net(Net::V6 { mask: 0, .. }) if whole => v6 = true,
            _ => {}
        }
        if v4 && v6 && covered.is_none() {
            covered = Some(l.line);
        }
    }
    if covered.is_none() {
        out.insert(
            0,
            (
                None,
                "no line matches every request: a request no line matches is refused (91); end the file \
                 with `direct 0/0` to send the rest direct"
                    .into(),
            ),
        );
    }
    out
}

/// Whether the chain's lines are the same as `other`'s, line numbers and
/// texts aside (the fuzz target's round trip).
pub fn same_routes(a: &Chain, b: &Chain) -> bool {
    a.lines.len() == b.lines.len()
        && a.lines
            .iter()
            .zip(&b.lines)
            .all(|(x, y)| x.action == y.action && x.users == y.users && x.dst == y.dst && x.port == y.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rules::Fixed;

    const SERVICES: &str = "http\t\t80/tcp\t\twww\nhttps\t\t443/tcp\n";

    fn world() -> Fixed {
        Fixed::default()
            .file("/etc/ops.users", "alice, bob\n# not carol\n")
            .file("/etc/socks4d/parent.secret", "proxyuser:pa:ss word\n")
            .file("/etc/socks4d/two-lines", "a:b\nc:d\n")
            .file("/etc/socks4d/no-colon", "ab\n")
            .file("/etc/socks4d/empty-password", "a:\n")
    }

    fn parsed(text: &str) -> Loaded {
        let mut w = world();
        parse(
            text.as_bytes(),
            "chain.conf",
            &Services::parse(SERVICES.as_bytes()),
            &mut w.clone(),
            &mut w,
        )
    }

    fn chain(text: &str) -> Chain {
        parsed(text).unwrap_or_else(|e| panic!("{text}: {e:#?}"))
    }

    fn errors(text: &str) -> Vec<String> {
        parsed(text).unwrap_err().iter().map(ToString::to_string).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The line number that decides, 0 for none, -1 when the address
    /// is needed.
    fn which(c: &Chain, user: &str, dst: Option<&str>, name: Option<&str>, port: u16) -> i64 {
        match decide(c, user.as_bytes(), dst.map(ip), name, port) {
            Routed::By(l) => l.line as i64,
            Routed::Unmatched => 0,
            Routed::NeedsAddress => -1,
        }
    }

    #[test]
    fn the_forms_of_the_issue_parse() {
        let c = chain(
            "# parents\n\
             socks5 @=10.0.0.1:1080,10.0.0.2 *=alice 0.0.0.0 0.0.0.0 eq 443\n\
             sockd @=gw.example *=/etc/ops.users 192.0.2.0/24\n\
             socks4a @=[2001:db8::1]:1081,2001:db8::2 .Corp.Example. eq https\n\
             http @=proxy.example:8080 0/0 eq 443   # CONNECT\n\
             socks5 @=[::1] %=/etc/socks4d/parent.secret 2001:db8::/32\n\
             deny 0/0 eq 25\r\n\
             direct 0/0\n",
        );
        assert_eq!(c.lines.len(), 7);
        let Action::Parent(via) = &c.lines[0].action else {
            panic!()
        };
        assert_eq!(via.protocol, Protocol::Socks5);
        assert_eq!(
            via.parents,
            [
                Parent {
                    host: Host::Addr(ip("10.0.0.1")),
                    port: 1080
                },
                Parent {
                    host: Host::Addr(ip("10.0.0.2")),
                    port: 1080
                }
            ]
        );
        assert_eq!(c.lines[0].users, Some(vec![b"alice".to_vec()]));
        assert_eq!(c.lines[0].dst, Dst::Net(Net::ANY_V4));
        assert_eq!(c.lines[0].port, Some((PortOp::Eq, 443)));
        let Action::Parent(via) = &c.lines[1].action else {
            panic!()
        };
        assert_eq!(via.parents[0].host, Host::Name("gw.example".into()));
        assert_eq!(c.lines[1].users, Some(vec![b"alice".to_vec(), b"bob".to_vec()]));
        let Action::Parent(via) = &c.lines[2].action else {
            panic!()
        };
        assert_eq!((via.parents[0].port, via.parents[1].port), (1081, 1080));
        assert_eq!(c.lines[2].dst, Dst::Domain("corp.example".into()));
        let Action::Parent(via) = &c.lines[3].action else {
            panic!()
        };
        assert_eq!((via.protocol, via.parents[0].port), (Protocol::Http, 8080));
        assert_eq!(c.lines[3].text, "http @=proxy.example:8080 0/0 eq 443");
        let Action::Parent(via) = &c.lines[4].action else {
            panic!()
        };
        let secret = via.credentials.as_ref().unwrap();
        assert_eq!(secret.credentials.user, b"proxyuser");
        assert_eq!(secret.credentials.password, b"pa:ss word");
        assert_eq!(via.parents[0].port, 1080);
        assert_eq!(c.lines[5].action, Action::Deny);
        assert_eq!(c.lines[6].action, Action::Direct);
        // The password appears in no printout of the chain.
        assert!(!format!("{c:?}").contains("pa:ss"));
        assert!(!c.lines[4].to_string().contains("pa:ss"));
        // Default ports: 1080 for SOCKS, 3128 for HTTP.
        let Action::Parent(via) = &chain("http @=10.0.0.9 0/0\n").lines[0].action else {
            panic!()
        };
        assert_eq!(via.parents[0].port, 3128);
    }

    #[test]
    fn first_match_wins_and_no_match_is_none() {
        let c = chain(
            "direct 10.0.0.0/8\n\
             deny *=mallory 0/0\n\
             socks5 @=10.0.0.1 .example.org\n\
             sockd @=10.0.0.2 0.0.0.0 0.0.0.0 ge 1024\n\
             http @=10.0.0.3 ::/0\n",
        );
        for (user, dst, name, port, want) in [
            ("u", Some("10.1.2.3"), None, 80, 1),
            // The address decides over the name for address lines.
            ("u", Some("10.1.2.3"), Some("www.example.org"), 80, 1),
            ("mallory", Some("192.0.2.1"), None, 80, 2),
            ("u", Some("192.0.2.1"), Some("WWW.Example.ORG."), 80, 3),
            // By name only, a narrower net that could match first needs
            // the address.
            ("u", None, Some("example.org"), 80, -1),
            ("mallory", None, Some("example.org"), 80, -1),
            ("u", Some("192.0.2.1"), None, 8080, 4),
            ("u", Some("192.0.2.1"), None, 80, 0),
            ("u", Some("2001:db8::1"), None, 80, 5),
            // By name only: whole-family nets match.
            ("u", None, Some("host.example.net"), 80, -1),
            // A request by address matches no .domain line.
            ("u", Some("198.51.100.1"), None, 443, 0),
        ] {
            assert_eq!(which(&c, user, dst, name, port), want, "{user} {dst:?} {name:?} {port}");
        }
        assert_eq!(which(&chain("direct 10.0.0.0/8\n"), "u", None, Some("a.b"), 1), -1);
        // Lines by name and whole-family nets decide names without their
        // addresses; a narrower net for other users or ports does not
        // stand in the way.
        let c = chain(
            "direct *=alice 10.0.0.0/8\n\
             deny 192.0.2.0/24 eq 25\n\
             socks5 @=10.0.0.1 .example.org\n\
             sockd @=10.0.0.2 0.0.0.0 0.0.0.0 ge 1024\n\
             http @=10.0.0.3 ::/0\n",
        );
        for (user, name, port, want) in [
            ("bob", "www.example.org", 80, 3),
            ("alice", "www.example.org", 80, -1),
            ("bob", "www.example.org", 25, -1),
            ("bob", "other.example", 8080, 4),
            ("bob", "other.example", 80, 5),
        ] {
            assert_eq!(which(&c, user, None, Some(name), port), want, "{user} {name} {port}");
        }
        assert_eq!(which(&chain("direct .a.b\n"), "u", None, Some("c.d"), 1), 0);
        assert_eq!(which(&chain(""), "u", Some("10.0.0.1"), None, 1), 0);
    }

    #[test]
    fn domains_match_whole_labels_case_and_final_dot_aside() {
        let c = chain("direct .Example.COM.\n");
        for (name, yes) in [
            ("example.com", true),
            ("EXAMPLE.COM.", true),
            ("a.b.example.com", true),
            ("badexample.com", false),
            ("example.com.evil", false),
            ("com", false),
            ("", false),
        ] {
            assert_eq!(which(&c, "u", None, Some(name), 1) == 1, yes, "{name}");
        }
    }

    #[test]
    fn what_parses_prints_back_the_same() {
        let text = "socks5 @=10.0.0.1:1080,[2001:db8::1]:9,gw.example %=/etc/socks4d/parent.secret *=alice,/etc/ops.users 10.0.0.0 255.0.255.0 le 1023\n\
                    sockd @=::ffff:10.0.0.9 ::ffff:192.0.2.0/120 eq www\n\
                    http @=p 2001:db8:: ffff:ffff:: neq 80\n\
                    deny .x.example\n\
                    direct 0/0\n";
        let c = chain(text);
        let printed: String = c.lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(
            printed,
            "socks5 @=10.0.0.1:1080,[2001:db8::1]:9,gw.example:1080 %=/etc/socks4d/parent.secret *=alice,alice,bob 10.0.0.0 255.0.255.0 le 1023\n\
             sockd @=10.0.0.9:1080 192.0.2.0/24 eq 80\n\
             http @=p:3128 2001:db8::/32 neq 80\n\
             deny .x.example\n\
             direct 0/0\n"
        );
        assert!(same_routes(&c, &chain(&printed)));
    }

    #[test]
    fn errors_name_their_lines_and_say_why() {
        let text = "route 0/0\n\
                    sockd 0/0\n\
                    direct @=10.0.0.1 0/0\n\
                    sockd @=10.0.0.1 %=/etc/socks4d/parent.secret 0/0\n\
                    socks5 @= 0/0\n\
                    socks5 @=10.0.0.1,,10.0.0.2 0/0\n\
                    socks5 @=10.0.0.1:0 0/0\n\
                    socks5 @=10.0.0.1:65536 0/0\n\
                    socks5 @=[2001:db8::1 0/0\n\
                    socks5 @=bad_host! 0/0\n\
                    socks5 @=2001:db8::1:1080:x 0/0\n\
                    socks5 @=10.0.0.1 %=etc/secret 0/0\n\
                    socks5 @=10.0.0.1 %=/etc/socks4d/missing 0/0\n\
                    socks5 @=10.0.0.1 %=/etc/socks4d/two-lines 0/0\n\
                    socks5 @=10.0.0.1 %=/etc/socks4d/no-colon 0/0\n\
                    socks5 @=10.0.0.1 %=/etc/socks4d/empty-password 0/0\n\
                    direct ?=I 0/0\n\
                    direct *= 0/0\n\
                    direct *=a *=b 0/0\n\
                    direct\n\
                    direct www.example.org\n\
                    direct 10.0.0.0\n\
                    direct 10.0.0.0 ffff::\n\
                    direct 10.0.0.0/33\n\
                    direct . \n\
                    direct .example.org..\n\
                    direct 0/0 eq\n\
                    direct 0/0 eq 70000\n\
                    direct 0/0 between 5\n\
                    direct 0/0 eq 80 extra\n\
                    direct 0/0 : echo hi\n\
                    direct : echo hi\n\
                    socks5 @=10.0.0.1 @=10.0.0.2 0/0\n";
        let errs = errors(text);
        let lines: Vec<&str> = errs.iter().map(|e| e.split(':').nth(1).unwrap()).collect();
        let want: Vec<String> = (1..=33).map(|n| n.to_string()).collect();
        assert_eq!(lines, want, "{errs:#?}");
        for (i, want) in [
            "chain.conf:1: unknown action \"route\"",
            "sockd needs its parents",
            "direct takes no parents",
            "for socks5 lines only, not sockd",
            "empty @=",
            "empty parent",
            "port \"0\" is not a number from 1 to 65535",
            "port \"65536\"",
            "no ] after",
            "neither an IP address nor a host name",
            "neither an IP address nor a host name (IPv6 with a port: [addr]:port)",
            "must be an absolute path",
            "credential file /etc/socks4d/missing: cannot read",
            "more than one line",
            "no ':'",
            "1 to 255 bytes",
            "?=I",
            "empty *=",
            "a second *=",
            "no destination",
            "is a host name",
            "no mask after destination 10.0.0.0",
            "not of one family",
            "prefix /33",
            "not .domain.name",
            "not .domain.name",
            "no port after",
            "above 65535",
            "expected eq",
            "unexpected \"extra\"",
            "runs none",
            "runs none",
            "a second @=",
        ]
        .iter()
        .enumerate()
        {
            assert!(errs[i].contains(want), "{}: want {want}", errs[i]);
        }
        // No message quotes a credential file's content.
        assert!(errs.iter().all(|e| !e.contains("a:b") && !e.contains("c:d")));
    }

    #[test]
    fn long_lines_nul_and_binary_are_errors() {
        let long = format!("direct 0/0 # {}\n", "x".repeat(MAX_LINE_LEN));
        assert!(errors(&long)[0].contains("longer than 1023"));
        let ok = format!("direct 0/0 #{}\n", "x".repeat(MAX_LINE_LEN - 12));
        assert_eq!(chain(&ok).lines.len(), 1);
        let e = parsed("direct 0/0\0\n").unwrap_err();
        assert!(e[0].message.contains("NUL"));
        let e = parsed("direct \u{ff}\u{fe} 0.0.0.0\n").unwrap_err();
        assert!(e[0].message.contains("is not an IP address"), "{e:?}");
    }

    #[test]
    fn check_notes_catch_alls_unreached_lines_and_socks4_with_ipv6() {
        let n = notes(&chain("direct 10.0.0.0/8\n"));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].0, None);
        assert!(n[0].1.contains("direct 0/0"));
        let n = notes(&chain("sockd @=10.0.0.1 0/0\ndirect 10.0.0.0/8\n"));
        assert_eq!(n.iter().map(|n| n.0).collect::<Vec<_>>(), [Some(1), Some(2)]);
        assert!(n[0].1.contains("IPv4 addresses only"));
        assert!(n[1].1.contains("never used: line 1"));
        // Both whole families, for every user and port: every request.
        let n = notes(&chain("direct 0.0.0.0 0.0.0.0\nhttp @=p ::/0\ndeny 0/0\n"));
        assert_eq!(n.len(), 1);
        assert!(n[0].1.contains("never used: line 2"), "{n:?}");
        // A port or a user list leaves requests over.
        assert_eq!(notes(&chain("direct 0/0 eq 80\n"))[0].0, None);
        assert_eq!(notes(&chain("direct *=alice 0/0\n"))[0].0, None);
        assert!(notes(&chain("direct 0/0\n")).is_empty());
    }

    #[test]
    fn credential_files_must_be_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("socks4d-chain-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "u:p\n").unwrap();
        let trust = Trust::new("65534:65534");
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, true),
            (0o440, true),
            (0o604, false),
            (0o644, false),
            (0o641, false),
        ] {
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = SystemSecrets::new(&trust).read(&secret);
            assert_eq!(got.is_ok(), ok, "{mode:o}: {got:?}");
            if let Err(why) = got {
                assert!(
                    why.contains(&format!("mode {mode:04o}")) && why.contains("0600 or 0400 (or 0640"),
                    "{why}"
                );
            }
        }
        // Believed as the rules files are: writable by group is refused.
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o620)).unwrap();
        let why = SystemSecrets::new(&trust).read(&secret).unwrap_err();
        assert!(why.contains("writable by group"), "{why}");
        // And through load, with the files named recorded.
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = dir.join("chain");
        std::fs::write(&file, format!("socks5 @=127.0.0.1 %={} 0/0\n", secret.display())).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = load(&file, &trust).unwrap();
        assert_eq!(c.files, std::slice::from_ref(&secret));
        assert_eq!(c.label(&c.lines[0]), format!("{}:1", file.display()));
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&file, &trust).unwrap_err();
        assert_eq!(e[0].line, Some(1));
        assert!(e[0].message.contains("mode 0644"), "{e:?}");
        let e = load(&dir.join("absent"), &trust).unwrap_err();
        assert!(
            e[0].to_string()
                .ends_with("absent: cannot read: No such file or directory (os error 2)"),
            "{e:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
