//! The grammar of a rules file: its text to [`Rules`], pure.
//!
//! Lines in the classic grammar mean what they meant to CSTC sockd,
//! including the legacy forms sockd accepted (host names and `inet_addr`
//! forms in address fields, `?=` with more than one letter, an empty
//! `*=`, a port such as `23abc`, an empty command, `::` before the
//! command, fields after a complete rule). Each such line gets a [`Note`]
//! saying what sockd did with it, what socks4d does and how to write it
//! today. Legacy meanings that would open the proxy or quietly narrow a
//! rule (an address or mask sockd could not read, which it took for
//! 255.255.255.255) are errors. Lines that use the extensions (CIDR,
//! IPv6) had no meaning to sockd, and get none of the leniency.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::lex::{self, trim};
use super::lookups::{Lookups, RESOLVE_TIMEOUT};
use super::note::{LineNotes, Note, NoteKind};
use super::rule::{Action, Error, Hook, PortOp, Rule};
use super::services::Services;
use super::{classic, users};
use crate::addr::{is_host_name, Net};
use crate::ident::Mode;
use crate::text::{self, show};

/// The longest rules-file line, without its newline.
pub const MAX_LINE_LEN: usize = 1023;

/// A rules file's text, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub rules: Vec<Rule>,
    /// The first `#NO_IDENTD:` line: run when the client host's identd
    /// gives no USERID answer.
    pub no_identd: Option<Hook>,
    /// The first `#BAD_ID:` line: run when the identd names another user
    /// than the one claimed.
    pub bad_id: Option<Hook>,
}

/// Parses the text of rules file `file`: every line is checked, and every
/// error returned. With `noted`, each line that CSTC sockd read otherwise
/// or that uses a legacy form gets a note (`--check-config`,
/// `--compile`); without, none is made (a connection's parse).
pub fn read(
    text: &[u8],
    file: &str,
    services: &Services,
    lookups: &mut dyn Lookups,
    noted: bool,
) -> (Result<Parsed, Vec<Error>>, Vec<Note>) {
    let mut parsed = Parsed::default();
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    // The fields of a line, reused from line to line.
    let mut tokens = Vec::new();
    for (n, raw) in text::lines(text) {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut found = LineNotes::new(noted);
        found.add_from(|| classic::line_notes(raw));
        match parse_line(line, n, services, lookups, &mut found, &mut tokens) {
            Ok(Item::Nothing) => {}
            Ok(Item::Rule(r, is_classic)) => {
                if is_classic {
                    found.add_from(|| classic::field_notes(raw));
                }
                parsed.rules.push(*r);
            }
            // As in the classic server, the first hook line of each kind is
            // the one that runs.
            Ok(Item::NoIdentd(h)) => {
                parsed.no_identd.get_or_insert(h);
            }
            Ok(Item::BadId(h)) => {
                parsed.bad_id.get_or_insert(h);
            }
            Err(message) => errors.push(Error {
                file: file.into(),
                line: Some(n),
                message,
            }),
        }
        notes.extend(found.of(file, n));
    }
    if noted {
        notes.extend(family_notes(&parsed.rules).into_iter().map(|(line, message)| Note {
            file: file.into(),
            line,
            kind: NoteKind::OneFamily,
            message,
        }));
    }
    (if errors.is_empty() { Ok(parsed) } else { Err(errors) }, notes)
}

/// Which address families a rule's nets cover, as (IPv4, IPv6); no nets
/// (a destination left out) covers both.
fn families(nets: Option<&[Net]>) -> (bool, bool) {
    match nets {
        None => (true, true),
        Some(n) => (n.iter().any(Net::is_ipv4), n.iter().any(|n| !n.is_ipv4())),
    }
}

/// The name of one family, as (IPv4, IPv6) covers it.
fn family_name(v4: bool) -> &'static str {
    if v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Warnings on deny lines that leave the other address family open to a
/// later permit line: a destination in one family (a SOCKS4a name can
/// lead to the other), or every client of one family (the other
/// family's clients are not denied).
fn family_notes(rules: &[Rule]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, deny) in rules.iter().enumerate() {
        if deny.action != Action::Deny {
            continue;
        }
        let (s4, s6) = families(Some(&deny.src));
        let (d4, d6) = families(deny.dst.as_deref());
        let permits = || rules[i + 1..].iter().filter(|p| p.action == Action::Permit);
        // Another deny line for the same users and ports that covers the
        // other family makes the pair whole.
        let partner = |covers: &dyn Fn(&Rule) -> bool| {
            rules
                .iter()
                .any(|o| o.action == Action::Deny && o.port == deny.port && o.users == deny.users && covers(o))
        };
        let dst_paired = partner(&|o: &Rule| {
            let ((o4, o6), (e4, e6)) = (families(Some(&o.src)), families(o.dst.as_deref()));
            ((o4 && s4) || (o6 && s6)) && if d4 { e6 } else { e4 }
        });
        if d4 != d6 && !dst_paired {
            let open = permits().find(|p| {
                let ((p4, p6), (q4, q6)) = (families(Some(&p.src)), families(p.dst.as_deref()));
                ((p4 && s4) || (p6 && s6)) && if d4 { q6 } else { q4 }
            });
            if let Some(p) = open {
                let (one, other) = (family_name(d4), family_name(!d4));
                out.push((
                    deny.line,
                    format!(
                        "this line denies {one} destinations only, and line {} permits {other} destinations to \
                         clients it covers: a SOCKS4a name can lead to the {other} address of the same host \
                         (::1 for 127.0.0.1); deny the {other} addresses too, or write 0/0 for every \
                         destination of both families",
                        p.line
                    ),
                ));
            }
        }
        let whole_family = deny
            .src
            .iter()
            .all(|n| matches!(n, Net::V4 { mask: 0, .. } | Net::V6 { mask: 0, .. }));
        let src_paired = partner(&|o: &Rule| {
            let (e4, e6) = families(o.dst.as_deref());
            let whole = |n: &Net| matches!(n, Net::V4 { mask: 0, .. } | Net::V6 { mask: 0, .. });
            o.src.iter().any(|n| whole(n) && n.is_ipv4() != s4) && ((e4 && d4) || (e6 && d6))
        });
        if s4 != s6 && whole_family && !src_paired {
            let open = permits().find(|p| {
                let ((p4, p6), (q4, q6)) = (families(Some(&p.src)), families(p.dst.as_deref()));
                (if s4 { p6 } else { p4 }) && ((q4 && d4) || (q6 && d6))
            });
            if let Some(p) = open {
                let (one, other) = (family_name(s4), family_name(!s4));
                out.push((
                    deny.line,
                    format!(
                        "this line denies {one} clients only, and line {} permits {other} clients: they are \
                         not denied what this line denies; write 0/0 as the source to deny every client",
                        p.line
                    ),
                ));
            }
        }
    }
    out
}

