//! Addresses, networks and host names, whatever their spelling. Pure.
//!
//! [`Net`] is an address with a mask, as the rules, the route file and
//! `--proxy-protocol` write them. [`is_host_name`] says what may be
//! looked up as a host name, in the rules and the route file alike.
//!
//! Every destination, from a request's DSTIP, from a SOCKS4a name's
//! lookup or from `--explain`, passes through [`canonical`] before the
//! rules see it, before it is connected to, before BIND expects it and
//! before the audit line names it:
//!
//! - an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, in any spelling) is
//!   the IPv4 address it maps: Linux connects it over IPv4;
//! - the unspecified addresses (`0.0.0.0/8`, `::`, and their mapped
//!   forms) are refused: Linux connects `0.0.0.0` and `::` to this host;
//! - the deprecated IPv4-compatible addresses (`::a.b.c.d`, RFC 4291
//!   2.5.5.1) other than `::1` are refused: no current system routes
//!   them, and a tunnel that did would carry them to the IPv4 host.
//!
//! The rules then judge an address as [`judged`] gives it: a NAT64
//! address of the well-known prefix `64:ff9b::/96` (RFC 6052) is judged
//! as the IPv4 address it embeds, which is where a NAT64 gateway takes
//! it; the connection still goes to the IPv6 address. Other embedded
//! forms (6to4, Teredo, network-specific NAT64 prefixes) reach IPv6 hosts
//! or gateways of the site's own choosing and are judged as IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The well-known NAT64 prefix, `64:ff9b::/96`.
const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;
/// The mask of a /96, the prefix of an IPv6 address that embeds an IPv4
/// one (NAT64, IPv4-mapped).
const EMBEDDED: u128 = !0xffff_ffff;

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
    /// their canonical form ([`canonical`]), where a mapped
    /// address is IPv4. Every other net as it is.
    pub fn unmapped(self) -> Net {
        const MAPPED: u128 = 0xffff_0000_0000;
        match self {
            Net::V6 { addr, mask } if mask & EMBEDDED == EMBEDDED && addr & EMBEDDED == MAPPED => Net::V4 {
                addr: addr as u32,
                mask: mask as u32,
            },
            other => other,
        }
    }

    /// Whether this is a net of NAT64 addresses (within `64:ff9b::/96`),
    /// which the rules judge as the IPv4 addresses they embed
    /// ([`judged`]): as a destination it matches nothing.
    pub fn is_nat64(self) -> bool {
        matches!(self, Net::V6 { addr, mask } if mask & EMBEDDED == EMBEDDED && addr & EMBEDDED == NAT64)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Net::V4 { addr, mask }, IpAddr::V4(a)) => u32::from(a) & mask == addr & mask,
            (Net::V6 { addr, mask }, IpAddr::V6(a)) => u128::from(a) & mask == addr & mask,
            _ => false,
        }
    }
}

/// A host name as the resolver takes one (glibc's `res_hnok`): labels of
/// letters, digits, `-` and `_` (which DNS names in the wild hold, in
/// `_service` labels and some host names), each of 1 to 63 bytes, joined
/// by dots, the first not starting with `-`; at most 253 bytes, and a final
/// dot (the root) allowed. Besides, at least one letter: a mistyped
/// address is never taken for a name.
pub fn is_host_name(s: &str) -> bool {
    let name = s.strip_suffix('.').unwrap_or(s);
    (1..=253).contains(&name.len())
        && !name.starts_with('-')
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && name.bytes().any(|b| b.is_ascii_alphabetic())
}

/// A SOCKS4a name in the one form names are matched in: lower case,
/// without a trailing dot. `None` when `sent` is no host name (an address
/// literal, say: such a request carries only an address).
pub fn name_of(sent: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(sent).ok()?;
    if s.parse::<IpAddr>().is_ok() || !is_host_name(s) {
        return None;
    }
    Some(s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase())
}

/// Whether `name` (as [`name_of`] gives it) is `domain` or a name under
/// it: `www.example.com` and `example.com` are in `example.com`,
/// `badexample.com` is not.
pub fn in_domain(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain)
        .is_some_and(|head| head.is_empty() || head.ends_with('.'))
}

/// Why a destination address is refused whatever the rules say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// `0.0.0.0/8`, `::` or a mapped form of them: this host.
    Unspecified,
    /// `::a.b.c.d`, a deprecated IPv4-compatible address.
    Compatible,
}

impl Unusable {
    /// Why, for the audit line's `detail=`.
    pub fn why(self) -> &'static str {
        match self {
            Unusable::Unspecified => "the unspecified address reaches this host itself",
            Unusable::Compatible => "a deprecated IPv4-compatible IPv6 address (::a.b.c.d)",
        }
    }
}

/// `ip` in the one spelling socks4d uses for it, or why it is refused.
pub fn canonical(ip: IpAddr) -> Result<IpAddr, Unusable> {
    let v4 = match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => a,
            None => return v6(a).map(IpAddr::V6),
        },
    };
    if v4.octets()[0] == 0 {
        return Err(Unusable::Unspecified);
    }
    Ok(IpAddr::V4(v4))
}

