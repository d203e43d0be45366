//! The Debian package, as an administrator uses it. `cargo deb` builds it
//! (the metadata in Cargo.toml; maintainer scripts, changelog and copyright
//! in systemd/debian/), lintian checks it, and in the booted container of
//! tests/container apt installs it, socks4d.socket and then
//! socks4d-listen.socket serve a download, each is upgraded to a rebuilt
//! package while a relay runs through it and the relay completes, and the
//! package is removed, then purged. In the same root without systemd, as
//! on an inetd host, it installs and the inetd line of its examples serves.
//!
//! Needs cargo-deb (`cargo install --locked cargo-deb`), lintian, and what
//! tests/systemd.rs needs (root, systemd-nspawn, debootstrap); skipped
//! with the reason when one is missing, except under CI=true. Under half a
//! minute once the release build and the container's root are there.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::container::{self, Container};

/// The binary the package holds: the static build (README, "Which
/// build"), as `cargo deb --target TRIPLE` makes it (README, Install,
/// names the same); `None` would be cargo-deb's `target/release/socks4d`,
/// the glibc build.
const DEB_TARGET: Option<&str> = Some("x86_64-unknown-linux-musl");

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The units' port, in the container.
const PROXY: &str = "127.0.0.1:1080";
const IO: Duration = Duration::from_secs(30);
/// The administrator's rules: loopback clients, without ident.
const RULES: &str = "# Loopback clients, without asking identd.\npermit ?=n 127.0.0.0/8\n";
/// What the third package adds to the shipped /etc/socks4d.conf, so that
/// its upgrade meets the administrator's edit (dpkg's prompt).
const CONFFILE_CHANGE: &str = "# A line the maintainer added in a later version.\n";
/// Where the packages are put in the containers.
const DEBS_IN: &str = "/srv/debs";

/// The packages of one build: `first` as `cargo deb` makes it, `second`
/// the same files at the next revision, `third` the revision after with
/// a changed /etc/socks4d.conf.
struct Packages {
    first: PathBuf,
    second: PathBuf,
    third: PathBuf,
}

/// Builds the packages once per run; `None` (a skip, or a failure under
/// CI) without cargo-deb.
fn packages() -> Option<&'static Packages> {
    static BUILT: OnceLock<Option<Packages>> = OnceLock::new();
    BUILT.get_or_init(build_packages).as_ref()
}

fn build_packages() -> Option<Packages> {
    if !require("cargo-deb") || !require("dpkg-deb") {
        return None;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| top().join("target"));
    let out = target.join("package-test");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let first = cargo_deb(&out, &[]);
    let second = cargo_deb(&out, &["--no-build", "--deb-revision", "2"]);
    let third = out.join(format!("socks4d_{VERSION}-3_amd64.deb"));
    repack_with_changed_conffile(&second, &third, &format!("{VERSION}-3"));
    Some(Packages { first, second, third })
}

/// `cargo deb` with `args`, into `out`; returns the package's path.
fn cargo_deb(out: &Path, args: &[&str]) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("deb").arg("--output").arg(out).args(args);
    if let Some(triple) = DEB_TARGET {
        cmd.args(["--target", triple]);
    }
    let run = cmd.current_dir(top()).output().expect("run cargo deb");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "cargo deb {args:?}: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let deb = PathBuf::from(stdout.lines().last().expect("cargo deb names the package").trim());
    assert!(deb.is_file(), "cargo deb wrote no {}", deb.display());
    deb
}

