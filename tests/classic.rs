//! A classic CSTC sockd.conf carried over: each legacy form read with the
//! meaning sockd gave it, each line where sockd behaved otherwise named by
//! --check-config, and a differential test of socks4d's decisions against
//! a model of sockd's rule loop over random classic files.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io::Write;
use std::net::Ipv4Addr;

use crate::common::*;
use socks4d::rules::{self, NoteKind};

/// `--check-config` on a file that must pass: its warnings (stderr lines).
fn warnings_of(conf: &str) -> Vec<String> {
    let (code, out, err) = run_socks4d(&["--check-config", "-f", conf]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" rules, OK"), "{out}");
    let lines: Vec<String> = err.lines().map(String::from).collect();
    let n = lines.len();
    let want = match n {
        0 => String::new(),
        1 => ", 1 warning".into(),
        n => format!(", {n} warnings"),
    };
    assert!(out.trim_end().ends_with(&format!("OK{want}")), "{out}");
    for l in &lines {
        assert!(l.starts_with(&format!("{conf}:")) && l.contains(": warning: "), "{l}");
    }
    // The warnings on deny lines of one address family (tests/
    // destinations.rs) are not about the classic grammar: left out here.
    let lines: Vec<String> = lines
        .into_iter()
        .filter(|l| !l.contains(": warning: this line denies IPv"))
        .collect();
    lines
}

/// `--explain` (with `-f` after it, as socks4d(8) writes it): stdout.
fn explain(conf: &str, user: &str, src: &str, dst: &str, port: &str) -> String {
    let (code, out, err) = run_socks4d(&["--explain", "-f", conf, user, src, dst, port]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// Asserts that line `n` of `conf` has one warning, containing `phrase`.
fn assert_warned(conf: &str, n: usize, phrase: &str) -> String {
    let w = warnings_of(conf);
    let on_line: Vec<&String> = w
        .iter()
        .filter(|l| l.starts_with(&format!("{conf}:{n}: warning: ")))
        .collect();
    assert_eq!(on_line.len(), 1, "{w:#?}");
    assert!(on_line[0].contains(phrase), "{}", on_line[0]);
    on_line[0].clone()
}

// The legacy forms: each accepted with the meaning sockd gave it, and its
// line named by --check-config.

#[test]
fn empty_star_equals_matches_every_user() {
    let dir = TempDir::shared("classic-emptyusers");
    let conf = dir.write("sockd.conf", "# staff\npermit *= 10.0.0.0 255.0.0.0\n");
    assert_warned(&conf, 2, "empty *=: CSTC sockd matched every user-id");
    for user in ["alice", "nobody-at-all"] {
        let out = explain(&conf, user, "10.1.2.3", "192.0.2.1", "80");
        assert!(out.contains(":2: permit") && out.contains("decision: permit"), "{out}");
    }
}

#[test]
fn ident_flag_with_more_letters_reads_the_first() {
    let dir = TempDir::shared("classic-identletters");
    let conf = dir.write("sockd.conf", "# x\npermit ?=ident 10.0.0.0 255.0.0.0\n");
    assert_warned(&conf, 2, "write ?=i");
    let out = explain(&conf, "alice", "10.1.2.3", "192.0.2.1", "80");
    assert!(out.contains("ident: optional"), "{out}");
    assert!(out.contains("warning: ?=ident"), "{out}");
}

#[test]
fn host_names_in_address_fields_are_resolved_when_the_file_is_read() {
    let dir = TempDir::shared("classic-hostname");
    let dst = echo_dest();
    let port = dst.addr.port();
    let conf = dir.write(
        "sockd.conf",
        &format!("# x\ndeny 0.0.0.0 0.0.0.0 localhost 255.255.255.255 eq {port}\npermit 0.0.0.0 0.0.0.0\n"),
    );
    let w = assert_warned(&conf, 2, "host name localhost in the destination address");
    assert!(w.contains("matches 127.0.0.1") && w.contains("write 127.0.0.1"), "{w}");
    // At service time too: the name resolved, the deny applies.
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr", "-f", &conf]);
    s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5B);
    let (status, log) = finish(&mut s, EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(line(&log, "decision").contains(&format!("rule={conf}:2 ")), "{log}");
}

#[test]
fn a_host_name_that_does_not_resolve_means_no_service() {
    let dir = TempDir::shared("classic-noname");
    let conf = dir.write(
        "sockd.conf",
        "permit 127.0.0.0 255.0.0.0\ndeny no-such-host.invalid 255.255.255.255\n",
    );
    let (code, out, err) = run_socks4d(&["--check-config", "-f", &conf]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "{conf}:2: source address no-such-host.invalid: the host name does not resolve"
        )),
        "{err}"
    );
    assert!(out.contains("1 error(s)") && out.contains("no service"), "{out}");
    // And at service time: 0x5B, never the permit of line 1.
    let dst = echo_dest();
    let mut s = spawn_stdin(&["--ident", "off", "--log-stderr", "-f", &conf]);
    s.client.write_all(&connect_req(dst.addr, b"alice")).unwrap();
    assert_eq!(read_reply(&mut s.client)[1], 0x5B);
    let (_, log) = finish(&mut s, EXIT);
    assert!(line(&log, "decision").contains("reason=config-error"), "{log}");
}

