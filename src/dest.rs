//! What a destination address means, whatever its spelling. Pure.
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

/// The well-known NAT64 prefix, `64:ff9b::/96`.
const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;
const NAT64_MASK: u128 = !0xffff_ffff;

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
    if bits & NAT64_MASK == NAT64 && (bits as u32) >> 24 == 0 {
        return Err(Unusable::Unspecified);
    }
    Ok(a)
}

/// The address the rules judge for the (canonical) destination `ip`.
pub fn judged(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) if u128::from(a) & NAT64_MASK == NAT64 => IpAddr::V4(Ipv4Addr::from(u128::from(a) as u32)),
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
}