/// `from` unpacked, its /etc/socks4d.conf given one more line and its
/// version set to `version`, packed as `to`: a later release whose shipped
/// conffile changed.
fn repack_with_changed_conffile(from: &Path, to: &Path, version: &str) {
    let tree = to.with_extension("tree");
    let _ = std::fs::remove_dir_all(&tree);
    run_ok(Command::new("dpkg-deb").arg("-R").arg(from).arg(&tree));
    let conf = tree.join("etc/socks4d.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(CONFFILE_CHANGE);
    std::fs::write(&conf, text).unwrap();
    let control = tree.join("DEBIAN/control");
    let fields = std::fs::read_to_string(&control).unwrap();
    let fields: String = fields
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, fields).unwrap();
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(&tree)
            .arg(to),
    );
    std::fs::remove_dir_all(&tree).unwrap();
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// lintian's tags on the package, each one explained in README (Install):
/// none at the error level, and none the README does not name.
#[test]
fn lintian_reports_only_the_tags_the_readme_explains() {
    if left_out(Slow::Container) {
        return;
    }
    let Some(p) = packages() else { return };
    if !require("lintian") {
        return;
    }
    let out = Command::new("lintian")
        .args([
            "--pedantic",
            "--display-info",
            "--display-experimental",
            "--tag-display-limit",
            "0",
        ])
        .arg(&p.first)
        .output()
        .expect("run lintian");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian {}:\n{report}", p.first.display());
    let readme = std::fs::read_to_string(top().join("README.md")).unwrap();
    let mut tags = BTreeSet::new();
    for line in report.lines() {
        // "W: socks4d: tag-name [where]"
        let mut fields = line.splitn(3, ": ");
        let (Some(level), Some(_), Some(rest)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let tag = rest.split_whitespace().next().unwrap_or_default();
        assert_ne!(level, "E", "lintian error: {line}");
        tags.insert(tag.to_string());
    }
    for tag in &tags {
        assert!(
            readme.contains(&format!("`{tag}`")),
            "README does not explain lintian's {tag}:\n{report}"
        );
    }
}

/// Every crate linked into socks4d is named in the package's copyright
/// file, which carries their licences.
#[test]
fn copyright_names_every_crate_in_the_binary() {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "tree",
        "--locked",
        "-e",
        "normal,no-proc-macro",
        "--prefix",
        "none",
        "-f",
        "{p}",
    ])
    .current_dir(top());
    if let Some(triple) = DEB_TARGET {
        cmd.args(["--target", triple]);
    }
    let tree = run_ok(&mut cmd);
    let copyright = std::fs::read_to_string(top().join("systemd/debian/copyright")).unwrap();
    let named: BTreeSet<&str> = copyright
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("crate:"))
        .collect();
    let linked: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "socks4d")
        .collect();
    let missing: Vec<_> = linked.difference(&named).collect();
    assert!(missing.is_empty(), "systemd/debian/copyright lacks {missing:?}");
    assert!(linked.contains("nix"), "cargo tree listed: {tree}");
}

/// Puts the packages into the container, under [`DEBS_IN`]; returns their
/// paths there.
fn put_packages(c: &Container, p: &Packages) -> [String; 3] {
    std::fs::create_dir_all(c.host_path(DEBS_IN)).unwrap();
    [&p.first, &p.second, &p.third].map(|deb| {
        let name = deb.file_name().unwrap().to_string_lossy();
        let inside = format!("{DEBS_IN}/{name}");
        std::fs::copy(deb, c.host_path(&inside)).unwrap();
        inside
    })
}

/// Destinations in the container's network: a web server for curl, and
/// an echo server for the relays.
struct Servers {
    body: Vec<u8>,
    web: SocketAddr,
    echo: SocketAddr,
}

impl Servers {
    fn start(c: &Container) -> Servers {
        let body = payload(2 << 20, 77);
        let b = body.clone();
        let web = c.in_net(None, move || http_server(b));
        let echo = c.in_net(None, echo_server);
        Servers { body, web, echo }
    }
}

/// curl through `proxy` in the container's network, by name (SOCKS4a);
/// the file arrives byte for byte.
fn download(c: &Container, s: &Servers, proxy: &str) {
    let url = format!("http://localhost:{}/file", s.web.port());
    let out = c
        .net_cmd("curl")
        .args(["-sS", "--max-time", "30", "--proxy"])
        .arg(format!("socks4a://{proxy}"))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl via {proxy}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        checksum(&out.stdout),
        checksum(&s.body),
        "curl via {proxy}: bytes differ"
    );
}

/// A relay through the proxy to the echo server, held open: half of its
/// bytes go through before [`Relay::finish`], the rest after.
struct Relay {
    stream: TcpStream,
    port: u16,
    sent: Vec<u8>,
    got: Vec<u8>,
}

const RELAY_HALF: usize = 512 * 1024;