#[test]
fn masks_and_addresses_sockd_read_as_all_ones_are_refused() {
    let dir = TempDir::shared("classic-garbage");
    let conf = dir.write(
        "sockd.conf",
        "deny 10.0.0.0 255.0.O.0\npermit 0.0.0.0 0.0.0.0\ndeny 10.0.0.0! 255.0.0.0\n",
    );
    let (code, _, err) = run_socks4d(&["--check-config", "-f", &conf]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{conf}:1: source mask \"255.0.O.0\" is not a dotted-quad mask"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{conf}:3: source address \"10.0.0.0!\"")),
        "{err}"
    );
    assert!(!err.contains(&format!("{conf}:2:")), "{err}");
}

#[test]
fn inet_addr_forms_mean_what_inet_addr_reads() {
    let dir = TempDir::shared("classic-inetaddr");
    let conf = dir.write(
        "sockd.conf",
        "# x\ndeny 010.0.0.1 255.255.255.255 10.1 255.255.255.255\npermit 0 0\n",
    );
    let w = warnings_of(&conf);
    assert_eq!(w.len(), 4, "{w:#?}");
    assert!(
        w[0].contains(":2: warning: source address 010.0.0.1 is inet_addr's way of writing 8.0.0.1"),
        "{w:#?}"
    );
    assert!(
        w[1].contains(":2: warning: destination address 10.1 is inet_addr's way of writing 10.0.0.1"),
        "{w:#?}"
    );
    assert!(
        w[2].contains(":3: warning: source address 0 ") && w[3].contains(":3: warning: source mask 0 "),
        "{w:#?}"
    );
    let out = explain(&conf, "u", "8.0.0.1", "10.0.0.1", "80");
    assert!(out.contains(":2: deny"), "{out}");
    let out = explain(&conf, "u", "10.0.0.1", "10.0.0.1", "80");
    assert!(out.contains(":3: permit"), "{out}");
}

#[test]
fn port_with_trailing_letters_reads_its_digits() {
    let dir = TempDir::shared("classic-portdigits");
    let conf = dir.write(
        "sockd.conf",
        "# x\ndeny 0.0.0.0 0.0.0.0 eq 23abc\npermit 0.0.0.0 0.0.0.0\n",
    );
    assert_warned(&conf, 2, "port 23abc: CSTC sockd read its leading digits, 23");
    assert!(explain(&conf, "u", "1.1.1.1", "2.2.2.2", "23").contains(":2: deny"));
    assert!(explain(&conf, "u", "1.1.1.1", "2.2.2.2", "24").contains(":3: permit"));
}

#[test]
fn empty_command_and_empty_hook_line_run_nothing() {
    let dir = TempDir::shared("classic-emptycmd");
    let conf = dir.write(
        "sockd.conf",
        "# x\npermit 127.0.0.0 255.0.0.0 :\n#NO_IDENTD:\n#NO_IDENTD: touch /nonexistent\n",
    );
    let w = warnings_of(&conf);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(w[0].contains(":2: warning: ':' with no command"), "{w:#?}");
    assert!(w[1].contains(":3: warning: #NO_IDENTD: with no command"), "{w:#?}");
    let out = explain(&conf, "u", "127.0.0.1", "2.2.2.2", "80");
    assert!(out.contains("decision: permit") && !out.contains("command:"), "{out}");
}

