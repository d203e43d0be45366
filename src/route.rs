//! The route file (`--route FILE`): from which local address to reach a
//! destination, in the form of CSTC sockd's `sockd.route`, one route per
//! line, the first that matches deciding:
//!
//! ```text
//! interface_addr dst_addr dst_mask
//! interface_addr dst_addr/prefix      # IPv4 or IPv6
//! interface_addr domain.name 0.0.0.0  # SOCKS4a names; .zone for a zone
//! ```
//!
//! The deciding line's `interface_addr` is the source of a CONNECT to that
//! destination and the listening address of a BIND for that application
//! server. An unspecified `interface_addr` (`0.0.0.0`, `::`) ends the
//! search as if no line had matched. Parsing is pure; [`load`] reads the
//! file.

use std::net::IpAddr;
use std::path::Path;

use crate::addr::{is_host_name, Net};
use crate::rules::{self, Error, MAX_FILE_LEN, MAX_LINE_LEN};
use crate::text::{self, show};

/// What a route's destination field matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dst {
    /// Addresses in a network.
    Net(Net),
    /// A SOCKS4a name, exactly (letter case aside).
    Name(String),
    /// `.zone`: the name `zone` and every name under it.
    Zone(String),
}

/// One line of the route file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub line: usize,
    /// The line as written, without a trailing comment, for `--explain`.
    pub text: String,
    pub interface: IpAddr,
    pub dst: Dst,
}

impl Route {
    /// The local address to use, or `None` for a line that says to do
    /// as without the file (an unspecified `interface_addr`).
    pub fn source(&self) -> Option<IpAddr> {
        (!self.interface.is_unspecified()).then_some(self.interface)
    }

    fn matches(&self, ip: IpAddr, name: Option<&str>) -> bool {
        match &self.dst {
            Dst::Net(n) => n.contains(ip),
            Dst::Name(want) => name.is_some_and(|n| n.eq_ignore_ascii_case(want)),
            Dst::Zone(zone) => name.is_some_and(|n| {
                let n = n.to_ascii_lowercase();
                n == *zone || n.ends_with(&format!(".{zone}"))
            }),
        }
    }
}

/// The routes of one file, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// The file's path; `None` without `--route`.
    pub file: Option<String>,
    pub routes: Vec<Route>,
}

/// The routes to serve with, or every error that stops the file being used.
pub type Loaded = Result<Routes, Vec<Error>>;

impl Routes {
    /// The first route for destination `ip`, reached by SOCKS4a `name` if
    /// any, that has the destination's family.
    pub fn find(&self, ip: IpAddr, name: Option<&[u8]>) -> Option<&Route> {
        let name = name.and_then(|n| std::str::from_utf8(n).ok());
        self.routes
            .iter()
            .find(|r| r.interface.is_ipv4() == ip.is_ipv4() && r.matches(ip, name))
    }

    /// `file:line` of `route`, as logs and `--explain` name it.
    pub fn label(&self, route: &Route) -> String {
        format!("{}:{}", self.file.as_deref().unwrap_or("-"), route.line)
    }
}

/// Parses the text of route file `file`; every line is checked and every
/// error returned.
pub fn parse(text: &[u8], file: &str) -> Loaded {
    let mut routes = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text::lines(text) {
        let error = |message: String| Error {
            file: file.into(),
            line: Some(n),
            message,
        };
        if raw.len() > MAX_LINE_LEN {
            errors.push(error(format!("line longer than {MAX_LINE_LEN} bytes")));
            continue;
        }
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = match line.iter().position(|&b| b == b'#') {
            Some(hash) => &line[..hash],
            None => line,
        };
        match parse_line(line) {
            Ok(None) => {}
            Ok(Some((interface, dst))) => routes.push(Route {
                line: n,
                text: String::from_utf8_lossy(line).trim().to_string(),
                interface,
                dst,
            }),
            Err(e) => errors.push(error(e)),
        }
    }
    if errors.is_empty() {
        Ok(Routes {
            file: Some(file.into()),
            routes,
        })
    } else {
        Err(errors)
    }
}

