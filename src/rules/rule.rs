//! What a rules file is made of, and how one rule matches a request.
//! Pure.

use std::fmt;
use std::net::IpAddr;

use crate::addr::Net;
use crate::ident::Mode;

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
    /// Every operator, in the order of their declaration.
    pub const ALL: [PortOp; 6] = [PortOp::Eq, PortOp::Neq, PortOp::Lt, PortOp::Gt, PortOp::Le, PortOp::Ge];

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
    /// `None`: any destination (or a name, `domain`).
    pub dst: Option<Vec<Net>>,
    /// `.example.com` as the destination: the SOCKS4a names in that
    /// domain, as [`crate::addr::name_of`] writes them, without the dot.
    pub domain: Option<String>,
    pub port: Option<(PortOp, u16)>,
    /// `: shell_cmd`, run when this line decides a request.
    pub command: Option<Vec<u8>>,
}

impl Rule {
    /// Line `line`, `text`: `action` for clients in `src`, whatever else
    /// the request says.
    pub fn plain(line: usize, text: &str, action: Action, src: Vec<Net>) -> Rule {
        Rule {
            line,
            text: text.into(),
            action,
            ident: None,
            users: None,
            src,
            dst: None,
            domain: None,
            port: None,
            command: None,
        }
    }
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

/// What a request is decided on.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The USERID the client claimed.
    pub user: &'a [u8],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub port: u16,
    /// The SOCKS4a name as sent ([`crate::addr::name_of`]); `None` when
    /// the request carries only an address.
    pub name: Option<&'a str>,
}

/// What is known of a request before all of it is: its source, then its
/// user-id, port and name once the request is read. Its destination
/// address is not known yet (not read, or a SOCKS4a name not looked up).
#[derive(Debug, Clone, Copy)]
pub struct Partial<'a> {
    pub src: IpAddr,
    pub user: Option<&'a [u8]>,
    pub port: Option<u16>,
    /// `None` until the request is read; then the name as in
    /// [`Facts::name`].
    pub name: Option<Option<&'a str>>,
}

/// How far a line can match a [`Partial`], least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// It cannot match.
    Never,
    /// It matches some requests of these facts, depending on what is not
    /// known yet.
    Maybe,
    /// It matches every request of these facts.
    Surely,
}

/// The conditions of one line, however it is held: parsed from the text
/// ([`Rule`]) or a frozen file's record. Matching, the first-match loop
/// ([`first_match`]) and the early refusal ([`denied`]) are written once,
/// over these.
pub trait Conditions {
    fn permits(&self) -> bool;
    fn runs_command(&self) -> bool;
    /// Whether one of the source nets holds `ip`.
    fn src_holds(&self, ip: IpAddr) -> bool;
    /// Whether one of the destination nets holds `ip`; `None` when the
    /// line has no destination (every one matches).
    fn dst_holds(&self, ip: IpAddr) -> Option<bool>;
    fn has_dst(&self) -> bool;
    /// Whether the destination nets hold every address of both families
    /// (`0/0`): a line that any address matches, whatever a name
    /// resolves to.
    fn dst_covers_every(&self) -> bool;
    fn port_test(&self) -> Option<(PortOp, u16)>;
    /// Whether the `*=` list holds `user`; `None` when the line has none
    /// (every user-id matches).
    fn users_hold(&self, user: &[u8]) -> Option<bool>;
    fn has_users(&self) -> bool;
    /// The domain of a `.example.com` destination, if the line has one.
    fn domain(&self) -> Option<&str>;

    /// Whether the line's domain holds the request's name; `None` when
    /// the line names no domain. A request that carries only an address
    /// (`name` `None`) could be going anywhere: a `deny` by name refuses
    /// it, a `permit` by name does not let it through.
    fn domain_holds(&self, name: Option<&str>) -> Option<bool> {
        let domain = self.domain()?;
        Some(match name {
            Some(name) => crate::addr::in_domain(name, domain),
            None => !self.permits(),
        })
    }