#[test]
fn double_colon_gives_the_shell_its_no_op() {
    let dir = TempDir::shared("classic-dcolon");
    let conf = dir.write("sockd.conf", "# x\ndeny 127.0.0.0 255.0.0.0 :: /bin/echo refused %u\n");
    assert_warned(&conf, 2, "\"/bin/echo refused %u\" never runs; write one ':' to run it");
    let out = explain(&conf, "u", "127.0.0.1", "2.2.2.2", "80");
    assert!(
        out.contains("decision: deny") && out.contains("command: : /bin/echo refused %u"),
        "{out}"
    );
}

#[test]
fn fields_after_a_complete_rule_are_ignored() {
    let dir = TempDir::shared("classic-extra");
    let conf = dir.write(
        "sockd.conf",
        "# x\ndeny 10.0.0.0 255.0.0.0 eq 23 telnet only\npermit 10.0.0.0 255.0.0.0 192.0.2.7\n",
    );
    let w = warnings_of(&conf);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[0].contains(":2: warning: \"telnet only\" after a complete rule"),
        "{w:#?}"
    );
    assert!(
        w[1].contains(":3: warning: \"192.0.2.7\" alone") && w[1].contains("every destination"),
        "{w:#?}"
    );
    assert!(explain(&conf, "u", "10.1.1.1", "198.51.100.1", "23").contains(":2: deny"));
    assert!(explain(&conf, "u", "10.1.1.1", "198.51.100.1", "80").contains(":3: permit"));
}

// Where CSTC sockd behaved otherwise (its bugs): socks4d applies the line
// as written, and --check-config says so.

#[test]
fn nine_field_rule_keeps_its_port_test() {
    let dir = TempDir::shared("classic-nine");
    let conf = dir.write(
        "sockd.conf",
        "# x\npermit ?=n *=alice 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq 80\n",
    );
    assert_warned(
        &conf,
        2,
        "9 fields; CSTC sockd ignored the port test of such lines (\"eq 80\" was its 8th field",
    );
    assert!(explain(&conf, "alice", "10.1.1.1", "198.51.100.1", "80").contains(":2: permit"));
    assert!(explain(&conf, "alice", "10.1.1.1", "198.51.100.1", "22").contains("no rule matches"));
}

#[test]
fn eight_field_rule_with_a_service_and_a_comment_is_applied() {
    let dir = TempDir::shared("classic-eighth");
    let conf = dir.write(
        "sockd.conf",
        "# x\ndeny *=alice 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet # no telnet\npermit 10.0.0.0 255.0.0.0\n",
    );
    assert_warned(
        &conf,
        2,
        "skipped the line as \"Invalid port number\"; socks4d applies the rule",
    );
    assert!(explain(&conf, "alice", "10.1.1.1", "198.51.100.1", "23").contains(":2: deny"));
    assert!(explain(&conf, "alice", "10.1.1.1", "198.51.100.1", "80").contains(":3: permit"));
}

#[test]
fn line_sockd_read_in_pieces_is_read_whole() {
    let dir = TempDir::shared("classic-long");
    // 1023 bytes: sockd read "... eq 102" and then "3" as a line.
    let head = "deny 10.0.0.0 255.0.0.0 eq";
    let rule = format!("{head}{}1023", " ".repeat(1023 - head.len() - 4));
    assert_eq!(rule.len(), 1023);
    let conf = dir.write("sockd.conf", &format!("# x\n{rule}\npermit 0.0.0.0 0.0.0.0\n"));
    assert_warned(
        &conf,
        2,
        "1023 bytes; CSTC sockd read lines at most 1022 bytes at a time, so it cut the line",
    );
    assert!(explain(&conf, "u", "10.1.1.1", "198.51.100.1", "1023").contains(":2: deny"));
    assert!(explain(&conf, "u", "10.1.1.1", "198.51.100.1", "102").contains(":3: permit"));
}

#[test]
fn user_list_files_written_with_commas_deny_as_before() {
    let dir = TempDir::shared("classic-commas");
    std::fs::write(format!("{dir}/banned"), "mallory,trudy\teve, oscar\n").unwrap();
    let conf = dir.write(
        "sockd.conf",
        &format!("deny *={dir}/banned 0.0.0.0 0.0.0.0\npermit 127.0.0.0 255.0.0.0\n"),
    );
    assert!(warnings_of(&conf).is_empty());
    for user in ["mallory", "trudy", "eve", "oscar"] {
        let (code, log) = connect_as(&conf, user);
        assert_eq!(code, 0x5B, "{user}: {log}");
        assert!(line(&log, "decision").contains(&format!("rule={conf}:1 ")), "{log}");
    }
    assert_eq!(connect_as(&conf, "alice").0, 0x5A);
}

