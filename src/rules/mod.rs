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
//! The parts, each with its own tests:
//!
//! - [`grammar`]: a file's text to [`Rules`], and the [`Note`]s on the
//!   lines that a classic sockd read otherwise or that use a legacy form;
//! - [`classic`]: where CSTC sockd's line and field limits made it read a
//!   line otherwise than socks4d does;
//! - [`decide`]: the first-match loop over the rules, pure;
//! - [`users`]: `*=` lists and user-list files;
//! - [`services`]: `/etc/services`, for port names and `%S`;
//! - [`trust`]: which files are believed, and reading them without
//!   waiting;
//! - [`command`]: a rule's or hook's shell command, its `%` substitutions
//!   and its run, waited for up to a time limit.
//!
//! Parsing and deciding are pure: what a rules file refers to outside
//! itself (user-list files, host names in address fields) is looked up
//! through a [`Lookups`] the caller passes in. [`load`] passes the real
//! file system and resolver ([`System`]), which reads only the files a
//! [`Trust`] believes.

pub mod classic;
pub mod command;
pub mod decide;
pub mod frozen;
pub mod grammar;
pub mod services;
pub mod trust;
pub mod users;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ident::Mode;
use crate::net::Deadline;

pub use command::{expand, sanitize, spawn, Spawned, Subst, MAX_SUBST_LEN, NAME_LOOKUP_TIMEOUT};
pub use decide::{decide, outlook, Decision, Facts, Outlook, Partial, Reach};
pub use grammar::{check, parse, port_number, Checked, Note, NoteKind, MAX_LINE_LEN};
pub use services::{Services, SERVICES_FILE};
pub use trust::Trust;

/// Where the rules are read from unless `-f` names another file.
pub const DEFAULT_FILE: &str = "/etc/socks4d.conf";
/// The `rule=` label of the built-in policy.
pub const BUILTIN: &str = "builtin";
/// The largest rules file or user-list file read. Real ones are a few
/// kilobytes, and every connection reads them.
pub const MAX_FILE_LEN: u64 = 1 << 20;
/// How long all the host-name lookups of one rules file may take together.
/// A name still unresolved then is a config error: no service.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// `addr/prefix`, or a bare address (the one host), IPv4 or IPv6;
    /// IPv4-mapped nets as IPv4 ([`Net::unmapped`]). For options
    /// (`--proxy-protocol`) and the route file.
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = a.parse().map_err(|_| format!("{a} is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match prefix {
            None => max,
            Some(p) => match p.parse::<u32>() {
                Ok(b) if b <= max && p.bytes().all(|c| c.is_ascii_digit()) => b,
                _ => return Err(format!("prefix /{p} is not a number from 0 to {max}")),
            },
        };
        Ok(Net::prefix(ip, bits).unmapped())
    }

    /// The net of `ip`'s first `bits` bits (at most the family's width).
    pub fn prefix(ip: IpAddr, bits: u32) -> Net {
        match ip {
            IpAddr::V4(a) => Net::V4 {
                addr: a.into(),
                mask: u32::MAX.checked_shl(32 - bits.min(32)).unwrap_or(0),
            },
            IpAddr::V6(a) => Net::V6 {
                addr: a.into(),
                mask: u128::MAX.checked_shl(128 - bits.min(128)).unwrap_or(0),
            },
        }
    }

    /// An address and a mask of one family; IPv4-mapped nets as IPv4
    /// ([`Net::unmapped`]).
    pub fn with_mask(addr: IpAddr, mask: IpAddr) -> Option<Net> {
        match (addr, mask) {
            (IpAddr::V4(a), IpAddr::V4(m)) => Some(Net::V4 {
                addr: a.into(),
                mask: m.into(),
            }),
            (IpAddr::V6(a), IpAddr::V6(m)) => Some(
                Net::V6 {
                    addr: a.into(),
                    mask: m.into(),
                }
                .unmapped(),
            ),
            _ => None,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self, Net::V4 { .. })
    }

    /// Every IPv4 address.
    pub const ANY_V4: Net = Net::V4 { addr: 0, mask: 0 };
    /// Every IPv6 address.
    pub const ANY_V6: Net = Net::V6 { addr: 0, mask: 0 };

    /// A net of IPv4-mapped addresses (`::ffff:a.b.c.d/p` with `p` of 96
    /// or more) as the IPv4 net it stands for: addresses are matched in
    /// their canonical form ([`crate::dest::canonical`]), where a mapped
    /// address is IPv4. Every other net as it is.
    pub fn unmapped(self) -> Net {
        const MAPPED: u128 = 0xffff_0000_0000;
        const PREFIX: u128 = !0xffff_ffff;
        match self {
            Net::V6 { addr, mask } if mask & PREFIX == PREFIX && addr & PREFIX == MAPPED => Net::V4 {
                addr: addr as u32,
                mask: mask as u32,
            },
            other => other,
        }
    }

    /// Whether this is a net of NAT64 addresses (within `64:ff9b::/96`),
    /// which the rules judge as the IPv4 addresses they embed
    /// ([`crate::dest::judged`]): as a destination it matches nothing.
    pub fn is_nat64(self) -> bool {
        const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;
        const PREFIX: u128 = !0xffff_ffff;
        matches!(self, Net::V6 { addr, mask } if mask & PREFIX == PREFIX && addr & PREFIX == NAT64)
    }

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
    pub fn from_token(t: &[u8]) -> Option<PortOp> {
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
    /// The source: one net, or one per address of a host name, any of
    /// which matches.
    pub src: Vec<Net>,
    /// `None`: any destination.
    pub dst: Option<Vec<Net>>,
    pub port: Option<(PortOp, u16)>,
    /// `: shell_cmd`, run when this line decides a request.
    pub command: Option<Vec<u8>>,
}