    /// Whether every condition of this line holds for `f`: source,
    /// destination (address or name), port test and user list.
    fn matches(&self, f: &Facts) -> bool {
        self.src_holds(f.src)
            && self.dst_holds(f.dst) != Some(false)
            && self.domain_holds(f.name) != Some(false)
            && self.port_test().is_none_or(|(op, p)| op.holds(f.port, p))
            && self.users_hold(f.user) != Some(false)
    }

    /// How far this line can match a request of which `p` is known.
    fn reach(&self, p: &Partial) -> Reach {
        if !self.src_holds(p.src) {
            return Reach::Never;
        }
        let known = |holds: Option<bool>| {
            if holds == Some(false) {
                Reach::Never
            } else {
                Reach::Surely
            }
        };
        let unknown = |has: bool| if has { Reach::Maybe } else { Reach::Surely };
        let users = p.user.map_or(unknown(self.has_users()), |u| known(self.users_hold(u)));
        let test = self.port_test();
        let port = p.port.map_or(unknown(test.is_some()), |port| {
            known(test.map(|(op, against)| op.holds(port, against)))
        });
        let name = p
            .name
            .map_or(unknown(self.domain().is_some()), |name| known(self.domain_holds(name)));
        users
            .min(port)
            .min(name)
            .min(unknown(self.has_dst() && !self.dst_covers_every()))
    }
}

impl Conditions for &Rule {
    fn permits(&self) -> bool {
        self.action == Action::Permit
    }
    fn runs_command(&self) -> bool {
        self.command.is_some()
    }
    fn src_holds(&self, ip: IpAddr) -> bool {
        self.src.iter().any(|n| n.contains(ip))
    }
    fn dst_holds(&self, ip: IpAddr) -> Option<bool> {
        self.dst.as_ref().map(|d| d.iter().any(|n| n.contains(ip)))
    }
    fn has_dst(&self) -> bool {
        self.dst.is_some()
    }
    fn dst_covers_every(&self) -> bool {
        self.dst.as_ref().is_some_and(|d| {
            d.iter().any(|n| matches!(n, Net::V4 { mask: 0, .. }))
                && d.iter().any(|n| matches!(n, Net::V6 { mask: 0, .. }))
        })
    }
    fn port_test(&self) -> Option<(PortOp, u16)> {
        self.port
    }
    fn users_hold(&self, user: &[u8]) -> Option<bool> {
        self.users.as_ref().map(|list| list.iter().any(|u| u == user))
    }
    fn has_users(&self) -> bool {
        self.users.is_some()
    }
    fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }
}

/// The first of `lines` that matches `f`: its index.
pub fn first_match<C: Conditions>(lines: impl IntoIterator<Item = C>, f: &Facts) -> Option<usize> {
    lines.into_iter().position(|l| l.matches(f))
}

/// The line that decides every request of which `p` is known, whatever
/// is not known yet: `Some` with its index (`None`: no line matches them),
/// when each line before it surely does not match; `None` when what is
/// not known (a destination address, say) could change which line
/// decides.
pub fn settled<C: Conditions>(lines: impl IntoIterator<Item = C>, p: &Partial) -> Option<Option<usize>> {
    for (i, line) in lines.into_iter().enumerate() {
        match line.reach(p) {
            Reach::Never => continue,
            Reach::Maybe => return None,
            Reach::Surely => return Some(Some(i)),
        }
    }
    Some(None)
}

/// Whether every request of which `p` is known is denied by the first-match
/// loop over `lines`: `Some` with the index of the line that denies them
/// all (`None`: no line matches them), when no line that may decide one
/// could permit it or runs a command (which needs the whole request).
pub fn denied<C: Conditions>(lines: impl IntoIterator<Item = C>, p: &Partial) -> Option<Option<usize>> {
    for (i, line) in lines.into_iter().enumerate() {
        match line.reach(p) {
            Reach::Never => continue,
            _ if line.permits() || line.runs_command() => return None,
            Reach::Surely => return Some(Some(i)),
            Reach::Maybe => continue,
        }
    }
    Some(None)
}