impl Relay {
    fn open(c: &Container, proxy: &str, echo: SocketAddr) -> Relay {
        let proxy: SocketAddr = proxy.parse().unwrap();
        let stream = c.in_net(None, move || TcpStream::connect(proxy).expect("connect to the proxy"));
        stream.set_read_timeout(Some(IO)).unwrap();
        stream.set_write_timeout(Some(IO)).unwrap();
        let port = stream.local_addr().unwrap().port();
        let mut r = Relay {
            stream,
            port,
            sent: Vec::new(),
            got: Vec::new(),
        };
        r.stream.write_all(&connect_req(echo, b"root")).unwrap();
        let mut reply = [0u8; 8];
        r.stream.read_exact(&mut reply).expect("a reply");
        assert_eq!(reply[1], 0x5A, "relay's CONNECT: {reply:02x?}");
        r.exchange(payload(RELAY_HALF, u64::from(port)));
        r
    }

    fn exchange(&mut self, data: Vec<u8>) {
        let mut w = self.stream.try_clone().unwrap();
        let d = data.clone();
        let writer = thread::spawn(move || w.write_all(&d).expect("send through the relay"));
        let mut back = vec![0u8; data.len()];
        self.stream.read_exact(&mut back).expect("the echo through the relay");
        writer.join().unwrap();
        self.sent.extend_from_slice(&data);
        self.got.extend_from_slice(&back);
    }

    /// Sends the second half, half-closes, reads to the end: every byte
    /// came back, in order.
    fn finish(mut self) -> (u16, usize) {
        self.exchange(payload(RELAY_HALF, u64::from(self.port) + 1));
        self.stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).expect("the relay's end");
        assert!(rest.is_empty(), "{} bytes more than were sent", rest.len());
        assert_eq!(checksum(&self.got), checksum(&self.sent), "the relay's bytes differ");
        (self.port, self.sent.len())
    }
}

/// The `end` audit line of the client at `port` names `bytes` each way.
fn relay_ended(c: &Container, port: u16, bytes: usize) {
    let client = format!("client=127.0.0.1:{port} ");
    let journal = c
        .wait_journal("socks4d", IO, |j| {
            j.lines().any(|l| l.starts_with("end ") && l.contains(&client))
        })
        .unwrap_or_else(|j| panic!("no end line for port {port}:\n{j}"));
    let end = journal
        .lines()
        .find(|l| l.starts_with("end ") && l.contains(&client))
        .unwrap();
    assert!(end.contains(&format!(" up={bytes} down={bytes} ")), "{end}");
}

fn trimmed(s: String) -> String {
    s.trim().to_string()
}

/// What `apt-get install` of the first package leaves, and what it does not
/// do: no unit enabled or started, nothing on port 1080.
fn installed(c: &Container) {
    assert_eq!(
        trimmed(c.sh_ok("dpkg-query -W -f '${db:Status-Abbrev}${Version}' socks4d")),
        format!("ii {VERSION}-1")
    );
    let files = c.sh_ok("dpkg -L socks4d");
    for f in [
        "/usr/sbin/socks4d",
        "/usr/share/man/man8/socks4d.8.gz",
        "/usr/share/man/man5/socks4d.conf.5.gz",
        "/usr/share/man/man5/socks4d.chain.5.gz",
        "/usr/lib/systemd/system/socks4d.socket",
        "/usr/lib/systemd/system/socks4d@.service",
        "/usr/lib/systemd/system/socks4d-listen.socket",
        "/usr/lib/systemd/system/socks4d-listen.service",
        "/usr/lib/sysusers.d/socks4d.conf",
        "/etc/socks4d.conf",
        "/usr/share/doc/socks4d/README.md",
        "/usr/share/doc/socks4d/copyright",
        "/usr/share/doc/socks4d/changelog.Debian.gz",
        "/usr/share/doc/socks4d/examples/inetd.conf",
        "/usr/share/doc/socks4d/examples/xinetd.d/socks4d",
        "/usr/share/doc/socks4d/examples/socks4d.conf",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} is not in the package:\n{files}");
        c.sh_ok(&format!("test -f {f}"));
    }
    assert_eq!(
        trimmed(c.sh_ok("/usr/sbin/socks4d --version")),
        format!("socks4d {VERSION}")
    );
    let conffiles = c.sh_ok("dpkg-query -W -f '${Conffiles}' socks4d");
    assert!(conffiles.contains("/etc/socks4d.conf "), "conffiles: {conffiles}");
    assert_eq!(
        trimmed(c.sh_ok("stat -c '%U:%G %a' /etc/socks4d.conf")),
        "root:root 644"
    );
    // The shipped rules are sound, and deny even loopback.
    c.sh_ok("/usr/sbin/socks4d --check-config -f /etc/socks4d.conf");
    let explain = c.sh_ok("/usr/sbin/socks4d --explain root 127.0.0.1 127.0.0.1 80 -f /etc/socks4d.conf");
    assert!(explain.contains("decision: deny"), "{explain}");
    the_user_is_there(c);
    for unit in ["socks4d.socket", "socks4d-listen.socket"] {
        assert_eq!(
            trimmed(c.sh_ok(&format!("systemctl is-enabled {unit} || true"))),
            "disabled",
            "{unit}"
        );
        assert_eq!(
            trimmed(c.sh_ok(&format!("systemctl is-active {unit} || true"))),
            "inactive",
            "{unit}"
        );
    }
    reloaded(c);
    nothing_listens(c);
}