fn connect_as(conf: &str, user: &str) -> (u8, String) {
    let dst = echo_dest();
    let args = ["--ident", "off", "--log-stderr", "-f", conf];
    let e = one_request(&args, &connect_req(dst.addr, user.as_bytes()), |_| {});
    (e.code(), e.log)
}

// The differential test.

/// CSTC sockd's rule loop, written from its published behaviour: the
/// sockd.conf(5) manual and the account of its limits in the issue that
/// asked for this test (lines read 1022 bytes at a time, each piece a line;
/// at most 8 fields, the 8th keeping the rest of the line; the command
/// after the first ':', a comment after the first '#', whichever comes
/// first; host names and inet_addr forms in address fields, anything else
/// 255.255.255.255; a port's service name, else its leading digits; ?=
/// read by its first letter; an empty *= for any user; user-list files
/// split on blanks, commas and tabs). It answers which line decides a
/// request (sockd's own line count) and whether it permits, and the file
/// line that piece came from.
mod sockd {
    use super::*;

    pub struct World {
        pub files: HashMap<String, String>,
        pub hosts: HashMap<String, Ipv4Addr>,
        pub services: HashMap<String, u16>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Verdict {
        pub line: usize,
        pub file_line: usize,
        pub permit: bool,
    }

    fn space(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
    }

    /// The file in the pieces sockd read: up to and including a newline,
    /// at most 1022 bytes; with the file line each piece starts on.
    fn pieces(text: &[u8]) -> Vec<(&[u8], usize)> {
        let mut out = Vec::new();
        let (mut rest, mut file_line) = (text, 1);
        while !rest.is_empty() {
            let take = match rest.iter().position(|&b| b == b'\n') {
                Some(p) if p < 1022 => p + 1,
                _ => rest.len().min(1022),
            };
            out.push((&rest[..take], file_line));
            if rest[take - 1] == b'\n' {
                file_line += 1;
            }
            rest = &rest[take..];
        }
        out
    }

    /// At most 8 fields; the 8th keeps the rest, blanks and all.
    fn fields(s: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() && space(s[i]) {
            i += 1;
        }
        while i < s.len() {
            if out.len() == 7 {
                out.push(&s[i..]);
                break;
            }
            let start = i;
            while i < s.len() && !space(s[i]) {
                i += 1;
            }
            out.push(&s[start..i]);
            while i < s.len() && space(s[i]) {
                i += 1;
            }
        }
        out
    }

    extern "C" {
        /// The C library's own reading of a numeric address.
        fn inet_aton(cp: *const std::ffi::c_char, inp: *mut nix::libc::in_addr) -> std::ffi::c_int;
    }

    /// A host name, or what inet_addr makes of the field; else all ones.
    fn address(w: &World, f: &[u8]) -> u32 {
        let name = String::from_utf8_lossy(f);
        if let Some(ip) = w.hosts.get(name.as_ref()) {
            return u32::from(*ip);
        }
        let Ok(c) = CString::new(f) else { return u32::MAX };
        let mut a = nix::libc::in_addr { s_addr: 0 };
        // SAFETY: `c` is NUL-terminated and `a` is a valid in_addr.
        if unsafe { inet_aton(c.as_ptr(), &mut a) } != 0 {
            u32::from_be(a.s_addr)
        } else {
            u32::MAX
        }
    }

    /// The service's port, else the field's leading digits; `None`
    /// ("Invalid port number") when neither gives a port below 65536.
    fn port(w: &World, f: &[u8]) -> Option<u16> {
        if let Some(&p) = w.services.get(String::from_utf8_lossy(f).as_ref()) {
            return Some(p);
        }
        if !f.first()?.is_ascii_digit() {
            return None;
        }
        let digits: String = f
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        digits.parse::<u64>().ok().filter(|&p| p < 65536).map(|p| p as u16)
    }

    fn op(f: &[u8]) -> Option<fn(u16, u16) -> bool> {
        Some(match f {
            b"eq" => |a, b| a == b,
            b"neq" => |a, b| a != b,
            b"lt" => |a, b| a < b,
            b"gt" => |a, b| a > b,
            b"le" => |a, b| a <= b,
            b"ge" => |a, b| a >= b,
            _ => return None,
        })
    }