/// One line without its comment: nothing, or a route.
fn parse_line(line: &[u8]) -> Result<Option<(IpAddr, Dst)>, String> {
    let fields: Vec<&str> = match std::str::from_utf8(line) {
        Ok(s) => s.split([' ', '\t']).filter(|f| !f.is_empty()).collect(),
        Err(_) => return Err("bytes that are not text".into()),
    };
    let (interface, dst, mask) = match fields.as_slice() {
        [] => return Ok(None),
        [i, d] => (*i, *d, None),
        [i, d, m] => (*i, *d, Some(*m)),
        [_] => return Err("a route needs interface_addr and dst_addr dst_mask (or dst_addr/prefix)".into()),
        [_, _, _, extra, ..] => return Err(format!("unexpected field {} after the route", show(extra.as_bytes()))),
    };
    let interface: IpAddr = interface
        .parse()
        .map_err(|_| format!("interface_addr {} is not an IP address", show(interface.as_bytes())))?;
    let dst = destination(dst, mask)?;
    let family_ok = match &dst {
        Dst::Net(n) => n.is_ipv4() == interface.is_ipv4(),
        Dst::Name(_) | Dst::Zone(_) => true,
    };
    if !family_ok {
        return Err(format!(
            "interface_addr {interface} and the destination are not of one family"
        ));
    }
    Ok(Some((interface, dst)))
}

/// `dst_addr/prefix` alone, or `dst_addr dst_mask`, or a name with a mask
/// field that is not read (as in sockd, where it had to be there).
fn destination(dst: &str, mask: Option<&str>) -> Result<Dst, String> {
    if dst.contains('/') {
        if let Some(m) = mask {
            return Err(format!("unexpected field {} after {dst}", show(m.as_bytes())));
        }
        return Net::parse(dst).map(Dst::Net).map_err(|e| format!("dst_addr: {e}"));
    }
    let Some(mask) = mask else {
        return Err(format!(
            "no dst_mask after dst_addr {} (or write addr/prefix)",
            show(dst.as_bytes())
        ));
    };
    if let Ok(ip) = dst.parse::<IpAddr>() {
        let m: IpAddr = mask
            .parse()
            .map_err(|_| format!("dst_mask {} is not an IP address mask", show(mask.as_bytes())))?;
        return Net::with_mask(ip, m)
            .map(Dst::Net)
            .ok_or_else(|| format!("dst_addr {dst} and dst_mask {mask} are not of one family"));
    }
    let (zone, name) = match dst.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, dst),
    };
    if !is_host_name(name) {
        return Err(format!(
            "dst_addr {} is neither an IP address nor a domain name",
            show(dst.as_bytes())
        ));
    }
    let name = name.to_ascii_lowercase();
    Ok(if zone { Dst::Zone(name) } else { Dst::Name(name) })
}