/// The socks4d system user, with its group: home /nonexistent, no login
/// shell, the same whether systemd-sysusers or adduser made it.
fn the_user_is_there(c: &Container) {
    let entry = trimmed(c.sh_ok("getent passwd socks4d"));
    let fields: Vec<&str> = entry.split(':').collect();
    assert_eq!(fields.len(), 7, "{entry}");
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "not a system user: {entry}");
    // adduser adds the empty room and phone fields: ",,,".
    assert_eq!(fields[4].split(',').next(), Some("socks4d SOCKS4 proxy"), "{entry}");
    assert_eq!(fields[5], "/nonexistent", "{entry}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{entry}");
    c.sh_ok("getent group socks4d");
}

fn nothing_listens(c: &Container) {
    let addr: SocketAddr = PROXY.parse().unwrap();
    assert!(
        c.in_net(None, move || TcpStream::connect(addr).is_err()),
        "something accepts on {PROXY}"
    );
}

/// The socks4d@ instance of the connection from `port`, and its main
/// process.
fn the_instance(c: &Container, port: u16) -> (String, u32) {
    let units = c.sh_ok("systemctl list-units --no-legend --plain --state=active 'socks4d@*'");
    let suffix = format!("-127.0.0.1:{port}.service");
    let name = units
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|name| name.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no active instance for port {port}:\n{units}"))
        .to_string();
    let pid = main_pid(c, &name);
    (name, pid)
}

fn main_pid(c: &Container, unit: &str) -> u32 {
    let pid = trimmed(c.sh_ok(&format!("systemctl show -p MainPID --value {unit}")));
    let pid: u32 = pid.parse().unwrap();
    assert_ne!(pid, 0, "{unit} has no main process");
    pid
}

/// The process runs a binary that the upgrade has since replaced.
fn runs_the_old_binary(c: &Container, pid: u32) {
    let exe = trimmed(c.sh_ok(&format!("readlink /proc/{pid}/exe")));
    assert_eq!(exe, "/usr/sbin/socks4d (deleted)", "pid {pid}");
}

/// systemd has read the unit files the package installed.
fn reloaded(c: &Container) {
    for unit in ["socks4d.socket", "socks4d-listen.socket", "socks4d-listen.service"] {
        assert_eq!(
            trimmed(c.sh_ok(&format!("systemctl show -p NeedDaemonReload --value {unit}"))),
            "no",
            "{unit}"
        );
    }
}

fn conffile(c: &Container) -> String {
    c.sh_ok("cat /etc/socks4d.conf")
}

/// `apt-get install` of a package file in the container, with `answer`
/// on its standard input for dpkg's questions; returns what it printed.
fn apt_install(c: &Container, deb: &str, answer: &str) -> String {
    c.sh_ok(&format!("printf '{answer}' | apt-get install -y {deb} 2>&1"))
}

/// The paths on the container's root file system whose name has
/// "socks4d" in it (the packages put there left out).
fn named_socks4d(c: &Container) -> String {
    c.sh_ok(&format!(
        "find / -xdev -path {DEBS_IN} -prune -o -name '*socks4d*' -print | sort"
    ))
}

