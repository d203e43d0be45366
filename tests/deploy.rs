//! The deployment files, checked with the tools that consume them: the
//! systemd units with `systemd-analyze`, the man pages with `mandoc`,
//! install.sh into a staging directory, and the inetd and xinetd examples
//! under a real openbsd-inetd and a real xinetd serving curl downloads.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::*;

/// Options given to socks4d after the ones each test needs.
const SOCKS4D_ARGS: &[&str] = &["--ident", "off", "--log-stderr"];

/// The highest overall exposure `systemd-analyze security` may give the
/// long-running service unit, which systemd sandboxes once.
const MAX_EXPOSURE: f64 = 1.5;
const UNITS: [&str; 4] = [
    "socks4d.socket",
    "socks4d@.service",
    "socks4d-listen.socket",
    "socks4d-listen.service",
];
const PAGES: [&str; 3] = ["socks4d.8", "socks4d.conf.5", "socks4d.chain.5"];
/// How long a super-server's children get to exit after the last download.
const CHILDREN_EXIT: Duration = Duration::from_secs(20);

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Installs with install.sh into `destdir`, with the test binary.
fn install(destdir: &Path, prefix: Option<&str>) -> Output {
    let mut cmd = Command::new(top().join("install.sh"));
    cmd.env("DESTDIR", destdir).env("SOCKS4D_BIN", bin());
    match prefix {
        Some(p) => cmd.env("PREFIX", p),
        None => cmd.env_remove("PREFIX"),
    };
    let out = output(&mut cmd);
    assert!(out.status.success(), "install.sh: {}", text(&out));
    out
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The units, copied to `dir` with ExecStart pointed at the built binary,
/// since /usr/sbin/socks4d need not exist here.
fn units_for_test(dir: &Path) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|unit| {
            let original = fs::read_to_string(top().join("systemd").join(unit)).unwrap();
            let adapted = original.replace(
                "\nExecStart=/usr/sbin/socks4d",
                &format!("\nExecStart={}", bin().display()),
            );
            if unit.ends_with(".service") {
                assert_ne!(adapted, original, "{unit} has no ExecStart=/usr/sbin/socks4d");
            }
            let path = dir.join(unit);
            fs::write(&path, adapted).unwrap();
            path
        })
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !require("systemd-analyze") {
        return;
    }
    let tmp = TempDir::new("verify");
    let dir = tmp.0.join("units");
    fs::create_dir_all(&dir).unwrap();
    let units = units_for_test(&dir);
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    // verify checks each Documentation= page with man(1); let it find ours.
    if have("man") {
        let destdir = tmp.0.join("root");
        install(&destdir, None);
        cmd.env("MANPATH", destdir.join("usr/share/man"));
    } else {
        cmd.arg("--man=no");
    }
    let out = output(cmd.args(&units));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{}", text(&out));
    assert_eq!(text(&out).trim(), "", "systemd-analyze verify complained");
}

#[test]
fn listen_service_exposure_is_at_most_1_5() {
    if !require("systemd-analyze") {
        return;
    }
    let tmp = TempDir::new("security");
    let units = units_for_test(&tmp.0);
    let out = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&units[3]),
    );
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for socks4d-listen"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    let figure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
    eprintln!("{}", line.trim());
    assert!(figure <= MAX_EXPOSURE, "exposure {figure} > {MAX_EXPOSURE}:\n{report}");
    // The service must keep the network: no PrivateNetwork=, no IP deny
    // list, and the Internet address families allowed.
    for still_open in [
        "PrivateNetwork=",
        "IPAddressDeny=",
        "RestrictAddressFamilies=~AF_(INET|INET6)",
    ] {
        let l = report
            .lines()
            .find(|l| l.contains(still_open))
            .unwrap_or_else(|| panic!("{still_open} not in report"));
        assert!(l.trim_start().starts_with('✗'), "{still_open} is closed: {l}");
    }
}