enum Item {
    Nothing,
    /// A rule, and whether it is written in the classic grammar (no CIDR,
    /// no IPv6).
    Rule(Box<Rule>, bool),
    NoIdentd(Hook),
    BadId(Hook),
}

const NO_IDENTD: &[u8] = b"#NO_IDENTD:";
const BAD_ID: &[u8] = b"#BAD_ID:";

fn parse_line<'t>(
    line: &'t [u8],
    n: usize,
    services: &Services,
    lookups: &mut dyn Lookups,
    notes: &mut LineNotes,
    tokens: &mut Vec<&'t [u8]>,
) -> Result<Item, String> {
    if line.len() > MAX_LINE_LEN {
        return Err(format!(
            "line longer than {MAX_LINE_LEN} bytes (CSTC sockd cut such a line into pieces of {} bytes \
             and read each piece as a line of its own; shorten it)",
            classic::SOCKD_PIECE_LEN
        ));
    }
    if line.contains(&0) {
        return Err("NUL byte in line".into());
    }
    for (prefix, make) in [(NO_IDENTD, Item::NoIdentd as fn(Hook) -> Item), (BAD_ID, Item::BadId)] {
        if let Some(cmd) = line.strip_prefix(prefix) {
            let command = trim(cmd);
            let name = String::from_utf8_lossy(prefix);
            if command.is_empty() {
                notes.add(NoteKind::EmptyHook, || {
                    format!(
                        "{name} with no command: CSTC sockd ran an empty command for it and socks4d runs none; \
                         being the first {name} line it still hides any later one, as in sockd; delete it"
                    )
                });
            } else if command.starts_with(b":") {
                notes.add(NoteKind::DoubleColon, || double_colon(command));
            }
            return Ok(make(Hook {
                line: n,
                command: command.to_vec(),
            }));
        }
    }

    let (body, command) = split_command(line);
    let command = match command.map(trim) {
        Some([]) => {
            notes.add(NoteKind::EmptyCommand, || {
                "':' with no command after it: CSTC sockd ran an empty command and socks4d runs none; \
                 delete the ':'"
                    .into()
            });
            None
        }
        Some(c) => {
            if c.starts_with(b":") {
                notes.add(NoteKind::DoubleColon, || double_colon(c));
            }
            Some(c.to_vec())
        }
        None => None,
    };
    tokens.clear();
    tokens.extend(lex::fields(body).map(|(_, t)| t));
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
        ident = Some(match flag.first() {
            Some(b'I') => Mode::Required,
            Some(b'i') => Mode::Optional,
            Some(b'n') | None => Mode::Off,
            Some(_) => return Err(format!("unknown ident flag ?={} (?=I, ?=i or ?=n)", show(flag))),
        });
        if flag.len() > 1 {
            let one = flag[0] as char;
            notes.add(NoteKind::IdentLetters, || {
                format!(
                    "?={}: CSTC sockd read only the first letter after ?=, and so does socks4d; write ?={one}",
                    String::from_utf8_lossy(flag)
                )
            });
        }
        rest = &rest[1..];
    }
    let mut users = None;
    if let Some(list) = rest.first().and_then(|t| t.strip_prefix(b"*=")) {
        if list.is_empty() {
            notes.add(NoteKind::EmptyUsers, || {
                "empty *=: CSTC sockd matched every user-id, and so does socks4d; leave the field out".into()
            });
        } else {
            users = Some(users::parse_list(list, lookups)?);
        }
        rest = &rest[1..];
    }

    let fields = rest;
    let mut at = 0;
    let mut modern = false;
    if fields.is_empty() {
        return Err("no source address".into());
    }
    let src = net(fields, &mut at, "source", lookups, notes, &mut modern)?;
    let (mut dst, mut domain) = (None, None);
    if let Some(&t) = fields.get(at) {
        if let Some(name) = t.strip_prefix(b".") {
            domain = Some(domain_field(name)?);
            notes.add(NoteKind::ByName, || by_name(action));
            (at, modern) = (at + 1, true);
        // As in sockd, a destination needs both its fields; a lone field
        // here is left over (below).
        } else if PortOp::from_token(t).is_none() && (t.contains(&b'/') || fields.len() > at + 1 || modern) {
            dst = Some(net(fields, &mut at, "destination", lookups, notes, &mut modern)?);
        }
    }
    let mut port = None;
    if let Some(&t) = fields.get(at) {
        match (PortOp::from_token(t), fields.get(at + 1)) {
            (Some(op), Some(p)) => {
                port = Some((op, rule_port(p, services, notes)?));
                at += 2;
            }
            (Some(_), None) if modern => return Err("no port after the comparison".into()),
            (None, Some(_)) if dst.is_some() || domain.is_some() => {
                return Err(format!("expected eq, neq, lt, gt, le or ge, not {}", show(t)))
            }
            _ => {}
        }
    }
    if let Some(&extra) = fields.get(at) {
        if modern {
            return Err(format!("unexpected {} after the rule", show(extra)));
        }
        notes.add(NoteKind::ExtraFields, || extra_fields(&fields[at..], dst.is_some()));
    }
    Ok(Item::Rule(
        Box::new(Rule {
            line: n,
            text: match std::str::from_utf8(trim(line)) {
                Ok(t) => t.to_string(),
                Err(_) => String::from_utf8_lossy(trim(line)).into_owned(),
            },
            action,
            ident,
            users,
            src,
            dst,
            domain,
            port,
            command,
        }),
        !modern,
    ))
}