    /// Whether `user` is in the comma-separated `list`; a file that cannot
    /// be read ends the search with no match.
    fn user_in(w: &World, list: &[u8], user: &str) -> bool {
        for item in list.split(|&b| b == b',') {
            let item = String::from_utf8_lossy(item);
            if item.starts_with('/') {
                let Some(text) = w.files.get(item.as_ref()) else {
                    return false;
                };
                for l in text.lines() {
                    let l = l.split('#').next().unwrap_or_default();
                    if l.split([' ', ',', '\t']).any(|u| !u.is_empty() && u == user) {
                        return true;
                    }
                }
            } else if item == user {
                return true;
            }
        }
        false
    }

    pub fn decide(w: &World, text: &[u8], user: &str, src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Option<Verdict> {
        for (n, (piece, file_line)) in pieces(text).into_iter().enumerate() {
            let piece = piece.strip_suffix(b"\n").unwrap_or(piece);
            let body = match piece.iter().position(|&b| b == b':' || b == b'#') {
                Some(p) => &piece[..p],
                None => piece,
            };
            let f = fields(body);
            if f.len() < 3 {
                continue;
            }
            let permit = match f[0] {
                b"permit" => true,
                b"deny" => false,
                _ => continue,
            };
            let mut i = 1;
            if f[i].starts_with(b"?=") {
                if !matches!(f[i].get(2), None | Some(b'I' | b'i' | b'n')) {
                    continue;
                }
                i += 1;
            }
            let mut users = None;
            if f[i].starts_with(b"*=") {
                if f[i].len() > 2 {
                    users = Some(&f[i][2..]);
                }
                i += 1;
            }
            if f.len() <= i + 1 {
                continue;
            }
            let (saddr, smask) = (address(w, f[i]), address(w, f[i + 1]));
            i += 2;
            let (mut daddr, mut dmask) = (0, 0);
            if f.len() > i + 1 && op(f[i]).is_none() {
                (daddr, dmask) = (address(w, f[i]), address(w, f[i + 1]));
                i += 2;
            }
            let mut test = None;
            if f.len() > i + 1 {
                let (Some(cmp), Some(p)) = (op(f[i]), port(w, f[i + 1])) else {
                    continue;
                };
                test = Some((cmp, p));
            }
            if u32::from(src) & smask == saddr & smask
                && u32::from(dst) & dmask == daddr & dmask
                && users.is_none_or(|l| user_in(w, l, user))
                && test.is_none_or(|(cmp, p)| cmp(dport, p))
            {
                return Some(Verdict {
                    line: n + 1,
                    file_line,
                    permit,
                });
            }
        }
        None
    }
}

/// xorshift64*: a fixed sequence per seed, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const ADDRS: &[&str] = &[
    "10.0.0.0",
    "10.1.2.3",
    "10.1",
    "010.0.0.1",
    "0x0a.0.0.1",
    "167772161",
    "0.0.0.0",
    "192.168.1.0",
    "127.0.0.1",
    "localhost",
    "8.0.0.0",
    "10.0.0.254",
];
const MASKS: &[&str] = &[
    "255.255.255.255",
    "255.0.0.0",
    "255.255.0.0",
    "0.0.0.0",
    "0",
    "255.255.255.0",
    "0xffffff00",
    "0.0.0.255",
    "255.255",
];
const OPS: &[&str] = &["eq", "neq", "lt", "gt", "le", "ge"];
const PORTS: &[&str] = &[
    "23", "telnet", "80", "http", "www", "1023", "23abc", "8080x", "21", "0", "65535",
];
const TRAILERS: &[&str] = &[
    "",
    "",
    "",
    " ",
    "\t",
    " # comment",
    "# c",
    " : echo x",
    ": echo x",
    " :: echo x",
    " :",
    " : /bin/echo %u",
];
const OTHER_LINES: &[&str] = &[
    "",
    "   ",
    "# a comment",
    "#NO_IDENTD: echo no identd on %A",
    "#BAD_ID:",
    "#NO_IDENTD:",
    "#BAD_ID:: logger x",
];

fn separator(r: &mut Rng) -> &'static str {
    [" ", " ", "\t", "  ", " \t "][r.below(5)]
}