/// Reads and parses `path`; `None` (no `--route`) is no routes. A file
/// that is missing, unreadable, not believed by `trust` or has an error is
/// an error: no service.
pub fn load(path: Option<&Path>, trust: &rules::Trust) -> Loaded {
    let Some(path) = path else {
        return Ok(Routes::default());
    };
    let file = path.display().to_string();
    match trust.read(path, MAX_FILE_LEN) {
        Ok(text) => parse(&text, &file),
        Err(e) => Err(vec![Error {
            file,
            line: None,
            message: rules::trust::describe(&e),
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(text: &str) -> Routes {
        parse(text.as_bytes(), "r").unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn source(r: &Routes, dst: &str, name: Option<&str>) -> Option<(usize, Option<IpAddr>)> {
        r.find(ip(dst), name.map(str::as_bytes)).map(|r| (r.line, r.source()))
    }

    #[test]
    fn classic_and_prefix_forms_first_match_wins() {
        let r = routes(
            "# comment\n\
             \n\
             127.0.0.2 127.0.0.1 255.255.255.255\n\
             127.0.0.3\t10.0.0.0/8   # trailing comment\n\
             0.0.0.0 10.9.0.0/16\n\
             127.0.0.4 0.0.0.0 0.0.0.0\r\n\
             ::1 ::/0\n",
        );
        assert_eq!(r.routes.len(), 5);
        assert_eq!(source(&r, "127.0.0.1", None), Some((3, Some(ip("127.0.0.2")))));
        assert_eq!(source(&r, "10.9.1.1", None), Some((4, Some(ip("127.0.0.3")))));
        assert_eq!(source(&r, "192.0.2.1", None), Some((6, Some(ip("127.0.0.4")))));
        assert_eq!(source(&r, "2001:db8::1", None), Some((7, Some(ip("::1")))));
        assert_eq!(r.routes[1].text, "127.0.0.3\t10.0.0.0/8");
        assert_eq!(r.label(&r.routes[0]), "r:3");
    }

    #[test]
    fn an_unspecified_interface_ends_the_search_without_a_source() {
        let r = routes("0.0.0.0 10.9.0.0/16\n127.0.0.3 10.0.0.0/8\n");
        assert_eq!(source(&r, "10.9.1.1", None), Some((1, None)));
        assert_eq!(source(&r, "10.8.1.1", None), Some((2, Some(ip("127.0.0.3")))));
        assert_eq!(source(&r, "11.0.0.1", None), None);
    }

    #[test]
    fn names_and_zones_match_socks4a_names_only() {
        let r = routes("127.0.0.2 www.Example.org 0.0.0.0\n127.0.0.3 .example.net 0.0.0.0\n");
        assert_eq!(
            source(&r, "192.0.2.1", Some("WWW.example.org")),
            Some((1, Some(ip("127.0.0.2"))))
        );
        assert_eq!(source(&r, "192.0.2.1", Some("example.org")), None);
        assert_eq!(
            source(&r, "192.0.2.1", Some("example.net")),
            Some((2, Some(ip("127.0.0.3"))))
        );
        assert_eq!(
            source(&r, "192.0.2.1", Some("a.b.example.net")),
            Some((2, Some(ip("127.0.0.3"))))
        );
        assert_eq!(source(&r, "192.0.2.1", Some("badexample.net")), None);
        assert_eq!(source(&r, "192.0.2.1", None), None);
        // Names as the resolver takes them, underscores included.
        let r = routes("127.0.0.2 _sip._tcp.example.org 0.0.0.0\n127.0.0.3 .host_1.example 0.0.0.0\n");
        assert_eq!(
            source(&r, "192.0.2.1", Some("_SIP._tcp.example.org")),
            Some((1, Some(ip("127.0.0.2"))))
        );
        assert_eq!(
            source(&r, "192.0.2.1", Some("a.host_1.example")),
            Some((2, Some(ip("127.0.0.3"))))
        );
        // A name route of one family does not give an IPv6 destination an
        // IPv4 source.
        assert_eq!(source(&r, "2001:db8::1", Some("www.example.org")), None);
    }

    #[test]
    fn errors_name_every_bad_line() {
        let text = "127.0.0.2 10.0.0.0\n\
                    host 10.0.0.0/8\n\
                    127.0.0.2 ::/0\n\
                    ::1 10.0.0.0 255.0.0.0\n\
                    127.0.0.2 10.0.0.0/8 255.0.0.0\n\
                    127.0.0.2 10.0.0.0 255.0.0.0 extra\n\
                    127.0.0.2 10.0.0.0 ffff::\n\
                    127.0.0.2 10.0.0.0/40\n\
                    127.0.0.2 bad_name! 0.0.0.0\n\
                    127.0.0.2\n\
                    127.0.0.2 10.0.0.0 mask\n\
                    127.0.0.2 123-456 0.0.0.0\n\
                    127.0.0.2 \"x\"\x01 0.0.0.0\n\
                    127.0.0.2 10.0.0.0/8\n";
        let errors = parse(text.as_bytes(), "/etc/socks4d.route").unwrap_err();
        let lines: Vec<Option<usize>> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, (1..=13).map(Some).collect::<Vec<_>>(), "{errors:?}");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for (i, want) in [
            "no dst_mask after dst_addr \"10.0.0.0\"",
            "interface_addr \"host\" is not an IP address",
            "not of one family",
            "not of one family",
            "unexpected field \"255.0.0.0\" after 10.0.0.0/8",
            "unexpected field \"extra\"",
            "dst_addr 10.0.0.0 and dst_mask ffff:: are not of one family",
            "prefix /40",
            "neither an IP address nor a domain name",
            "a route needs",
            "dst_mask \"mask\"",
            "dst_addr \"123-456\" is neither",
            r#"dst_addr "\"x\"\x01" is neither"#,
        ]
        .iter()
        .enumerate()
        {
            assert!(text[i].contains(want), "{}: {want}", text[i]);
        }
        assert!(text[0].starts_with("/etc/socks4d.route:1: "), "{}", text[0]);
    }

    #[test]
    fn long_lines_and_binary_are_errors() {
        let mut text = "127.0.0.2 10.0.0.0/8 #".to_string();
        text.push_str(&"x".repeat(MAX_LINE_LEN));
        let e = parse(text.as_bytes(), "r").unwrap_err();
        assert!(e[0].message.contains("longer than"), "{e:?}");
        let e = parse(b"127.0.0.2 \xff\xfe 0.0.0.0\n", "r").unwrap_err();
        assert!(e[0].message.contains("not text"), "{e:?}");
    }

    #[test]
    fn no_file_means_no_routes_and_a_missing_one_is_an_error() {
        let trust = rules::Trust::new("65534:65534");
        assert_eq!(load(None, &trust), Ok(Routes::default()));
        let e = load(Some(Path::new("/nonexistent/socks4d.route")), &trust).unwrap_err();
        assert!(
            e[0].to_string().starts_with("/nonexistent/socks4d.route: cannot read"),
            "{e:?}"
        );
    }
}