fn v6(a: Ipv6Addr) -> Result<Ipv6Addr, Unusable> {
    let bits = u128::from(a);
    if bits == 0 {
        return Err(Unusable::Unspecified);
    }
    if bits >> 32 == 0 && bits != 1 {
        return Err(Unusable::Compatible);
    }
    // A NAT64 gateway would take 64:ff9b::0.0.0.0 to the unspecified
    // IPv4 address.
    if bits & EMBEDDED == NAT64 && (bits as u32) >> 24 == 0 {
        return Err(Unusable::Unspecified);
    }
    Ok(a)
}

/// The address the rules judge for the (canonical) destination `ip`.
pub fn judged(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) if u128::from(a) & EMBEDDED == NAT64 => IpAddr::V4(Ipv4Addr::from(u128::from(a) as u32)),
        _ => ip,
    }
}

/// Whether `ip` is in the NAT64 well-known prefix.
pub fn is_nat64(ip: IpAddr) -> bool {
    judged(ip) != ip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Result<String, Unusable> {
        canonical(s.parse().unwrap()).map(|a| a.to_string())
    }

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
    fn host_names_are_what_the_resolver_takes() {
        for name in [
            "localhost",
            "gw.example",
            "GW.Example.",
            "_sip._tcp.example.org",
            "host_1.example",
            "3com.com",
            "a-b.c-d",
            "x.-y",
        ] {
            assert!(is_host_name(name), "{name}");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}.example", ["a"; 124].join("."));
        for not in [
            "",
            ".",
            "-a.example",
            ".example",
            "a..b",
            "a.b..",
            "10.0.0.1",
            "123-456",
            "bad_name!",
            "a b",
            "ex\u{e4}mple.org",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_host_name(not), "{not}");
        }
        assert!(is_host_name(&format!("{}.example", "a".repeat(63))));
    }

    #[test]
    fn every_spelling_of_a_mapped_address_is_its_ipv4_address() {
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "0:0:0:0:0:ffff:7f00:0001",
            "::FFFF:127.0.0.1",
            "0::ffff:127.0.0.1",
        ] {
            assert_eq!(c(s), Ok("127.0.0.1".into()), "{s}");
        }
        assert_eq!(c("::ffff:192.0.2.7"), Ok("192.0.2.7".into()));
        assert_eq!(c("192.0.2.7"), Ok("192.0.2.7".into()));
    }

    #[test]
    fn unspecified_addresses_are_refused_in_every_spelling() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "0.255.255.255",
            "::",
            "::0",
            "0:0:0:0:0:0:0:0",
            "::ffff:0.0.0.0",
            "::ffff:0:0",
            "::ffff:0.0.0.1",
            "64:ff9b::",
            "64:ff9b::0.1.2.3",
        ] {
            assert_eq!(c(s), Err(Unusable::Unspecified), "{s}");
        }
    }

    #[test]
    fn ipv4_compatible_addresses_are_refused_but_loopback_is_not() {
        for s in ["::127.0.0.1", "::7f00:1", "::192.0.2.1", "::2", "::0.0.0.2"] {
            assert_eq!(c(s), Err(Unusable::Compatible), "{s}");
        }
        assert_eq!(c("::1"), Ok("::1".into()));
        assert_eq!(c("0:0:0:0:0:0:0:1"), Ok("::1".into()));
        assert_eq!(c("2001:db8::1"), Ok("2001:db8::1".into()));
        // IPv4-translated (::ffff:0:a.b.c.d) and 6to4 stay IPv6.
        assert_eq!(c("::ffff:0:7f00:1"), Ok("::ffff:0:7f00:1".into()));
        assert_eq!(c("2002:7f00:1::1"), Ok("2002:7f00:1::1".into()));
    }

    #[test]
    fn nat64_addresses_are_judged_as_the_ipv4_address_they_embed() {
        let j = |s: &str| judged(s.parse().unwrap()).to_string();
        assert_eq!(j("64:ff9b::7f00:1"), "127.0.0.1");
        assert_eq!(j("64:ff9b::192.0.2.33"), "192.0.2.33");
        assert_eq!(j("64:FF9B:0::c000:221"), "192.0.2.33");
        assert!(is_nat64("64:ff9b::1".parse().unwrap()));
        // Outside the /96: as written.
        assert_eq!(j("64:ff9b:1::7f00:1"), "64:ff9b:1::7f00:1");
        assert_eq!(j("64:ff9b::1:0:7f00:1"), "64:ff9b::1:0:7f00:1");
        assert_eq!(j("2001:db8::1"), "2001:db8::1");
        assert_eq!(j("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn names_are_matched_in_one_form_and_by_domain() {
        assert_eq!(name_of(b"WWW.Example.COM."), Some("www.example.com".into()));
        assert_eq!(name_of(b"localhost"), Some("localhost".into()));
        for not_a_name in [&b"192.0.2.1"[..], b"::1", b"", b"a..b", b"-x.example", b"\xff"] {
            assert_eq!(name_of(not_a_name), None, "{not_a_name:?}");
        }
        assert!(in_domain("example.com", "example.com"));
        assert!(in_domain("www.example.com", "example.com"));
        assert!(in_domain("a.b.example.com", "example.com"));
        assert!(!in_domain("badexample.com", "example.com"));
        assert!(!in_domain("example.com.evil", "example.com"));
        assert!(!in_domain("com", "example.com"));
    }
}