/// One classic rule line, valid for both readings.
fn rule_line(r: &mut Rng, users_file: &str) -> String {
    let users_a = format!("*={users_file}");
    let users_b = format!("*=erin,{users_file}");
    let mut f: Vec<String> = vec![r.pick(&["permit", "deny"]).into()];
    if r.chance(35) {
        f.push(r.pick(&["?=I", "?=i", "?=n", "?=", "?=Ident", "?=no", "?=iI"]).into());
    }
    if r.chance(40) {
        f.push(
            r.pick(&["*=", "*=alice", "*=alice,bob", "*=carol", &users_a, &users_b])
                .into(),
        );
    }
    f.push(r.pick(ADDRS).into());
    f.push(r.pick(MASKS).into());
    let has_dst = r.chance(50);
    if has_dst {
        f.push(r.pick(ADDRS).into());
        f.push(r.pick(MASKS).into());
    }
    let has_port = r.chance(55);
    if has_port {
        f.push(r.pick(OPS).into());
        f.push(r.pick(PORTS).into());
    }
    if r.chance(12) {
        // Left over after a complete rule: any number after a port test,
        // else one (two would be a destination).
        let n = if has_port { 1 + r.below(2) } else { 1 };
        for _ in 0..n {
            f.push(r.pick(&["x", "extra", "10.0.0.1", "eq", "23", "telnet"]).into());
        }
    }
    let mut seps: Vec<String> = (1..f.len()).map(|_| separator(r).to_string()).collect();
    let trailer = r.pick(TRAILERS);
    let lead = if r.chance(10) { separator(r) } else { "" };
    let mut pad_after = String::new();
    // A line of 1022 or 1023 bytes, padded before its last field or after
    // it: the lengths at which sockd read it in two pieces.
    if r.chance(4) {
        let target = 1022 + r.below(2);
        let len = lead.len() + f.iter().map(String::len).sum::<usize>() + seps.iter().map(String::len).sum::<usize>();
        let pad = " ".repeat(target.saturating_sub(len + trailer.len()).max(1));
        if r.chance(50) {
            *seps.last_mut().unwrap() = pad;
        } else {
            pad_after = pad;
        }
    }
    let mut line = lead.to_string();
    for (i, field) in f.iter().enumerate() {
        if i > 0 {
            line.push_str(&seps[i - 1]);
        }
        line.push_str(field);
    }
    line.push_str(&pad_after);
    line.push_str(trailer);
    line
}

fn classic_file(r: &mut Rng, users_file: &str) -> String {
    let mut text = String::new();
    for _ in 0..1 + r.below(8) {
        if r.chance(20) {
            text.push_str(r.pick(OTHER_LINES));
        } else {
            text.push_str(&rule_line(r, users_file));
        }
        text.push('\n');
    }
    text
}

const USERS_TEXT: &str = "alice, bob\tdave\n# carol\n";
const REQ_USERS: &[&str] = &["alice", "bob", "carol", "dave", "erin", ""];
const REQ_IPS: &[&str] = &[
    "10.0.0.1",
    "10.1.2.3",
    "8.0.0.1",
    "127.0.0.1",
    "10.0.0.254",
    "192.168.1.7",
    "10.0.0.0",
    "1.2.3.4",
];
const REQ_PORTS: &[u16] = &[21, 23, 80, 1023, 8080, 0, 22, 65535, 102];