/// The per-connection unit keeps only what systemd sets up without a mount
/// namespace or a compiled filter per instance (socks4d confines itself),
/// lets commands outlive socks4d, and bounds its tasks.
#[test]
fn per_connection_units_stay_cheap_and_never_trip_a_trigger_limit() {
    let service = fs::read_to_string(top().join("systemd/socks4d@.service")).unwrap();
    let active: Vec<&str> = service
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in [
        "ExitType=cgroup",
        "User=socks4d",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "NoNewPrivileges=yes",
        "TasksMax=32",
    ] {
        assert!(active.contains(&needed), "socks4d@.service lacks {needed}");
    }
    for costly in [
        "DynamicUser=",
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "PrivateDevices=",
        "PrivateUsers=",
        "PrivateIPC=",
        "ProtectProc=",
        "ProtectKernel",
        "ProtectControlGroups=",
        "SystemCallFilter=",
        "RestrictAddressFamilies=",
    ] {
        assert!(
            !active.iter().any(|l| l.starts_with(costly)),
            "socks4d@.service sets {costly}, which costs milliseconds per connection"
        );
    }
    let socket = fs::read_to_string(top().join("systemd/socks4d.socket")).unwrap();
    for needed in [
        "Accept=yes",
        "TriggerLimitIntervalSec=0",
        "MaxConnections=256",
        "MaxConnectionsPerSource=32",
    ] {
        assert!(
            socket.lines().any(|l| l.trim() == needed),
            "socks4d.socket lacks {needed}"
        );
    }
    let listen = fs::read_to_string(top().join("systemd/socks4d-listen.socket")).unwrap();
    assert!(listen.lines().any(|l| l.trim() == "Accept=no"));
}

#[test]
fn man_pages_are_lint_clean() {
    if !require("mandoc") {
        return;
    }
    // Run in man/, where mandoc also looks for the pages that .Xr names, so
    // that the two pages find each other.
    let lint = |level: Option<&str>| {
        let mut cmd = Command::new("mandoc");
        cmd.current_dir(top().join("man")).arg("-Tlint");
        if let Some(level) = level {
            cmd.arg(level);
        }
        output(cmd.args(PAGES))
    };
    // Everything up to warnings: must be silent.
    let out = lint(Some("-Wwarning"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out), "", "mandoc -Tlint -Wwarning");
    // Style too. The only messages allowed depend on the machine, not on
    // the pages: a page of another package that is not installed here, and
    // mandoc noting that it found a page without an up-to-date mandoc.db.
    let report = text(&lint(None));
    let outside = [
        "curl 1",
        "nc 1",
        "socat 1",
        "logger 1",
        "systemd 1",
        "systemd-nspawn 1",
        "syslog 3",
        "services 5",
        "systemd.socket 5",
        "inetd 8",
        "xinetd 8",
        "systemd-journald 8",
        "rsyslogd 8",
        "sshd 8",
        "nscd 8",
        "danted 8",
        "tinyproxy 8",
    ];
    for l in report
        .lines()
        .filter(|l| !l.starts_with("mandoc: outdated mandoc.db lacks "))
    {
        let page = l
            .split_once("STYLE: referenced manual not found: Xr ")
            .map(|(_, p)| p.split(" (").next().unwrap_or(p))
            .unwrap_or_else(|| panic!("mandoc -Tlint:\n{report}"));
        assert!(outside.contains(&page), "unexpected cross reference: {l}");
    }
}