/// A `#NO_IDENTD:` or `#BAD_ID:` line. An empty command (the line as a
/// bare `#NO_IDENTD:`) runs nothing, and still is the first of its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub line: usize,
    pub command: Vec<u8>,
}

impl Hook {
    /// The command to run, if the line has one.
    pub fn command(&self) -> Option<&[u8]> {
        (!self.command.is_empty()).then_some(self.command.as_slice())
    }
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
    /// The rules read from the rules file's frozen file, decided from its
    /// checked bytes; `rules` is then empty.
    pub frozen: Option<frozen::Frozen>,
    /// A frozen file was there and not used: why.
    pub frozen_unused: Option<String>,
    /// The files besides the rules file that these rules were read from:
    /// the user lists (or the frozen file's record of them).
    pub files: Vec<PathBuf>,
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
            src: vec![src],
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
            frozen: None,
            frozen_unused: None,
            files: Vec::new(),
        }
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.frozen.as_ref().map_or(self.rules.len(), frozen::Frozen::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// What a rules file names outside itself.
pub trait Lookups {
    /// The bytes of user-list file `path`.
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    /// The IPv4 addresses of host name `name` (an address field), or why
    /// there are none.
    fn resolve(&mut self, name: &str) -> Result<Vec<Ipv4Addr>, String>;
}

/// The real file system and resolver. Files are read only when `trust`
/// believes them. All the lookups of one rules file share one deadline of
/// [`RESOLVE_TIMEOUT`], and each name is looked up once.
pub struct System {
    trust: Trust,
    /// The files read, in order.
    read: Vec<PathBuf>,
    deadline: Option<Deadline>,
    names: HashMap<String, Result<Vec<Ipv4Addr>, String>>,
}

impl System {
    pub fn new(trust: &Trust) -> System {
        System {
            trust: trust.clone(),
            read: Vec::new(),
            deadline: None,
            names: HashMap::new(),
        }
    }
}

impl Lookups for System {
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        self.read.push(path.to_path_buf());
        read_capped(path, &self.trust)
    }

    fn resolve(&mut self, name: &str) -> Result<Vec<Ipv4Addr>, String> {
        if let Some(known) = self.names.get(name) {
            return known.clone();
        }
        let deadline = *self.deadline.get_or_insert_with(|| Deadline::after(RESOLVE_TIMEOUT));
        let found = match crate::net::resolve(name, 0, deadline) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(format!(
                "no answer within {} s (all lookups of the file together)",
                RESOLVE_TIMEOUT.as_secs()
            )),
            Err(e) => Err(e.to_string()),
            Ok(addrs) => {
                let mut v4: Vec<Ipv4Addr> = Vec::new();
                for a in addrs {
                    if let IpAddr::V4(ip) = a.ip() {
                        if !v4.contains(&ip) {
                            v4.push(ip);
                        }
                    }
                }
                if v4.is_empty() {
                    Err("it has no IPv4 address".into())
                } else {
                    Ok(v4)
                }
            }
        };
        self.names.insert(name.to_string(), found.clone());
        found
    }
}

