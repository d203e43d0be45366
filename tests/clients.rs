//! What socks4d.conf(5)'s CLIENTS section says of each client, seen from
//! socks4d: the real programs (curl, OpenBSD nc, socat and ncat run by
//! ssh as its ProxyCommand, git over HTTP and git://, a Java client, headless
//! Chromium and Firefox) go through `socks4d --listen --ident off
//! --log-stderr`, and each test reads the decision line's `user=` (the
//! user-id the client sent) and `host=` (the name it asked for, SOCKS4a,
//! or `-` when it resolved the name itself).

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long one client run may take (a browser's start included).
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// `socks4d --listen` on a loopback port with rules that permit loopback
/// clients to loopback destinations, its lines going to a file.
struct Proxy {
    _guard: Guard,
    addr: SocketAddr,
    log: PathBuf,
    _tmp: TempDir,
}

impl Proxy {
    fn start(tag: &str, extra: &[&str]) -> Proxy {
        let tmp = TempDir::new(tag);
        let log = tmp.0.join("socks4d.log");
        let rules = tmp.0.join("socks4d.conf");
        fs::write(&rules, "permit 127.0.0.0/8 127.0.0.0/8\ndeny 0/0\n").unwrap();
        let mut args = vec!["--log-stderr", "-f", rules.to_str().unwrap()];
        if !extra.iter().any(|a| a.starts_with("--ident") || *a == "-I") {
            args.extend(["--ident", "off"]);
        }
        args.extend(extra);
        let file = fs::File::create(&log).unwrap();
        let (guard, addr) = spawn_listen_with(&args, |cmd| {
            cmd.stderr(file);
        });
        Proxy {
            _guard: guard,
            addr,
            log,
            _tmp: tmp,
        }
    }

    /// The decision lines so far.
    fn decisions(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("]: decision "))
            .map(String::from)
            .collect()
    }

    /// Waits for the decision line of a request for `dst`, and returns
    /// it; panics with every line when none comes.
    fn decision_for(&self, dst: SocketAddr) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .decisions()
                .into_iter()
                .find(|l| l.contains(&format!(" dst={dst} ")))
            {
                return l;
            }
            assert!(
                start.elapsed() < IO_TIMEOUT,
                "no decision for {dst}:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `socks4a://USER@ADDR` or `socks4://ADDR`, as curl and git take it.
    fn url(&self, scheme: &str, user: Option<&str>) -> String {
        match user {
            Some(u) => format!("{scheme}://{u}@{}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }
}

/// The value of `key` in an audit line: a quoted value with its quotes, or
/// the bare word.
fn field(line: &str, key: &str) -> String {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        + key.len()
        + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut end = 0;
        let bytes = quoted.as_bytes();
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        format!("\"{}\"", &quoted[..end])
    } else {
        rest.split(' ').next().unwrap().to_string()
    }
}

/// Asserts the user-id and the SOCKS4a name a decision line shows, and
/// that the request was granted.
fn assert_sent(line: &str, user: &str, host: &str) {
    assert_eq!(field(line, "user"), format!("\"{user}\""), "user-id in {line}");
    let want_host = if host == "-" {
        "-".to_string()
    } else {
        format!("\"{host}\"")
    };
    assert_eq!(field(line, "host"), want_host, "host in {line}");
    assert_eq!(field(line, "reply"), "5a", "{line}");
}

fn run(cmd: &mut Command) -> Output {
    run_with_input(cmd, Vec::new(), CLIENT_LIMIT)
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The address `localhost:PORT` names, for a server on 127.0.0.1.
fn by_name(addr: SocketAddr) -> String {
    format!("localhost:{}", addr.port())
}

const BODY: &[u8] = b"through socks4d\n";

#[test]
fn curl_sends_the_user_of_its_proxy_url_and_asks_by_name_with_socks4a() {
    if !require("curl") {
        return;
    }
    let web = http_server(BODY.to_vec());
    let by_address = format!("http://{web}/");
    let by_name = format!("http://{}/", by_name(web));
    // (arguments, ALL_PROXY, the user-id sent, the host sent); PROXY is the
    // proxy's address, NAME and ADDRESS the destination's URL.
    let cases: &[(&[&str], Option<&str>, &str, &str)] = &[
        (&["--socks4", "PROXY", "NAME"], None, "", "-"),
        (&["--socks4a", "PROXY", "NAME"], None, "", "localhost"),
        (&["-x", "socks4a://alice@PROXY", "NAME"], None, "alice", "localhost"),
        (&["-x", "socks4://bob@PROXY", "NAME"], None, "bob", "-"),
        (
            &["--proxy-user", "carol:", "--socks4a", "PROXY", "NAME"],
            None,
            "carol",
            "localhost",
        ),
        (&["NAME"], Some("socks4a://dave@PROXY"), "dave", "localhost"),
        (&["--socks4", "PROXY", "ADDRESS"], None, "", "-"),
    ];
    for (args, all_proxy, user, host) in cases {
        let proxy = Proxy::start("curl", &[]);
        let p = proxy.addr.to_string();
        let fill = |a: &str| {
            a.replace("PROXY", &p)
                .replace("NAME", &by_name)
                .replace("ADDRESS", &by_address)
        };
        let args: Vec<String> = args.iter().map(|a| fill(a)).collect();
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20"]).args(&args);
        cmd.env_remove("ALL_PROXY").env_remove("all_proxy");
        if let Some(v) = all_proxy {
            cmd.env("ALL_PROXY", fill(v));
        }
        let out = ok(&mut cmd);
        assert_eq!(out.stdout, BODY, "curl {args:?}");
        assert_sent(&proxy.decision_for(web), user, host);
    }
}

/// README's and socks4d(8)'s troubleshooting: with an identd running,
/// plain curl gets 93 (it sends an empty user-id) and curl given the login
/// name in the proxy URL is served. The client comes from a loopback
/// address of its own, where the real oidentd answers.
#[test]
fn curl_gets_93_from_an_identd_host_until_it_sends_the_login_name() {
    if !require("curl") || !require("oidentd") {
        return;
    }
    let Some(client_ip) = identd_address() else {
        return;
    };
    let _oidentd = oidentd(client_ip);

    let web = http_server(BODY.to_vec());
    let url = format!("http://{}/", by_name(web));
    let me = current_user();
    let proxy = Proxy::start("curl-ident", &["--ident", "required"]);
    let curl = |proxy_url: &str| {
        run(Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "--interface",
                &client_ip.to_string(),
                "-x",
                proxy_url,
            ])
            .arg(&url))
    };

    let out = curl(&proxy.url("socks4a", None));
    assert!(!out.status.success(), "curl with an empty user-id was served");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(93)"), "curl: {err}");
    let line = proxy.decision_for(web);
    assert_eq!(field(&line, "user"), "\"\"", "{line}");
    assert_eq!(field(&line, "reply"), "5d", "{line}");
    assert_eq!(field(&line, "ident"), format!("\"mismatch: {me}\""), "{line}");

    let proxy = Proxy::start("curl-ident", &["--ident", "required"]);
    let out = curl(&proxy.url("socks4a", Some(&me)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, BODY);
    let line = proxy.decision_for(web);
    assert_sent(&line, &me, "localhost");
    assert_eq!(field(&line, "ident"), "\"ok\"", "{line}");
}

/// A destination that accepts connections and closes them at once: ssh
/// gives up on it, after its ProxyCommand has made the request.
fn closing_server() -> SocketAddr {
    serve_each("127.0.0.1", drop)
}

/// Runs ssh to `localhost` port `dst` with `proxy_command`; ssh fails (the
/// destination is no ssh server), but its ProxyCommand has sent its
/// request by then. OpenBSD nc stays until ssh gives up waiting for the
/// server's banner, hence the short ConnectTimeout.
fn ssh_via(proxy_command: &str, dst: SocketAddr, env: &[(&str, &str)]) {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
    ])
    .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5"])
    .arg("-o")
    .arg(format!("ProxyCommand={proxy_command}"))
    .args(["-p", &dst.port().to_string(), "localhost", "true"]);
    cmd.env_remove("LOGNAME").env_remove("USER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert_eq!(
        out.status.code(),
        Some(255),
        "ssh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ssh_proxycommand_openbsd_nc_sends_an_empty_user_id_and_no_name() {
    if !require("ssh") {
        return;
    }
    let Some(nc) = require_program("netcat-openbsd", &["nc.openbsd"]) else {
        return;
    };
    let nc = nc.display().to_string();
    let dst = closing_server();
    let proxy = Proxy::start("ssh-nc", &[]);
    ssh_via(
        &format!("{nc} -X 4 -x {} %h %p", proxy.addr),
        dst,
        &[("LOGNAME", "alice")],
    );
    assert_sent(&proxy.decision_for(dst), "", "-");

    // -P names a user for HTTP CONNECT proxies only.
    let proxy = Proxy::start("ssh-nc", &[]);
    ssh_via(&format!("{nc} -X 4 -P alice -x {} %h %p", proxy.addr), dst, &[]);
    assert_sent(&proxy.decision_for(dst), "", "-");

    // It has no SOCKS4a.
    let out = run(Command::new(&nc).args(["-X", "4A", "-x", &proxy.addr.to_string(), "localhost", "1"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unsupported proxy protocol"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ssh_proxycommand_socat_sends_logname_and_asks_by_name() {
    if !require("ssh") || !require("socat") {
        return;
    }
    let dst = closing_server();
    for (env, user) in [
        (vec![("LOGNAME", "alice"), ("USER", "bob")], "alice"),
        (vec![("USER", "bob")], "bob"),
        (vec![], "anonymous"),
    ] {
        let proxy = Proxy::start("ssh-socat", &[]);
        let command = format!(
            "socat - SOCKS4A:{}:%h:%p,socksport={}",
            proxy.addr.ip(),
            proxy.addr.port()
        );
        ssh_via(&command, dst, &env);
        assert_sent(&proxy.decision_for(dst), user, "localhost");
    }
    // socksuser= names it outright.
    let proxy = Proxy::start("ssh-socat", &[]);
    let command = format!(
        "socat - SOCKS4A:{}:%h:%p,socksport={},socksuser=carol",
        proxy.addr.ip(),
        proxy.addr.port()
    );
    ssh_via(&command, dst, &[("LOGNAME", "alice")]);
    assert_sent(&proxy.decision_for(dst), "carol", "localhost");
}

#[test]
fn ssh_proxycommand_ncat_asks_by_name_and_sends_proxy_auth() {
    if !require("ssh") || !require("ncat") {
        return;
    }
    let dst = closing_server();
    for (auth, user) in [(None, ""), (Some("alice"), "alice")] {
        let proxy = Proxy::start("ssh-ncat", &[]);
        let auth = auth.map(|a| format!(" --proxy-auth {a}")).unwrap_or_default();
        ssh_via(
            &format!("ncat --proxy {} --proxy-type socks4{auth} %h %p", proxy.addr),
            dst,
            &[("LOGNAME", "bob")],
        );
        assert_sent(&proxy.decision_for(dst), user, "localhost");
    }
}

/// A static HTTP/1.0 file server on 127.0.0.1 for the files under `root`
/// (the query string ignored), enough for git's dumb HTTP protocol.
fn file_server(root: PathBuf) -> SocketAddr {
    serve_each("127.0.0.1", move |mut s| {
        let root = root.clone();
        thread::spawn(move || serve_file(&mut s, &root));
    })
}

fn serve_file(s: &mut TcpStream, root: &Path) {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let Some(head) = read_http_head(s) else { return };
    let path = head.split(' ').nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap().trim_start_matches('/');
    let file = (!path.split('/').any(|c| c == ".."))
        .then(|| fs::read(root.join(path)).ok())
        .flatten();
    let _ = match file {
        Some(body) => s
            .write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes())
            .and_then(|_| s.write_all(&body)),
        None => s.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    };
}

fn git_cmd(home: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", home)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("GIT_PROXY_COMMAND");
    cmd
}

#[test]
fn git_over_http_sends_the_user_of_http_proxy_given_an_empty_password() {
    if !require("git") {
        return;
    }
    let tmp = TempDir::new("git-http");
    let head = git_repo(&tmp.0);
    let web = file_server(tmp.0.clone());
    let url = format!("http://{}/r.git", by_name(web));

    let proxy = Proxy::start("git-http", &[]);
    let out = ok(git_cmd(&tmp.0)
        .args(["-c", &format!("http.proxy={}", proxy.url("socks4a", Some("alice:")))])
        .args(["ls-remote", &url]));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&head));
    assert_sent(&proxy.decision_for(web), "alice", "localhost");

    let proxy = Proxy::start("git-http", &[]);
    ok(git_cmd(&tmp.0)
        .args(["-c", &format!("http.proxy={}", proxy.url("socks4", None))])
        .args(["ls-remote", &url]));
    assert_sent(&proxy.decision_for(web), "", "-");

    // A user without a password: git asks for the proxy's password first.
    let proxy = Proxy::start("git-http", &[]);
    let out = run(git_cmd(&tmp.0)
        .args(["-c", &format!("http.proxy={}", proxy.url("socks4a", Some("alice")))])
        .args(["ls-remote", &url]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not read Password"), "{err}");
    // No request was made (the one line without a request is the test's
    // own check that the proxy listens).
    for line in proxy.decisions() {
        assert!(line.contains(" cmd=- dst=- "), "{line}");
    }
}

#[test]
fn git_protocol_through_a_proxy_command_that_runs_socat() {
    if !require("git") || !require("socat") {
        return;
    }
    let tmp = TempDir::new("git-daemon");
    let head = git_repo(&tmp.0);
    let (_daemon, dst) = git_daemon(&tmp.0);
    let port = dst.port();

    let script = tmp.0.join("socks4a-proxy");
    let url = format!("git://localhost:{port}/r.git");
    for how in ["GIT_PROXY_COMMAND", "core.gitProxy"] {
        let proxy = Proxy::start("git-daemon", &[]);
        // git runs it with the host and the port; the connection is its
        // standard input and output.
        socks4a_proxy_command(&script, proxy.addr);
        let mut cmd = git_cmd(&tmp.0);
        cmd.env("LOGNAME", "carol");
        if how == "GIT_PROXY_COMMAND" {
            cmd.env("GIT_PROXY_COMMAND", &script);
        } else {
            cmd.arg("-c").arg(format!("core.gitProxy={}", script.display()));
        }
        let out = ok(cmd.args(["ls-remote", &url]));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&head), "{how}");
        assert_sent(&proxy.decision_for(dst), "carol", "localhost");
    }
}

/// A Java client: through the proxy that the system properties name
/// (socksProxyHost, socksProxyPort, socksProxyVersion), to the host and
/// port given, as a resolved or an unresolved address; or, with
/// `selector`, what the default ProxySelector picks for two destinations.
const JAVA_CLIENT: &str = r#"
import java.io.InputStream;
import java.net.*;

public class Via {
    public static void main(String[] args) throws Exception {
        if (args[0].equals("selector")) {
            for (String uri : new String[] {"socket://localhost:80", "socket://192.0.2.1:80"}) {
                System.out.println(uri + " " + ProxySelector.getDefault().select(new URI(uri)));
            }
            return;
        }
        Proxy proxy = new Proxy(Proxy.Type.SOCKS, new InetSocketAddress(
            System.getProperty("socksProxyHost"), Integer.getInteger("socksProxyPort")));
        int port = Integer.parseInt(args[1]);
        InetSocketAddress dst = args.length > 2
            ? InetSocketAddress.createUnresolved(args[0], port)
            : new InetSocketAddress(args[0], port);
        try (Socket s = new Socket(proxy)) {
            s.connect(dst, 20000);
            s.getOutputStream().write("GET / HTTP/1.0\r\n\r\n".getBytes());
            s.getInputStream().transferTo(System.out);
        }
    }
}
"#;

#[test]
fn java_sends_user_name_and_resolves_names_itself() {
    if !require("java") {
        return;
    }
    let tmp = TempDir::new("java");
    let source = tmp.0.join("Via.java");
    fs::write(&source, JAVA_CLIENT).unwrap();
    let web = http_server(BODY.to_vec());
    let java = |proxy: &Proxy, props: &[&str], args: &[&str]| {
        run(Command::new("java")
            .arg(format!("-DsocksProxyHost={}", proxy.addr.ip()))
            .arg(format!("-DsocksProxyPort={}", proxy.addr.port()))
            .args(props)
            .arg(&source)
            .args(args)
            .env_remove("JAVA_TOOL_OPTIONS")
            .env_remove("JDK_JAVA_OPTIONS"))
    };
    let port = web.port().to_string();
    let v4 = "-DsocksProxyVersion=4";

    let proxy = Proxy::start("java", &[]);
    let out = java(&proxy, &[v4], &["localhost", &port]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.ends_with(BODY));
    assert_sent(&proxy.decision_for(web), &current_user(), "-");

    let proxy = Proxy::start("java", &[]);
    let out = java(&proxy, &[v4, "-Duser.name=alice"], &["localhost", &port]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_sent(&proxy.decision_for(web), "alice", "-");

    // An unresolved name is refused by Java itself under version 4.
    let proxy = Proxy::start("java", &[]);
    let out = java(&proxy, &[v4], &["localhost", &port, "unresolved"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UnknownHostException"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without socksProxyVersion=4 Java speaks SOCKS5, and is told no.
    let proxy = Proxy::start("java", &[]);
    let out = java(&proxy, &[], &["localhost", &port]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SOCKS : No acceptable methods"), "{err}");
    let lines = proxy.decisions();
    assert!(lines.iter().any(|l| l.contains("reason=bad-version")), "{lines:#?}");

    // The properties send loopback destinations past the proxy.
    let proxy = Proxy::start("java", &[]);
    let out = java(&proxy, &[v4], &["selector"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("socket://localhost:80 [DIRECT]"), "{said}");
    assert!(
        said.contains(&format!("socket://192.0.2.1:80 [SOCKS @ {}", proxy.addr.ip())),
        "{said}"
    );
}

#[test]
fn chromium_sends_socks4_with_an_empty_user_id() {
    if left_out(Slow::Browsers) {
        return;
    }
    let Some(chromium) = require_program("chromium", &["chromium"]) else {
        return;
    };
    let tmp = TempDir::new("chromium");
    let web = http_server(BODY.to_vec());
    let proxy = Proxy::start("chromium", &[]);
    let out = ok(Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update"])
        .args(["--disable-sync", "--disable-quic"])
        .arg(format!("--user-data-dir={}", tmp.0.join("profile").display()))
        .arg(format!("--proxy-server=socks4://{}", proxy.addr))
        // Chromium sends loopback destinations past any proxy unless told.
        .arg("--proxy-bypass-list=<-loopback>")
        .arg("--dump-dom")
        .arg(format!("http://{}/", by_name(web))));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("through socks4d"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_sent(&proxy.decision_for(web), "", "-");
}

/// Firefox's proxy preferences, and those that keep it from connecting
/// anywhere else while the test runs.
fn firefox_prefs(proxy: SocketAddr, remote_dns: bool) -> String {
    let mut prefs = vec![
        ("network.proxy.type", "1".to_string()),
        ("network.proxy.socks", format!("\"{}\"", proxy.ip())),
        ("network.proxy.socks_port", proxy.port().to_string()),
        ("network.proxy.socks_version", "4".into()),
        ("network.proxy.socks_remote_dns", remote_dns.to_string()),
        ("network.proxy.allow_hijacking_localhost", "true".into()),
        ("network.proxy.no_proxies_on", "\"\"".into()),
    ];
    for quiet in [
        "app.normandy.enabled",
        "app.update.auto",
        "browser.safebrowsing.malware.enabled",
        "browser.safebrowsing.phishing.enabled",
        "browser.safebrowsing.downloads.enabled",
        "browser.safebrowsing.blockedURIs.enabled",
        "browser.safebrowsing.update.enabled",
        "datareporting.policy.dataSubmissionEnabled",
        "datareporting.healthreport.uploadEnabled",
        "toolkit.telemetry.enabled",
        "extensions.update.enabled",
        "extensions.getAddons.cache.enabled",
        "network.captive-portal-service.enabled",
        "network.connectivity-service.enabled",
        "network.prefetch-next",
        "browser.newtabpage.enabled",
    ] {
        prefs.push((quiet, "false".into()));
    }
    for (empty, value) in [
        ("browser.region.network.url", "\"\""),
        ("geo.provider.network.url", "\"\""),
        ("media.gmp-manager.url", "\"\""),
        ("services.settings.server", "\"data:,#remote-settings-dummy/v1\""),
        ("app.update.disabledForTesting", "true"),
        ("network.dns.disablePrefetch", "true"),
        ("network.http.speculative-parallel-limit", "0"),
        ("browser.startup.homepage_override.mstone", "\"ignore\""),
    ] {
        prefs.push((empty, value.into()));
    }
    prefs
        .iter()
        .map(|(k, v)| format!("user_pref(\"{k}\", {v});\n"))
        .collect()
}

#[test]
fn firefox_sends_an_empty_user_id_and_asks_by_name_with_remote_dns() {
    if left_out(Slow::Browsers) {
        return;
    }
    let Some(firefox) = require_program("firefox-esr", &["firefox-esr", "firefox"]) else {
        return;
    };
    let web = http_server(BODY.to_vec());
    for (remote_dns, host) in [(true, "localhost"), (false, "-")] {
        let tmp = TempDir::new("firefox");
        let profile = tmp.0.join("profile");
        fs::create_dir_all(&profile).unwrap();
        let proxy = Proxy::start("firefox", &[]);
        fs::write(profile.join("user.js"), firefox_prefs(proxy.addr, remote_dns)).unwrap();
        ok(Command::new(&firefox)
            .arg("--headless")
            .arg("--profile")
            .arg(&profile)
            .arg("--screenshot")
            .arg(tmp.0.join("page.png"))
            .arg(format!("http://{}/", by_name(web)))
            .env("HOME", &tmp.0)
            // Lets services.settings.server above take effect.
            .env("MOZ_REMOTE_SETTINGS_DEVTOOLS", "1"));
        assert_sent(&proxy.decision_for(web), "", host);
    }
}