/// A `.example.com` destination without its dot: the domain, in the form
/// names are matched in (lower case, no trailing dot).
fn domain_field(name: &[u8]) -> Result<String, String> {
    let as_name = |n: &[u8]| crate::addr::name_of(n);
    as_name(name).ok_or_else(|| format!("destination {} is not a domain name", show(&[b".", name].concat())))
}

/// What a line that decides by name cannot promise.
fn by_name(action: Action) -> String {
    match action {
        Action::Deny => "this line denies by the name a SOCKS4a client sends: a request that carries only an \
                         address (SOCKS4, or an address written as the name) is denied by it too, since socks4d \
                         cannot tell where it goes; but a client that sends another name for the same host is not: \
                         deny the host's addresses as well"
            .into(),
        Action::Permit => "this line permits by the name a SOCKS4a client sends, to whatever address that name \
                           resolves to: deny the addresses the proxy must not reach on lines before it"
            .into(),
    }
}

fn double_colon(command: &[u8]) -> String {
    let rest = String::from_utf8_lossy(trim(&command[1..]));
    format!(
        "the command begins with ':' (\"::\" before it): CSTC sockd, like socks4d, took everything after \
             the first ':' as the command, so the shell runs \"{}\", its no-op ':', and \"{rest}\" never runs; \
             write one ':' to run it",
        String::from_utf8_lossy(command)
    )
}

fn extra_fields(extra: &[&[u8]], has_dst: bool) -> String {
    let text = extra
        .iter()
        .map(|t| String::from_utf8_lossy(t))
        .collect::<Vec<_>>()
        .join(" ");
    match extra {
        [op] if PortOp::from_token(op).is_some() => format!(
            "{text:?} with no port after it: CSTC sockd ignored it, so this rule matches every port, and so \
             does socks4d; complete the port test or delete {text:?}"
        ),
        [_] if !has_dst => format!(
            "{text:?} alone where a destination address and mask would go: CSTC sockd ignored it, so this rule \
             applies to every destination, and so does socks4d; add the mask ({text} 255.255.255.255) or delete it"
        ),
        _ => format!("{text:?} after a complete rule: CSTC sockd ignored it, and so does socks4d; delete it"),
    }
}

/// Splits a rule line at the `:` that starts its command, and drops a `#`
/// comment. As in the classic server, whichever of the two comes first
/// counts. A `:` within an IPv6 address in an address field (before any
/// port operator) starts nothing, unless the address begins with `:` and
/// has no `/prefix`: so `::` before a command, and `23::cmd` after a port,
/// mean what they meant to sockd.
fn split_command(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut after_op = false;
    for (start, token) in lex::fields(line) {
        match token.iter().position(|&b| b == b'#' || b == b':') {
            None => {}
            Some(p) if token[p] == b'#' => return (&line[..start + p], None),
            Some(_) if !after_op && is_ipv6_token(token) && (token[0] != b':' || token.contains(&b'/')) => {}
            Some(p) => return (&line[..start + p], Some(&line[start + p + 1..])),
        }
        after_op |= PortOp::from_token(token).is_some();
    }
    (line, None)
}

fn is_ipv6_token(t: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(t) else { return false };
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse::<Ipv6Addr>().is_ok()
}

/// An address field at `fields[*at]`: `addr/prefix` (one field), or
/// `addr mask` (two). Advances `at` past what it used; sets `modern` for
/// CIDR and IPv6.
fn net(
    fields: &[&[u8]],
    at: &mut usize,
    what: &str,
    lookups: &mut dyn Lookups,
    notes: &mut LineNotes,
    modern: &mut bool,
) -> Result<Vec<Net>, String> {
    let t = fields.get(*at).ok_or_else(|| format!("no {what} address"))?;
    let s = std::str::from_utf8(t).map_err(|_| format!("{what} address {} is not an IP address", show(t)))?;
    *at += 1;
    if s == ANY_FAMILY {
        *modern = true;
        return Ok(vec![Net::ANY_V4, Net::ANY_V6]);
    }
    let nets = net_of(s, fields, at, what, lookups, notes, modern)?;
    Ok(nets.into_iter().map(|n| canonical_net(n, s, what, notes)).collect())
}

/// The field that matches every address of both families (as in Dante).
pub const ANY_FAMILY: &str = "0/0";

/// `n` as the rules match it: a net of IPv4-mapped addresses is the IPv4
/// net, noted; a destination net of NAT64 addresses, which never matches,
/// noted.
fn canonical_net(n: Net, field: &str, what: &str, notes: &mut LineNotes) -> Net {
    let v4 = n.unmapped();
    if let (Net::V6 { .. }, Net::V4 { addr, mask }) = (n, v4) {
        notes.add(NoteKind::Mapped, || {
            format!(
                "{what} {field} is written as IPv4-mapped IPv6 addresses; socks4d matches such addresses \
                 as IPv4, so this is {}; write that",
                show_v4_net(addr, mask)
            )
        });
    }
    if what == "destination" && n.is_nat64() {
        notes.add(NoteKind::Nat64, || {
            format!(
                "destination {field} is within the NAT64 prefix 64:ff9b::/96, whose addresses the rules \
                 judge as the IPv4 addresses they embed: this net matches no destination; write the IPv4 \
                 net instead"
            )
        });
    }
    v4
}

fn show_v4_net(addr: u32, mask: u32) -> String {
    let a = Ipv4Addr::from(addr);
    if mask.leading_ones() + mask.trailing_zeros() == 32 {
        format!("{a}/{}", mask.leading_ones())
    } else {
        format!("{a} {}", Ipv4Addr::from(mask))
    }
}