#[test]
fn apt_installs_upgrades_removes_and_purges_it_under_systemd() {
    if left_out(Slow::Container) {
        return;
    }
    let Some(p) = packages() else { return };
    let Some(c) = container::boot("socks4d-package-test") else {
        return;
    };
    let [first, second, third] = put_packages(&c, p);
    let s = Servers::start(&c);
    let before = named_socks4d(&c);

    apt_install(&c, &first, "");
    installed(&c);

    // The administrator writes rules, then picks the Accept=yes pair.
    c.sh_ok(&format!("printf '{RULES}' > /etc/socks4d.conf"));
    c.sh_ok("systemctl enable --now socks4d.socket");
    download(&c, &s, PROXY);

    // Upgrade to the next revision while a relay runs in its own instance.
    let relay = Relay::open(&c, PROXY, s.echo);
    let (instance, pid) = the_instance(&c, relay.port);
    let out = apt_install(&c, &second, "");
    assert_eq!(
        trimmed(c.sh_ok("dpkg-query -W -f '${Version}' socks4d")),
        format!("{VERSION}-2"),
        "{out}"
    );
    // The shipped file did not change, so dpkg keeps the edited one
    // without asking.
    assert!(!out.contains("Configuration file"), "{out}");
    assert_eq!(conffile(&c), RULES);
    assert!(c.sh("ls /etc/socks4d.conf.dpkg-*").stdout.is_empty());
    reloaded(&c);
    assert_eq!(trimmed(c.sh_ok("systemctl is-enabled socks4d.socket")), "enabled");
    assert_eq!(trimmed(c.sh_ok("systemctl is-active socks4d.socket")), "active");
    assert_eq!(trimmed(c.sh_ok(&format!("systemctl is-active {instance}"))), "active");
    assert_eq!(main_pid(&c, &instance), pid, "{instance} was restarted");
    runs_the_old_binary(&c, pid);
    let (port, bytes) = relay.finish();
    relay_ended(&c, port, bytes);
    download(&c, &s, PROXY);

    // The Accept=no pair: its upgrade, with a changed shipped conffile,
    // while a relay runs in one of socks4d-listen.service's handlers.
    c.sh_ok("systemctl disable --now socks4d.socket && systemctl enable --now socks4d-listen.socket");
    download(&c, &s, PROXY);
    let relay = Relay::open(&c, PROXY, s.echo);
    let service_pid = main_pid(&c, "socks4d-listen.service");
    // dpkg asks about /etc/socks4d.conf; "N" keeps the edited one.
    let out = apt_install(&c, &third, "N\\n");
    assert_eq!(
        trimmed(c.sh_ok("dpkg-query -W -f '${Version}' socks4d")),
        format!("{VERSION}-3"),
        "{out}"
    );
    assert!(
        out.contains("Configuration file '/etc/socks4d.conf'"),
        "no prompt:\n{out}"
    );
    assert!(
        out.contains(&format!("socks4d-listen.service still runs socks4d {VERSION}-2")),
        "{out}"
    );
    assert_eq!(conffile(&c), RULES);
    let dist = c.sh_ok("cat /etc/socks4d.conf.dpkg-dist");
    assert!(dist.ends_with(CONFFILE_CHANGE), "{dist}");
    reloaded(&c);
    assert_eq!(trimmed(c.sh_ok("systemctl is-active socks4d-listen.service")), "active");
    assert_eq!(
        main_pid(&c, "socks4d-listen.service"),
        service_pid,
        "socks4d-listen.service was restarted"
    );
    runs_the_old_binary(&c, service_pid);
    let (port, bytes) = relay.finish();
    relay_ended(&c, port, bytes);
    download(&c, &s, PROXY);

    // The administrator restarts it when it suits; then the new one runs.
    c.sh_ok("systemctl restart socks4d-listen.service");
    let pid = main_pid(&c, "socks4d-listen.service");
    assert_eq!(
        trimmed(c.sh_ok(&format!("readlink /proc/{pid}/exe"))),
        "/usr/sbin/socks4d"
    );
    download(&c, &s, PROXY);

    // Remove: socks4d stops serving and its files go, the configuration
    // and the user stay.
    c.sh_ok("apt-get remove -y socks4d 2>&1");
    eprintln!("after remove:\n{}", named_socks4d(&c));
    assert_eq!(trimmed(c.sh_ok("dpkg-query -W -f '${db:Status-Abbrev}' socks4d")), "rc");
    nothing_listens(&c);
    assert!(c.sh("pgrep -x socks4d").stdout.is_empty(), "socks4d still runs");
    let units = c.sh_ok("systemctl list-units --all --no-legend --plain 'socks4d*' | grep -v ' inactive ' || true");
    assert!(units.trim().is_empty(), "units left active: {units}");
    for gone in [
        "/usr/sbin/socks4d",
        "/usr/lib/systemd/system/socks4d.socket",
        "/usr/lib/systemd/system/socks4d@.service",
        "/usr/lib/systemd/system/socks4d-listen.socket",
        "/usr/lib/systemd/system/socks4d-listen.service",
        "/usr/share/man/man8/socks4d.8.gz",
        "/usr/share/doc/socks4d",
    ] {
        assert!(!c.sh(&format!("test -e {gone}")).status.success(), "{gone} is left");
    }
    assert_eq!(conffile(&c), RULES);
    c.sh_ok("test -f /etc/socks4d.conf.dpkg-dist");
    the_user_is_there(&c);

    // Purge: nothing of the package is left on the file system.
    c.sh_ok("apt-get purge -y socks4d 2>&1");
    assert!(
        !c.sh("dpkg-query -W socks4d").status.success(),
        "dpkg still knows socks4d"
    );
    assert_eq!(named_socks4d(&c), before, "what purge left");
    // The user stays, as Debian leaves system users: files it owns may
    // be anywhere (README, Install).
    the_user_is_there(&c);
}