#[test]
fn install_sh_stages_every_file() {
    let tmp = TempDir::new("install");
    let dest = tmp.0.join("stage");
    let out = install(&dest, None);
    assert_eq!(
        files_under(&dest),
        [
            "etc/socks4d.conf",
            "usr/lib/systemd/system/socks4d-listen.service",
            "usr/lib/systemd/system/socks4d-listen.socket",
            "usr/lib/systemd/system/socks4d.socket",
            "usr/lib/systemd/system/socks4d@.service",
            "usr/lib/sysusers.d/socks4d.conf",
            "usr/sbin/socks4d",
            "usr/share/doc/socks4d/examples/inetd.conf",
            "usr/share/doc/socks4d/examples/socks4d.conf",
            "usr/share/doc/socks4d/examples/xinetd.d/socks4d",
            "usr/share/man/man5/socks4d.chain.5",
            "usr/share/man/man5/socks4d.conf.5",
            "usr/share/man/man8/socks4d.8",
        ],
        "{}",
        text(&out)
    );
    let sbin = dest.join("usr/sbin/socks4d");
    assert_eq!(fs::read(&sbin).unwrap(), fs::read(bin()).unwrap());
    assert_eq!(fs::metadata(&sbin).unwrap().permissions().mode() & 0o777, 0o755);
    let version = output(Command::new(&sbin).arg("--version"));
    assert!(text(&version).starts_with("socks4d "), "{}", text(&version));
    for (staged, original) in [
        ("etc/socks4d.conf", "examples/socks4d.conf"),
        ("usr/share/man/man8/socks4d.8", "man/socks4d.8"),
        ("usr/share/man/man5/socks4d.conf.5", "man/socks4d.conf.5"),
        ("usr/share/man/man5/socks4d.chain.5", "man/socks4d.chain.5"),
        ("usr/lib/systemd/system/socks4d.socket", "systemd/socks4d.socket"),
        ("usr/lib/systemd/system/socks4d@.service", "systemd/socks4d@.service"),
        (
            "usr/lib/systemd/system/socks4d-listen.socket",
            "systemd/socks4d-listen.socket",
        ),
        (
            "usr/lib/systemd/system/socks4d-listen.service",
            "systemd/socks4d-listen.service",
        ),
        ("usr/lib/sysusers.d/socks4d.conf", "systemd/socks4d.sysusers"),
        ("usr/share/doc/socks4d/examples/inetd.conf", "examples/inetd.conf"),
        (
            "usr/share/doc/socks4d/examples/xinetd.d/socks4d",
            "examples/xinetd.d/socks4d",
        ),
        ("usr/share/doc/socks4d/examples/socks4d.conf", "examples/socks4d.conf"),
    ] {
        assert_eq!(
            fs::read(dest.join(staged)).unwrap(),
            fs::read(top().join(original)).unwrap(),
            "{staged}"
        );
        assert_eq!(
            fs::metadata(dest.join(staged)).unwrap().permissions().mode() & 0o777,
            0o644,
            "{staged}"
        );
    }

    // It ends by saying what to do next, in the installed system's paths:
    // the rules file denies everything until edited, how to check it, and
    // the ways to start it.
    let said = text(&out);
    for step in [
        "/etc/socks4d.conf denies every request, from loopback too",
        "/usr/sbin/socks4d --check-config -f /etc/socks4d.conf",
        "socks4d(8), DEPLOYMENT",
        "systemctl enable --now socks4d-listen.socket",
        "systemctl enable --now socks4d.socket",
        "/usr/share/doc/socks4d/examples/inetd.conf",
        "/usr/share/doc/socks4d/examples/xinetd.d/socks4d",
    ] {
        assert!(said.contains(step), "{step:?} not in:\n{said}");
    }
    let next = &said[said.find("\nNext:").unwrap_or_else(|| panic!("no Next: in:\n{said}"))..];
    assert!(
        !next.contains(dest.to_str().unwrap()),
        "DESTDIR in the next steps:\n{next}"
    );

    // An existing rules file is kept.
    fs::write(dest.join("etc/socks4d.conf"), "permit 10.0.0.0/8\n").unwrap();
    let again = install(&dest, None);
    assert_eq!(
        fs::read_to_string(dest.join("etc/socks4d.conf")).unwrap(),
        "permit 10.0.0.0/8\n"
    );
    assert!(text(&again).contains("exists"), "{}", text(&again));

    // Another PREFIX moves the binary and the units, and the service unit
    // names the binary where it went.
    let local = tmp.0.join("local");
    install(&local, Some("/usr/local"));
    assert!(local.join("usr/local/sbin/socks4d").is_file());
    assert!(local.join("usr/local/share/man/man8/socks4d.8").is_file());
    let unit = fs::read_to_string(local.join("usr/local/lib/systemd/system/socks4d@.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/local/sbin/socks4d\n"), "{unit}");
    assert!(local.join("etc/socks4d.conf").is_file());
}