/// [`net`]'s field as written, before canonical forms.
fn net_of(
    s: &str,
    fields: &[&[u8]],
    at: &mut usize,
    what: &str,
    lookups: &mut dyn Lookups,
    notes: &mut LineNotes,
    modern: &mut bool,
) -> Result<Vec<Net>, String> {
    if let Some((a, prefix)) = s.split_once('/') {
        *modern = true;
        let ip = a
            .parse::<Ipv4Addr>()
            .map(std::net::IpAddr::V4)
            .or_else(|_| a.parse::<Ipv6Addr>().map(std::net::IpAddr::V6))
            .map_err(|_| format!("{what} {} is not an IP address", show(a.as_bytes())))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u32 = match prefix.parse() {
            Ok(b) if b <= max && prefix.bytes().all(|c| c.is_ascii_digit()) => b,
            _ => return Err(format!("{what} prefix /{prefix} is not a number from 0 to {max}")),
        };
        return Ok(vec![Net::prefix(ip, bits)]);
    }
    let addr = address(s, what, lookups, notes)?;
    let m = fields
        .get(*at)
        .ok_or_else(|| format!("no mask after {what} address {s}"))?;
    *at += 1;
    let m = std::str::from_utf8(m).map_err(|_| format!("{what} mask {} is not an IP address", show(m)))?;
    match addr {
        Addr::V4(addrs) => {
            let mask = v4_mask(s, m, what, notes)?;
            Ok(addrs
                .into_iter()
                .map(|a| Net::V4 {
                    addr: a.into(),
                    mask: mask.into(),
                })
                .collect())
        }
        Addr::V6(a) => {
            *modern = true;
            let mask = m.parse::<Ipv6Addr>().map_err(|_| match classic_v4(m) {
                Some(_) => format!("{what} address {s} and mask {m} are not of one family"),
                None => format!("{what} mask {} is not an IP address", show(m.as_bytes())),
            })?;
            Ok(vec![Net::V6 {
                addr: a.into(),
                mask: mask.into(),
            }])
        }
    }
}

enum Addr {
    /// One address, or every IPv4 address of a host name.
    V4(Vec<Ipv4Addr>),
    V6(Ipv6Addr),
}

/// An address field of the `addr mask` form: a dotted quad, an
/// `inet_addr` form, an IPv6 address, or a host name.
fn address(s: &str, what: &str, lookups: &mut dyn Lookups, notes: &mut LineNotes) -> Result<Addr, String> {
    if let Some(ip) = classic_v4_noted(s, what, "address", notes) {
        return Ok(Addr::V4(vec![ip]));
    }
    if let Ok(ip) = s.parse::<Ipv6Addr>() {
        return Ok(Addr::V6(ip));
    }
    if !is_host_name(s) {
        return Err(format!(
            "{what} address {} is neither an IP address nor a host name (CSTC sockd took such a field for \
             255.255.255.255; socks4d refuses it)",
            show(s.as_bytes())
        ));
    }
    let addrs = lookups.resolve(s).map_err(|why| {
        format!(
            "{what} address {s}: the host name does not resolve ({why}); CSTC sockd then used 255.255.255.255, \
             socks4d refuses the file (no service) until the name resolves or the address is written"
        )
    })?;
    notes.add(NoteKind::HostName, || {
        let list = addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        let mut message = format!(
            "host name {s} in the {what} address: CSTC sockd looked it up for every request; socks4d looks it \
             up each time it reads the file (within {} s for all names; a name that does not resolve means no \
             service) and matches {list}",
            RESOLVE_TIMEOUT.as_secs()
        );
        if addrs.len() > 1 {
            message.push_str(" (CSTC sockd took only the first address its resolver returned; socks4d matches any)");
        }
        message.push_str(&format!("; write {} to avoid the lookup", addrs[0]));
        message
    });
    Ok(Addr::V4(addrs))
}

/// The mask of an IPv4 `addr mask` pair: a dotted quad or an `inet_addr`
/// form. A mask sockd could not read became 255.255.255.255 there, a
/// single host: refused.
fn v4_mask(addr: &str, m: &str, what: &str, notes: &mut LineNotes) -> Result<Ipv4Addr, String> {
    if let Some(mask) = classic_v4_noted(m, what, "mask", notes) {
        return Ok(mask);
    }
    if m.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("{what} address {addr} and mask {m} are not of one family"));
    }
    Err(format!(
        "{what} mask {} is not a dotted-quad mask (CSTC sockd took such a field for 255.255.255.255, \
         a single host; socks4d refuses it)",
        show(m.as_bytes())
    ))
}

/// A dotted quad, or an `inet_addr` form with a note naming the dotted
/// quad it stands for.
fn classic_v4_noted(s: &str, what: &str, field: &str, notes: &mut LineNotes) -> Option<Ipv4Addr> {
    if let Some(ip) = dotted_quad(s.as_bytes()) {
        return Some(ip);
    }
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Some(ip);
    }
    let ip = inet_aton(s)?;
    notes.add(
        NoteKind::InetAton,
        || format!(
            "{what} {field} {s} is inet_addr's way of writing {ip}: CSTC sockd read it so, and so does socks4d; write {ip}"
        ),
    );
    Some(ip)
}