/// Syslog for a root without a syslog daemon: the test reads the
/// datagrams sent to its /dev/log.
struct Syslog {
    lines: Arc<Mutex<String>>,
}

impl Syslog {
    fn bind(c: &Container) -> Syslog {
        c.sh_ok("rm -f /dev/log");
        let path = c.host_path("/dev/log");
        let sock = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        // socks4d sends as the inetd line's user, nobody.
        c.sh_ok("chmod 666 /dev/log");
        let lines = Arc::new(Mutex::new(String::new()));
        let l = lines.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = sock.recv(&mut buf) {
                let mut all = l.lock().unwrap();
                all.push_str(&String::from_utf8_lossy(&buf[..n]));
                all.push('\n');
            }
        });
        Syslog { lines }
    }

    /// Waits for a line containing every one of `words`; returns it.
    fn wait_for(&self, words: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let all = self.lines.lock().unwrap().clone();
            if let Some(l) = all.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return l.to_string();
            }
            assert!(start.elapsed() < IO, "no line with {words:?} in:\n{all}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn without_systemd_it_installs_and_the_inetd_example_serves() {
    if left_out(Slow::Container) {
        return;
    }
    let Some(p) = packages() else { return };
    let Some(c) = container::start_without_systemd("socks4d-package-inetd") else {
        return;
    };
    let [first, _, _] = put_packages(&c, p);
    assert!(!c.sh("test -d /run/systemd/system").status.success());
    // As on a host without systemd installed: no systemd-sysusers either,
    // so the postinst creates the user itself.
    c.sh_ok("mv /usr/bin/systemd-sysusers /usr/bin/systemd-sysusers.absent");
    let out = apt_install(&c, &first, "");
    assert_eq!(
        trimmed(c.sh_ok("dpkg-query -W -f '${db:Status-Abbrev}' socks4d")),
        "ii",
        "{out}"
    );
    the_user_is_there(&c);

    let log = Syslog::bind(&c);
    let s = Servers::start(&c);
    c.sh_ok(&format!("printf '{RULES}' > /etc/socks4d.conf"));
    // The active line of the installed example, as it stands: port 1080
    // ("socks"), socks4d as nobody.
    c.sh_ok(
        "grep -v '^#' /usr/share/doc/socks4d/examples/inetd.conf > /etc/inetd.conf && /usr/sbin/inetd /etc/inetd.conf",
    );
    let addr: SocketAddr = PROXY.parse().unwrap();
    let start = Instant::now();
    while c.in_net(None, move || TcpStream::connect(addr).is_err()) {
        assert!(start.elapsed() < IO, "inetd does not listen on {PROXY}");
        thread::sleep(Duration::from_millis(100));
    }
    download(&c, &s, PROXY);
    let dst = format!(" dst=127.0.0.1:{} ", s.web.port());
    log.wait_for(&["socks4d[", ": decision ", &dst, " reason=granted "]);
    // Whichever side closed first: curl, once it has the whole body, or
    // the web server.
    log.wait_for(&["socks4d[", ": end ", &dst, " relay=splice "]);
}