#[test]
fn decisions_agree_with_a_model_of_sockds_rule_loop() {
    let files: usize = std::env::var("SOCKS4D_CLASSIC_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let seed: u64 = std::env::var("SOCKS4D_CLASSIC_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(13);
    const REQUESTS_PER_FILE: usize = 5;
    let dir = TempDir::shared("classic-diff");
    let users_file = format!("{dir}/users");
    std::fs::write(&users_file, USERS_TEXT).unwrap();
    let services_text = "telnet 23/tcp\nhttp 80/tcp www\n";
    let world = sockd::World {
        files: HashMap::from([(users_file.clone(), USERS_TEXT.to_string())]),
        hosts: HashMap::from([("localhost".to_string(), Ipv4Addr::LOCALHOST)]),
        services: HashMap::from([("telnet".into(), 23), ("http".into(), 80), ("www".into(), 80)]),
    };
    let lookups = rules::Fixed::default()
        .file(&users_file, USERS_TEXT)
        .host("localhost", &[Ipv4Addr::LOCALHOST]);

    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let (mut cases, mut agree) = (0usize, 0usize);
    let mut differing: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kinds_seen: HashMap<NoteKind, usize> = HashMap::new();
    let mut to_check: Vec<(String, Vec<usize>)> = Vec::new();
    for _ in 0..files {
        let text = classic_file(&mut r, &users_file);
        let checked = rules::check(
            text.as_bytes(),
            "diff.conf",
            rules::Services::parse(services_text.as_bytes()),
            &mut lookups.clone(),
        );
        let loaded = match checked.loaded {
            Ok(l) => l,
            Err(e) => panic!("socks4d refused a valid classic file: {e:?}\n{text}"),
        };
        for n in &checked.notes {
            *kinds_seen.entry(n.kind).or_default() += 1;
        }
        let sockd_notes: Vec<usize> = checked
            .notes
            .iter()
            .filter(|n| n.kind.sockd_differs())
            .map(|n| n.line)
            .collect();
        let mut file_differs = false;
        for _ in 0..REQUESTS_PER_FILE {
            let user = r.pick(REQ_USERS);
            let src: Ipv4Addr = r.pick(REQ_IPS).parse().unwrap();
            let dst: Ipv4Addr = r.pick(REQ_IPS).parse().unwrap();
            let port = REQ_PORTS[r.below(REQ_PORTS.len())];
            cases += 1;
            let ours = rules::decide(
                &loaded,
                &rules::Facts {
                    user: user.as_bytes(),
                    src: src.into(),
                    dst: dst.into(),
                    port,
                    name: None,
                },
            )
            .rule
            .map(|rule| (rule.line, rule.action == rules::Action::Permit));
            let theirs = sockd::decide(&world, text.as_bytes(), user, src, dst, port);
            if ours == theirs.map(|v| (v.line, v.permit)) {
                agree += 1;
                continue;
            }
            // Every difference must come from a line --check-config warns
            // about as one where sockd behaved otherwise, at or before the
            // lines that decided.
            let last = ours
                .map(|o| o.0)
                .max(theirs.map(|v| v.file_line))
                .filter(|_| ours.is_some() && theirs.is_some())
                .unwrap_or(usize::MAX);
            let explained: Vec<&rules::Note> = checked
                .notes
                .iter()
                .filter(|n| n.kind.sockd_differs() && n.line <= last)
                .collect();
            assert!(
                !explained.is_empty(),
                "undocumented difference for {user:?} {src} -> {dst}:{port}: socks4d {ours:?}, sockd {theirs:?}\n{text}\nnotes: {:#?}",
                checked.notes
            );
            for n in explained {
                *differing
                    .entry(match n.kind {
                        NoteKind::NineFields => "nine fields",
                        NoteKind::EighthFieldService => "8th-field service",
                        _ => "long line",
                    })
                    .or_default() += 1;
            }
            file_differs = true;
        }
        if file_differs && to_check.len() < 40 {
            to_check.push((text, sockd_notes));
        }
    }
    eprintln!(
        "{cases} cases over {files} files: {agree} agree ({:.1}%); differences by documented class: {differing:?}",
        100.0 * agree as f64 / cases as f64
    );
    // The generator reaches every form and every class.
    for kind in [
        NoteKind::NineFields,
        NoteKind::EighthFieldService,
        NoteKind::LongLine,
        NoteKind::EmptyUsers,
        NoteKind::IdentLetters,
        NoteKind::HostName,
        NoteKind::InetAton,
        NoteKind::PortDigits,
        NoteKind::EmptyCommand,
        NoteKind::EmptyHook,
        NoteKind::DoubleColon,
        NoteKind::ExtraFields,
    ] {
        assert!(kinds_seen.contains_key(&kind), "the generator never produced {kind:?}");
    }
    assert_eq!(differing.len(), 3, "{differing:?}");
    assert!(agree * 100 >= cases * 90, "{agree} of {cases}");

    // The real --check-config names those lines, on files of the same kind.
    for (i, (text, lines)) in to_check.iter().enumerate() {
        let conf = format!("{dir}/differs-{i}.conf");
        std::fs::write(&conf, text).unwrap();
        let w = warnings_of(&conf);
        for n in lines {
            assert!(
                w.iter().any(|l| l.starts_with(&format!("{conf}:{n}: warning: "))),
                "line {n} not warned about:\n{text}\n{w:#?}"
            );
        }
    }
}