#[test]
fn example_rules_file_denies_by_default() {
    let conf = fs::read_to_string(top().join("examples/socks4d.conf")).unwrap();
    let active: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(active, ["deny    0.0.0.0 0.0.0.0", "deny    ::/0"]);
}

/// A curl download of `body` through socks4d at `proxy`, by address and by
/// name, byte for byte.
fn downloads_match(proxy: SocketAddr, web: SocketAddr, body: &[u8]) {
    for (mode, host) in [("--socks4", "127.0.0.1"), ("--socks4a", "localhost")] {
        let got = curl_via(mode, proxy, &format!("http://{host}:{}/file", web.port()));
        assert_eq!(got.len(), body.len(), "{mode}");
        assert!(got == body, "{mode}: the download differs from the original");
    }
}

/// The active line of examples/inetd.conf, adapted: listen on
/// 127.0.0.1:port, run the test binary as `user`, with SOCKS4D_ARGS.
fn inetd_line(port: u16, user: &str) -> String {
    let example = fs::read_to_string(top().join("examples/inetd.conf")).unwrap();
    let line = example
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("an active line in examples/inetd.conf");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields,
        [
            "socks",
            "stream",
            "tcp",
            "nowait.1000000",
            "nobody",
            "/usr/sbin/socks4d",
            "socks4d"
        ]
    );
    let mut adapted = vec![
        format!("127.0.0.1:{port}"),
        fields[1].into(),
        fields[2].into(),
        fields[3].into(),
        user.into(),
        bin().display().to_string(),
        fields[6].into(),
    ];
    adapted.extend(SOCKS4D_ARGS.iter().map(|a| a.to_string()));
    adapted.join("\t") + "\n"
}

#[test]
fn openbsd_inetd_serves_the_example_line() {
    if !require("curl") {
        return;
    }
    let Some(inetd) = require_program("openbsd-inetd", &["inetd"]) else {
        return;
    };
    let tmp = TempDir::new("inetd");
    let port = free_port();
    let conf = tmp.0.join("inetd.conf");
    fs::write(&conf, inetd_line(port, &service_user())).unwrap();
    let log = fs::File::create(tmp.0.join("inetd.log")).unwrap();
    // inetd hands socks4d the connection as stderr too, so socks4d logs
    // to syslog, and serves nothing it cannot log: give inetd a /dev/log.
    if !require_root() {
        return;
    }
    let syslog = FakeSyslog::start();
    // -i: stay in the foreground.
    let mut cmd = Command::new(&inetd);
    cmd.arg("-i")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0);
    private_dev(&mut cmd, Some(&syslog.path));
    let child = cmd.spawn().expect("start inetd");
    let pid = child.id();
    let guard = Guard(child);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(proxy);

    let body = payload(3 << 20, 51);
    let web = http_server(body.clone());
    downloads_match(proxy, web, &body);
    // Both downloads went through syslog: a granted decision line each.
    syslog.wait_for(IO_TIMEOUT, |t| t.matches("reason=granted").count() == 2);

    // 1000 connections in about 2 s: past openbsd-inetd's default of 256
    // starts a minute, which would turn the service off for ten minutes.
    burst(proxy, echo_server(), Burst::OneAddress, Expect::All).check(Burst::OneAddress, Expect::All);
    downloads_match(proxy, web, &body);

    // Each socks4d inetd started has exited; then stop inetd itself.
    wait_no_children(pid, CHILDREN_EXIT);
    drop(guard);
    assert!(!alive(pid), "inetd {pid} survived");
    assert!(
        std::net::TcpStream::connect(proxy).is_err(),
        "{proxy} still accepts after inetd stopped"
    );
}