/// Fixed answers, for tests and fuzzing: files by path and hosts by name;
/// anything else is not found.
#[derive(Debug, Clone, Default)]
pub struct Fixed {
    pub files: HashMap<PathBuf, Vec<u8>>,
    pub hosts: HashMap<String, Vec<Ipv4Addr>>,
}

impl Fixed {
    pub fn file(mut self, path: &str, text: &str) -> Fixed {
        self.files.insert(PathBuf::from(path), text.as_bytes().to_vec());
        self
    }

    pub fn host(mut self, name: &str, addrs: &[Ipv4Addr]) -> Fixed {
        self.hosts.insert(name.to_string(), addrs.to_vec());
        self
    }
}

impl Lookups for Fixed {
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn resolve(&mut self, name: &str) -> Result<Vec<Ipv4Addr>, String> {
        self.hosts.get(name).cloned().ok_or_else(|| "unknown host".to_string())
    }
}

/// Reads a whole file of at most [`MAX_FILE_LEN`] bytes, when `trust`
/// believes it.
pub(crate) fn read_capped(path: &Path, trust: &Trust) -> io::Result<Vec<u8>> {
    trust.read(path, MAX_FILE_LEN)
}

/// The rules file `path`, opened and believed: `None` when it is absent
/// and was not `named` (the built-in policy applies).
fn open_text(
    path: &Path,
    named: bool,
    trust: &Trust,
) -> Result<Option<(std::fs::File, std::fs::Metadata)>, Vec<Error>> {
    match trust.open(path) {
        Ok(opened) => Ok(Some(opened)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !named => Ok(None),
        Err(e) => Err(vec![Error {
            file: path.display().to_string(),
            line: None,
            message: trust::describe(&e),
        }]),
    }
}

/// Reads and parses the opened rules file `path`, with the notes
/// `--check-config` prints when `noted` (a connection makes none).
fn parse_text(path: &Path, file: std::fs::File, meta: &std::fs::Metadata, trust: &Trust, noted: bool) -> Checked {
    let name = path.display().to_string();
    match trust::read_capped(&file, meta.len(), MAX_FILE_LEN) {
        Ok(text) => {
            let mut system = System::new(trust);
            let mut checked = grammar::read(&text, &name, Services::system(trust), &mut system, noted);
            if let Ok(rules) = &mut checked.loaded {
                rules.files = system.read;
            }
            checked
        }
        Err(e) => Checked {
            loaded: Err(vec![Error {
                file: name,
                line: None,
                message: trust::describe(&e),
            }]),
            notes: Vec::new(),
        },
    }
}

/// The error of a file that a frozen file made the rules depend on and
/// that is not believed: the frozen file, or a file it names.
fn untrusted(file: &Path, why: String) -> Error {
    Error {
        file: file.display().to_string(),
        line: None,
        message: why,
    }
}

/// Reads and parses `path`, or reads its frozen file instead when that is
/// there and current ([`frozen`]). When the file is absent and was not
/// `named` on the command line, the built-in policy applies. A named file
/// that is missing, any file that cannot be read or parsed, and any file
/// involved that `trust` does not believe, is an error.
pub fn load(path: &Path, named: bool, trust: &Trust) -> Loaded {
    let (file, meta) = match open_text(path, named, trust)? {
        Some(opened) => opened,
        None => return Ok(Rules::builtin(Services::system(trust))),
    };
    match frozen::open(path, &meta, trust) {
        Ok(opened) => Ok(Rules {
            origin: Origin::File(path.display().to_string()),
            rules: Vec::new(),
            no_identd: opened.no_identd,
            bad_id: opened.bad_id,
            services: Services::system(trust),
            frozen: Some(opened.frozen),
            frozen_unused: None,
            files: opened.files,
        }),
        Err(frozen::Unused::Untrusted(file, why)) => Err(vec![untrusted(&file, why)]),
        Err(unused) => {
            let mut loaded = parse_text(path, file, &meta, trust, false).loaded;
            if let (Ok(rules), frozen::Unused::Stale(why)) = (&mut loaded, unused) {
                rules.frozen_unused = Some(why);
            }
            loaded
        }
    }
}

/// What `--check-config` says about the frozen file of `path`, if there
/// is one: current, or why a connection would not use it.
pub fn frozen_status(path: &Path, trust: &Trust) -> Option<String> {
    let (file, meta) = trust.open(path).ok()?;
    let text = trust::read_capped(&file, meta.len(), MAX_FILE_LEN).ok()?;
    frozen::status(path, &meta, &text, trust)
}

/// Writes the frozen file of rules file `path` (`--check-config
/// --compile`): parsed again here, with every file it names recorded.
/// Returns the frozen file's path and its number of rules, or why none
/// was written.
pub fn freeze(path: &Path, trust: &Trust) -> Result<(PathBuf, usize), String> {
    frozen::write(path, trust, |text, lookups| {
        let file = path.display().to_string();
        check(text, &file, Services::system(trust), lookups)
    })
}

/// As [`load`], with the notes `--check-config` prints: the text is
/// always parsed, and a frozen file that is there must be believed, as
/// [`load`] asks.
pub fn load_checked(path: &Path, named: bool, trust: &Trust) -> Checked {
    let (file, meta) = match open_text(path, named, trust) {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            return Checked {
                loaded: Ok(Rules::builtin(Services::system(trust))),
                notes: Vec::new(),
            }
        }
        Err(errors) => {
            return Checked {
                loaded: Err(errors),
                notes: Vec::new(),
            }
        }
    };
    let mut checked = parse_text(path, file, &meta, trust, true);
    if let Err(frozen::Unused::Untrusted(file, why)) = frozen::believed(path, &meta, trust) {
        let e = untrusted(&file, why);
        match &mut checked.loaded {
            Ok(_) => checked.loaded = Err(vec![e]),
            Err(errors) => errors.push(e),
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_from_options() {
        let n = Net::parse("127.0.0.9").unwrap();
        assert!(n.contains("127.0.0.9".parse().unwrap()) && !n.contains("127.0.0.8".parse().unwrap()));
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.200.0.1".parse().unwrap()) && !n.contains("::1".parse().unwrap()));
        assert!(Net::parse("::/0").unwrap().contains("2001:db8::1".parse().unwrap()));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains("192.0.2.1".parse().unwrap()));
        assert!(Net::parse("10.0.0.0/33").unwrap_err().contains("/33"));
        assert!(Net::parse("10.0.0.0/+8").is_err());
        assert!(Net::parse("host/8").unwrap_err().contains("host"));
        assert_eq!(
            Net::with_mask("10.1.0.0".parse().unwrap(), "255.255.0.0".parse().unwrap()),
            Some(Net::V4 {
                addr: 0x0a01_0000,
                mask: 0xffff_0000
            })
        );
        assert_eq!(
            Net::with_mask("10.1.0.0".parse().unwrap(), "ffff::".parse().unwrap()),
            None
        );
    }

    #[test]
    fn builtin_policy() {
        let r = Rules::builtin(Services::parse(b""));
        let check = |src: &str| {
            let d = decide(
                &r,
                &Facts {
                    user: b"u",
                    src: src.parse().unwrap(),
                    dst: "1.1.1.1".parse().unwrap(),
                    port: 1,
                },
            );
            (d.rule.map_or(0, |r| r.line), d.permit(), d.label())
        };
        assert_eq!(check("127.0.0.1"), (0, true, "builtin".into()));
        assert_eq!(check("127.9.9.9"), (0, true, "builtin".into()));
        assert_eq!(check("::1"), (0, true, "builtin".into()));
        assert_eq!(check("10.0.0.1"), (0, false, "builtin".into()));
    }

    #[test]
    fn system_lookups_resolve_localhost_once_and_refuse_unknown_names() {
        let mut s = System::new(&Trust::default());
        assert_eq!(s.resolve("localhost"), Ok(vec![Ipv4Addr::LOCALHOST]));
        assert_eq!(s.names.len(), 1);
        assert_eq!(s.resolve("localhost"), Ok(vec![Ipv4Addr::LOCALHOST]));
        assert!(s.resolve("no-such-host.invalid").is_err());
    }

    #[test]
    fn fixed_lookups_answer_only_what_they_hold() {
        let mut f = Fixed::default()
            .file("/u", "alice")
            .host("gw", &[Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(f.read(Path::new("/u")).unwrap(), b"alice");
        assert_eq!(f.read(Path::new("/v")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(f.resolve("gw"), Ok(vec![Ipv4Addr::new(10, 0, 0, 1)]));
        assert!(f.resolve("other").is_err());
    }

    #[test]
    fn empty_hook_runs_nothing() {
        let h = Hook {
            line: 3,
            command: Vec::new(),
        };
        assert_eq!(h.command(), None);
        let h = Hook {
            line: 3,
            command: b"logger x".to_vec(),
        };
        assert_eq!(h.command(), Some(&b"logger x"[..]));
    }
}