/// The plain dotted quad, as `Ipv4Addr`'s parser reads it (four decimal
/// parts of at most three digits, no leading zero, each at most 255),
/// read from the bytes without allocating: most address fields are this.
/// `None` for anything else, which the slower readers then try.
fn dotted_quad(s: &[u8]) -> Option<Ipv4Addr> {
    let mut parts = [0u8; 4];
    let mut n = 0;
    let mut i = 0;
    while n < 4 {
        let start = i;
        let mut v: u32 = 0;
        while i < s.len() && s[i].is_ascii_digit() && i - start < 3 {
            v = v * 10 + u32::from(s[i] - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || v > 255 || (len > 1 && s[start] == b'0') {
            return None;
        }
        parts[n] = v as u8;
        n += 1;
        if n < 4 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    (i == s.len()).then(|| Ipv4Addr::from(parts))
}

fn classic_v4(s: &str) -> Option<Ipv4Addr> {
    s.parse::<Ipv4Addr>().ok().or_else(|| inet_aton(s))
}

/// The forms `inet_aton(3)` reads: one to four parts separated by dots,
/// each decimal, octal (a leading `0`) or hexadecimal (`0x`), the last
/// part filling the bytes that remain: `10.1` is 10.0.0.1, `010.0.0.1`
/// is 8.0.0.1, `0x0a000001` is 10.0.0.1.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(4);
    for p in &parts {
        values.push(c_number(p)?);
    }
    let (last, head) = values.split_last()?;
    if head.iter().any(|&v| v > 0xff) {
        return None;
    }
    let last_max = u32::MAX >> (8 * head.len());
    if *last > u64::from(last_max) {
        return None;
    }
    let mut addr = *last as u32;
    for (k, &v) in head.iter().enumerate() {
        addr |= (v as u32) << (24 - 8 * k);
    }
    Some(Ipv4Addr::from(addr))
}

/// A number as C's `strtoul` with base 0 reads it, whole: decimal, octal
/// after a leading `0`, hexadecimal after `0x`. At most `u32::MAX`.
fn c_number(p: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = u64::from_str_radix(digits.trim_start_matches('0'), radix)
        .ok()
        .or_else(|| digits.chars().all(|c| c == '0').then_some(0))?;
    (v <= u64::from(u32::MAX)).then_some(v)
}

/// The port of a rule's `op port`: a number, a service name, or, as sockd
/// read it, the leading digits of a field such as `23abc`.
fn rule_port(t: &[u8], services: &Services, notes: &mut LineNotes) -> Result<u16, String> {
    match port_number(t, services) {
        Ok(p) => Ok(p),
        Err(e) if !t.first().is_some_and(u8::is_ascii_digit) => Err(e),
        Err(_) => {
            let digits = &t[..t.iter().take_while(|b| b.is_ascii_digit()).count()];
            let p = port_number(digits, services)?;
            notes.add(NoteKind::PortDigits, || {
                format!(
                    "port {}: CSTC sockd read its leading digits, {p}, and so does socks4d; write {p}",
                    String::from_utf8_lossy(t)
                )
            });
            Ok(p)
        }
    }
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
        .ok_or_else(|| {
            format!(
                "{} is neither a port number nor a service in {}",
                show(t),
                services.source()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::super::lookups::Fixed;
    use super::super::rule::{first_match, Facts};
    use super::*;

    const SERVICES: &str = "ftp\t\t21/tcp\ntelnet\t\t23/tcp\nhttp\t\t80/tcp\t\twww # WorldWideWeb\ndomain\t53/udp\n";

    fn services() -> Services {
        Services::parse(SERVICES.as_bytes())
    }

    fn lookups() -> Fixed {
        Fixed::default()
            .host("localhost", &[Ipv4Addr::LOCALHOST])
            .host("gw.example", &[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)])
    }

    /// The parse of `text` with user-list `files`, and its notes.
    fn checked_with(text: &str, files: &[(&str, &str)]) -> (Result<Parsed, Vec<Error>>, Vec<Note>) {
        let mut l = lookups();
        for (p, t) in files {
            l = l.file(p, t);
        }
        read(text.as_bytes(), "test.conf", &services(), &mut l, true)
    }

    fn rules_with(text: &str, files: &[(&str, &str)]) -> Result<Parsed, Vec<Error>> {
        checked_with(text, files).0
    }

    fn rules(text: &str) -> Parsed {
        rules_with(text, &[]).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn errors(text: &str) -> Vec<String> {
        rules_with(text, &[])
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    /// The notes of a file that parses: (line, kind, message).
    fn notes(text: &str) -> Vec<(usize, NoteKind, String)> {
        let (parsed, notes) = checked_with(text, &[]);
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        notes.into_iter().map(|n| (n.line, n.kind, n.message)).collect()
    }

    /// The deciding line's number (0: none), and whether it permits.
    fn check_req(r: &Parsed, user: &str, src: &str, dst: &str, port: u16) -> (usize, bool) {
        let f = Facts {
            user: user.as_bytes(),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            port,
            name: None,
        };
        first_match(&r.rules, &f).map_or((0, false), |i| (r.rules[i].line, r.rules[i].action == Action::Permit))
    }

    /// A request (user, src, dst, port) and the deciding line's number
    /// (0: none) and whether it permits.
    type Case<'a> = (&'a str, &'a str, &'a str, u16, (usize, bool));

    /// [`check_req`] of each case is what the case says.
    fn check_all(r: &Parsed, cases: &[Case]) {
        for &(user, src, dst, port, want) in cases {
            assert_eq!(check_req(r, user, src, dst, port), want, "{user} {src} {dst} {port}");
        }
    }

    /// The example of the classic sockd.conf(5), as administrators have it.
    const CLASSIC: &str = include_str!("../../tests/data/classic-sockd.conf");

    #[test]
    fn the_quick_dotted_quad_reads_what_the_std_parser_reads() {
        for s in [
            "0.0.0.0",
            "10.1.2.3",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4 ",
            "1..2.3",
            "1.2.3.",
            ".1.2.3",
            "1234.1.1.1",
            "1.2.3.04",
            "1.2.3.a",
            "",
            "000.0.0.0",
            "0.0.0.00",
            "9.99.199.249",
        ] {
            assert_eq!(dotted_quad(s.as_bytes()), s.parse::<Ipv4Addr>().ok(), "{s:?}");
        }
    }

    #[test]
    fn a_connections_parse_makes_no_notes_and_reads_the_same_rules() {
        let text = "permit ?=Ix *= 10.1 255.0.0.0 0.0.0.0 0.0.0.0 eq 23abc extra\ndeny localhost 255.255.255.255 ::\n";
        let (noted, notes) = checked_with(text, &[]);
        assert_eq!(notes.len(), 8, "{notes:#?}");
        let (plain, none) = read(text.as_bytes(), "test.conf", &services(), &mut lookups(), false);
        assert!(none.is_empty());
        assert_eq!(plain.unwrap(), noted.unwrap());
    }

    #[test]
    fn classic_example_decides_as_test_sockd_conf() {
        let (parsed, notes) = checked_with(CLASSIC, &[]);
        assert!(notes.is_empty(), "{notes:?}");
        let r = parsed.unwrap();
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
        check_all(
            &r,
            &[
                ("clyde", "128.12.6.34", "112.3.24.1", 21, (1, false)),
                ("ylee", "128.12.6.4", "137.12.4.15", 23, (2, true)),
                ("jane", "128.12.2.13", "137.12.4.15", 23, (3, false)),
                ("jim", "128.12.6.4", "126.87.13.2", 23, (3, false)),
                ("ylee", "128.12.6.4", "126.87.13.2", 21, (4, true)),
                ("sam", "128.12.36.7", "10.53.23.1", 70, (4, true)),
                ("don", "23.2.6.127", "10.53.23.1", 70, (0, false)),
                ("clyde", "128.12.1.62", "112.3.24.1", 21, (4, true)),
            ],
        );
    }

    #[test]
    fn masks_need_not_be_contiguous() {
        let r = rules("permit 0.0.0.7 0.0.0.255 10.0.0.0 255.0.0.0\n");
        check_all(
            &r,
            &[
                ("u", "192.168.1.7", "10.1.1.1", 1, (1, true)),
                ("u", "192.168.1.8", "10.1.1.1", 1, (0, false)),
                ("u", "192.168.1.7", "11.1.1.1", 1, (0, false)),
            ],
        );
        let any = rules("permit 0.0.0.0 0.0.0.0\n");
        assert_eq!(check_req(&any, "u", "8.8.8.8", "1.1.1.1", 1), (1, true));
        // An IPv4 rule says nothing about IPv6 clients.
        assert_eq!(check_req(&any, "u", "::1", "1.1.1.1", 1), (0, false));
    }

    #[test]
    fn cidr_v4_and_v6() {
        let r = rules("deny 192.168.1.128/25\npermit 192.168.0.0/16 10.0.0.0/8\npermit 2001:db8::/32 ::/0 eq 443\npermit ::1/128 : echo hi\npermit fe80:: ffff:: : echo ll\n");
        check_all(
            &r,
            &[
                ("u", "192.168.1.200", "10.0.0.1", 1, (1, false)),
                ("u", "192.168.1.100", "10.0.0.1", 1, (2, true)),
                ("u", "192.168.1.100", "11.0.0.1", 1, (0, false)),
                ("u", "2001:db8:1::5", "2001:4860::1", 443, (3, true)),
                ("u", "2001:db8:1::5", "2001:4860::1", 80, (0, false)),
                ("u", "2001:db9::5", "2001:4860::1", 443, (0, false)),
                ("u", "::1", "127.0.0.1", 9, (4, true)),
            ],
        );
        assert_eq!(r.rules[3].command.as_deref(), Some(&b"echo hi"[..]));
        assert_eq!(check_req(&r, "u", "fe80::1", "127.0.0.1", 9), (5, true));
        assert_eq!(r.rules[4].command.as_deref(), Some(&b"echo ll"[..]));
        let all = rules("permit 0.0.0.0/0\n");
        assert_eq!(check_req(&all, "u", "1.2.3.4", "5.6.7.8", 9), (1, true));
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
                    assert!(check_req(&r, "u", "1.1.1.1", "2.2.2.2", p).1, "{op} {port}: {p}");
                }
                for &p in no {
                    assert!(!check_req(&r, "u", "1.1.1.1", "2.2.2.2", p).1, "{op} {port}: {p}");
                }
            }
        }
        // Aliases name ports too; UDP-only services do not.
        assert_eq!(rules("permit 0.0.0.0/0 eq www\n").rules[0].port, Some((PortOp::Eq, 80)));
        assert!(errors("permit 0.0.0.0/0 eq domain\n")[0].contains("domain"));
        assert_eq!(port_number(b"8080", &services()), Ok(8080));
        assert!(port_number(b"65536", &services()).is_err());
        assert!(port_number(b"23abc", &services()).is_err());
    }

    #[test]
    fn userlists_names_and_files() {
        let r = rules_with(
            "permit *=root,/etc/ops.users 0.0.0.0/0\ndeny 0.0.0.0/0\n",
            &[("/etc/ops.users", "# operators\nalice,bob\t carol # not dave\n\n")],
        )
        .unwrap();
        for u in ["root", "alice", "bob", "carol"] {
            assert_eq!(check_req(&r, u, "1.1.1.1", "2.2.2.2", 1), (1, true), "{u}");
        }
        for u in ["dave", "Alice", "", "not"] {
            assert_eq!(check_req(&r, u, "1.1.1.1", "2.2.2.2", 1), (2, false), "{u}");
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
             permit nosuchhost 255.0.0.0\n\
             permit 1.2.3.4 ffff::\n\
             permit 0.0.0.0/0 eq\n\
             permit 0.0.0.0/0 eq 70000\n\
             permit 0.0.0.0/0 eq nosuchservice\n\
             permit 0.0.0.0/0 1.0.0.0/8 between 5\n\
             permit 0.0.0.0/0 1.0.0.0/8 eq 5 6\n\
             permit ?=x 0.0.0.0/0\n\
             permit ?= *= 10.0.0.0/8 1.0.0.0/8 eq 1 2\n\
             permit *=a,,b 0.0.0.0/0\n\
             permit *=/no/such/file 0.0.0.0/0\n\
             permit *=etc/users 0.0.0.0/0\n\
             : echo x\n\
             permit 10.0.0.0 255.0.0.0 1.2.3.4 5.6.7.8 frob 23\n\
             permit\n\
             permit 10.0.0.0 garbage!\n\
             permit 10.0.0.0 256.0.0.0\n\
             permit 300.1.1.1 255.0.0.0\n\
             permit 10.0.0.0 localhost\n\
             permit 10.0.0.0 255.0.0.0 eq 99999x\n",
        );
        let lines: Vec<&str> = errs.iter().map(|e| e.split(':').nth(1).unwrap()).collect();
        let want: Vec<String> = (2..=24).map(|n| n.to_string()).collect();
        assert_eq!(lines, want, "{errs:#?}");
        assert!(
            errs[0].starts_with("test.conf:2: unknown action \"allow\""),
            "{}",
            errs[0]
        );
        assert!(
            errs[3].contains("nosuchhost: the host name does not resolve"),
            "{}",
            errs[3]
        );
        assert!(errs[13].contains("/no/such/file"), "{}", errs[13]);
        assert!(errs[18].contains("255.255.255.255"), "{}", errs[18]);
        assert!(errs[19].contains("not a dotted-quad mask"), "{}", errs[19]);
    }

    #[test]
    fn long_lines_are_refused() {
        let ok = format!("permit 0.0.0.0/0 : {}\n", "x".repeat(MAX_LINE_LEN - 19));
        assert_eq!(rules(&ok).rules.len(), 1);
        let long = format!("permit 0.0.0.0/0 : {}\n", "x".repeat(MAX_LINE_LEN - 18));
        assert!(errors(&long)[0].starts_with("test.conf:1: line longer than 1023 bytes"));
    }

    #[test]
    fn errors_quote_at_most_64_bytes_of_a_field() {
        let e = errors(&format!("{}\n", "x".repeat(900)));
        assert_eq!(
            e[0],
            format!("test.conf:1: unknown action \"{}\"... (permit or deny)", "x".repeat(64))
        );
    }

    #[test]
    fn first_hook_line_of_each_kind_runs() {
        let r = rules("#BAD_ID: one\n#BAD_ID: two\n#NO_IDENTD:three\n");
        assert_eq!(r.bad_id.unwrap().command, b"one");
        assert_eq!(r.no_identd.unwrap().command, b"three");
    }

    // One test per legacy form: the meaning sockd gave it, and the note
    // naming its line.

    #[test]
    fn empty_star_equals_means_any_user() {
        let n = notes("# x\npermit *= 10.0.0.0 255.0.0.0\n");
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].0, n[0].1), (2, NoteKind::EmptyUsers));
        let r = rules("permit *= 10.0.0.0 255.0.0.0\n");
        assert_eq!(r.rules[0].users, None);
        assert_eq!(check_req(&r, "anyone", "10.1.1.1", "1.1.1.1", 1), (1, true));
        assert_eq!(check_req(&r, "", "10.1.1.1", "1.1.1.1", 1), (1, true));
    }

    #[test]
    fn ident_flag_reads_its_first_letter() {
        let r = rules("permit ?=Ident 1.0.0.0 255.0.0.0\npermit ?=no 2.0.0.0 255.0.0.0\npermit ?=ix 3.0.0.0/8\n");
        let modes: Vec<_> = r.rules.iter().map(|r| r.ident).collect();
        assert_eq!(modes, [Some(Mode::Required), Some(Mode::Off), Some(Mode::Optional)]);
        let n = notes("permit ?=Ident 1.0.0.0 255.0.0.0\n");
        assert_eq!((n[0].0, n[0].1), (1, NoteKind::IdentLetters));
        assert!(n[0].2.contains("write ?=I"), "{}", n[0].2);
        assert!(errors("permit ?=xI 1.0.0.0 255.0.0.0\n")[0].contains("unknown ident flag"));
    }

    #[test]
    fn host_names_in_address_fields_are_resolved() {
        let r = rules("deny localhost 255.255.255.255\npermit 0.0.0.0 0.0.0.0 gw.example 255.255.255.255\n");
        assert_eq!(check_req(&r, "u", "127.0.0.1", "10.0.0.1", 1), (1, false));
        assert_eq!(check_req(&r, "u", "127.0.0.2", "10.0.0.1", 1), (2, true));
        // Any address of a name with several.
        assert_eq!(check_req(&r, "u", "127.0.0.2", "10.0.0.2", 1), (2, true));
        assert_eq!(check_req(&r, "u", "127.0.0.2", "10.0.0.3", 1), (0, false));
        let n = notes("deny localhost 255.255.255.255\npermit 0.0.0.0 0.0.0.0 gw.example 255.255.255.255\n");
        assert_eq!((n[0].0, n[0].1), (1, NoteKind::HostName));
        assert!(n[0].2.contains("matches 127.0.0.1"), "{}", n[0].2);
        assert_eq!((n[1].0, n[1].1), (2, NoteKind::HostName));
        assert!(
            n[1].2.contains("10.0.0.1, 10.0.0.2") && n[1].2.contains("only the first"),
            "{}",
            n[1].2
        );
        // Never an open rule: a name that does not resolve is an error.
        let e = errors("# x\ndeny unknown.example 255.255.255.255\npermit 0.0.0.0 0.0.0.0\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("test.conf:2: source address unknown.example"),
            "{}",
            e[0]
        );
        // Only address fields take names.
        assert!(errors("permit 10.0.0.0 localhost\n")[0].contains("mask"));
    }

    #[test]
    fn inet_addr_forms_mean_what_inet_aton_reads() {
        for (form, ip) in [
            ("10.1", "10.0.0.1"),
            ("10.1.2", "10.1.0.2"),
            ("010.0.0.1", "8.0.0.1"),
            ("0x0a.0.0.1", "10.0.0.1"),
            ("0x0a000001", "10.0.0.1"),
            ("167772161", "10.0.0.1"),
            ("0", "0.0.0.0"),
            ("0377.0xff.255.0", "255.255.255.0"),
        ] {
            assert_eq!(inet_aton(form), Some(ip.parse().unwrap()), "{form}");
        }
        for bad in [
            "",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.256",
            "1.16777216",
            "1.2.65536",
            "08.1.1.1",
            "0x",
            "1..2",
            "4294967296",
            "a.b",
        ] {
            assert_eq!(inet_aton(bad), None, "{bad}");
        }
        let r = rules("permit 010.0.0.1 255.255.255.255 10.1 0xffffff00\n");
        check_all(
            &r,
            &[
                ("u", "8.0.0.1", "10.0.0.77", 1, (1, true)),
                ("u", "10.0.0.1", "10.0.0.77", 1, (0, false)),
                ("u", "8.0.0.1", "10.0.1.77", 1, (0, false)),
            ],
        );
        let n = notes("permit 010.0.0.1 255.255.255.255 10.1 0xffffff00\n");
        let kinds: Vec<_> = n.iter().map(|n| (n.0, n.1)).collect();
        assert_eq!(kinds, [(1, NoteKind::InetAton); 3]);
        assert!(n[0].2.contains("write 8.0.0.1"), "{}", n[0].2);
        assert!(n[2].2.contains("write 255.255.255.0"), "{}", n[2].2);
    }

    #[test]
    fn port_reads_its_leading_digits() {
        let r = rules("deny 0.0.0.0 0.0.0.0 eq 23abc\npermit 0.0.0.0 0.0.0.0\n");
        assert_eq!(r.rules[0].port, Some((PortOp::Eq, 23)));
        assert_eq!(check_req(&r, "u", "1.1.1.1", "2.2.2.2", 23), (1, false));
        assert_eq!(check_req(&r, "u", "1.1.1.1", "2.2.2.2", 24), (2, true));
        let n = notes("deny 0.0.0.0 0.0.0.0 eq 23abc\n");
        assert_eq!((n[0].0, n[0].1), (1, NoteKind::PortDigits));
        assert!(n[0].2.contains("write 23"), "{}", n[0].2);
    }

    #[test]
    fn empty_command_and_empty_hook_run_nothing() {
        let r = rules("deny 10.0.0.0 255.0.0.0 :\n#NO_IDENTD:\n#NO_IDENTD: echo later\n#BAD_ID:   \n");
        assert_eq!(r.rules[0].command, None);
        let h = r.no_identd.unwrap();
        assert_eq!((h.line, h.command()), (2, None));
        assert_eq!(r.bad_id.unwrap().command(), None);
        let n = notes("deny 10.0.0.0 255.0.0.0 :\n#NO_IDENTD:\n");
        let kinds: Vec<_> = n.iter().map(|n| (n.0, n.1)).collect();
        assert_eq!(kinds, [(1, NoteKind::EmptyCommand), (2, NoteKind::EmptyHook)]);
    }

    #[test]
    fn double_colon_passes_the_second_colon_to_the_shell() {
        let r = rules("deny 10.0.0.0 255.0.0.0 :: /bin/echo x\npermit ::/0 :: echo y\npermit ::1/128 ::\n");
        assert_eq!(r.rules[0].command.as_deref(), Some(&b": /bin/echo x"[..]));
        assert_eq!(check_req(&r, "u", "10.1.1.1", "1.1.1.1", 1), (1, false));
        assert_eq!(r.rules[1].command.as_deref(), Some(&b": echo y"[..]));
        assert_eq!(r.rules[2].command.as_deref(), Some(&b":"[..]));
        let n = notes("deny 10.0.0.0 255.0.0.0 :: /bin/echo x\n#BAD_ID:: logger x\n");
        let kinds: Vec<_> = n.iter().map(|n| (n.0, n.1)).collect();
        assert_eq!(kinds, [(1, NoteKind::DoubleColon), (2, NoteKind::DoubleColon)]);
        assert!(n[0].2.contains("\"/bin/echo x\" never runs"), "{}", n[0].2);
    }

    #[test]
    fn fields_after_a_complete_classic_rule_are_ignored() {
        let text = "deny 10.0.0.0 255.0.0.0 eq 23 extra words\n\
                    permit 10.0.0.0 255.0.0.0 192.168.1.5\n\
                    deny 11.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq\n\
                    permit 11.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 stray\n";
        let r = rules(text);
        assert_eq!(check_req(&r, "u", "10.1.1.1", "9.9.9.9", 23), (1, false));
        // The lone destination address was ignored: every destination.
        assert_eq!(check_req(&r, "u", "10.1.1.1", "9.9.9.9", 80), (2, true));
        // The lone `eq`: every port.
        assert_eq!(check_req(&r, "u", "11.1.1.1", "9.9.9.9", 80), (3, false));
        let n = notes(text);
        let kinds: Vec<_> = n.iter().map(|n| (n.0, n.1)).collect();
        assert_eq!(kinds, (1..=4).map(|l| (l, NoteKind::ExtraFields)).collect::<Vec<_>>());
        assert!(n[1].2.contains("every destination"), "{}", n[1].2);
        assert!(n[2].2.contains("every port"), "{}", n[2].2);
        // With the extensions there is no classic meaning to keep.
        assert!(errors("permit 10.0.0.0/8 eq 23 extra\n")[0].contains("unexpected \"extra\""));
    }

    #[test]
    fn colons_in_ipv6_addresses_start_no_command() {
        let none: Option<&str> = None;
        for (line, body, command) in [
            ("permit ::1/128 : x", "permit ::1/128 ", Some(" x")),
            ("permit fe80:: ffff::", "permit fe80:: ffff::", none),
            ("permit 1.2.3.4 0.0.0.0 ::x", "permit 1.2.3.4 0.0.0.0 ", Some(":x")),
            ("permit 1.0.0.0/8 # c : d", "permit 1.0.0.0/8 ", none),
            // After the port operator a colon is the classic separator,
            // even where the field would read as IPv6 ("23::").
            (
                "deny 1.0.0.0 255.0.0.0 eq 23:: x",
                "deny 1.0.0.0 255.0.0.0 eq 23",
                Some(": x"),
            ),
        ] {
            let want = (body.as_bytes(), command.map(str::as_bytes));
            assert_eq!(split_command(line.as_bytes()), want, "{line}");
        }
    }
}