/// examples/xinetd.d/socks4d, adapted: an unlisted service on
/// 127.0.0.1:port running the test binary as `user` with SOCKS4D_ARGS.
fn xinetd_conf(port: u16, user: &str) -> String {
    let example = fs::read_to_string(top().join("examples/xinetd.d/socks4d")).unwrap();
    let mut out = String::new();
    let mut saw_server = false;
    for line in example.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match key {
            _ if line.trim_start().starts_with('#') => {}
            "service socks" => out.push_str("service socks4d-test\n"),
            "{" => {
                out.push_str("{\n");
                out.push_str(&format!("\ttype = UNLISTED\n\tport = {port}\n\tbind = 127.0.0.1\n"));
                out.push_str(&format!("\tserver_args = {}\n", SOCKS4D_ARGS.join(" ")));
            }
            "user" => out.push_str(&format!("\tuser = {user}\n")),
            "server" => {
                assert!(line.contains("/usr/sbin/socks4d"), "{line}");
                out.push_str(&format!("\tserver = {}\n", bin().display()));
                saw_server = true;
            }
            // Dual-stack listening does not go with bind = 127.0.0.1.
            "flags" => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(saw_server, "no server line in the xinetd example");
    out
}

#[test]
fn xinetd_serves_the_example_service() {
    if !require("curl") {
        return;
    }
    // xinetd and openbsd-inetd conflict as Debian packages; CI may unpack
    // xinetd under /opt/xinetd instead of installing it.
    let Some(xinetd) = require_program("xinetd", &["xinetd", "/opt/xinetd/usr/sbin/xinetd"]) else {
        return;
    };
    let tmp = TempDir::new("xinetd");
    let port = free_port();
    let conf = tmp.0.join("xinetd.conf");
    fs::write(&conf, xinetd_conf(port, &service_user())).unwrap();
    let log = fs::File::create(tmp.0.join("xinetd.log")).unwrap();
    // As under inetd, the connection is socks4d's stderr too: syslog.
    if !require_root() {
        return;
    }
    let syslog = FakeSyslog::start();
    let mut cmd = Command::new(&xinetd);
    cmd.arg("-dontfork")
        .arg("-f")
        .arg(&conf)
        .arg("-pidfile")
        .arg(tmp.0.join("xinetd.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0);
    private_dev(&mut cmd, Some(&syslog.path));
    let child = cmd.spawn().expect("start xinetd");
    let pid = child.id();
    let guard = Guard(child);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(proxy);

    let body = payload(3 << 20, 52);
    let web = http_server(body.clone());
    downloads_match(proxy, web, &body);
    syslog.wait_for(IO_TIMEOUT, |t| t.matches("reason=granted").count() == 2);

    // 1000 connections in about 2 s, held open: per_source and instances
    // decide how many are served, the rest are closed at once, and the
    // service stays on (xinetd's default cps would turn it off).
    let (hold, held) = holder();
    for (kind, served) in [(Burst::OneAddress, 32), (Burst::ManyAddresses, 256)] {
        burst(proxy, hold, kind, Expect::Served(served)).check(kind, Expect::Served(served));
        held.lock().unwrap().clear();
        wait_no_children(pid, CHILDREN_EXIT);
    }
    downloads_match(proxy, web, &body);

    wait_no_children(pid, CHILDREN_EXIT);
    drop(guard);
    assert!(!alive(pid), "xinetd {pid} survived");
    assert!(
        std::net::TcpStream::connect(proxy).is_err(),
        "{proxy} still accepts after xinetd stopped"
    );
}
