//! The variants measured: what each is, how it is started, and the
//! processes it runs as.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::account;
use crate::dests;
use crate::options::Opts;

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Direct,
    Inetd,
    Listen,
    Dante,
    Floor,
    /// socks4d with a rules file: per-connection figures only.
    Rules,
    /// Started by someone else: per-connection figures only.
    External,
    ExternalFloor,
}

impl Kind {
    /// Started by someone else: no process of ours to account.
    pub fn external(self) -> bool {
        matches!(self, Kind::External | Kind::ExternalFloor)
    }
}

pub struct Variant {
    pub name: &'static str,
    pub kind: Kind,
    /// Where clients connect; none for the direct connection.
    pub addr: Option<SocketAddr>,
    /// The launcher or server this run started.
    child: Option<Child>,
}

impl Drop for Variant {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Variant {
    /// The process this run started for the variant, the root of its tree.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The newest handler process under the variant's launcher.
    pub fn handler(&self) -> Option<u32> {
        let root = self.pid()?;
        account::tree(root).into_iter().filter(|&p| p != root).max()
    }
}

/// Every variant of this run: the direct connection, the external ones,
/// then (unless `--only-external`) those this client starts itself.
pub fn start(o: &Opts, dir: &Path) -> Vec<Variant> {
    let mut vars = vec![Variant {
        name: "direct",
        kind: Kind::Direct,
        addr: None,
        child: None,
    }];
    for (name, addr, floor) in &o.external {
        vars.push(Variant {
            name: leak(name.clone()),
            kind: if *floor { Kind::ExternalFloor } else { Kind::External },
            addr: Some(*addr),
            child: None,
        });
    }
    if !o.only_external {
        local(o, dir, &mut vars);
    }
    vars
}

/// Names live as long as the run.
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// The variants this client starts itself.
fn local(o: &Opts, dir: &Path, vars: &mut Vec<Variant>) {
    let up = |r: io::Result<Variant>, what: &str| match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("socks4d-bench: {what} not measured: {e}");
            None
        }
    };
    let builds = [
        Some(("socks4d-inetd", "socks4d-listen", &o.bin)),
        o.bin_static.as_ref().map(|b| ("static-inetd", "static-listen", b)),
    ];
    for (inetd, listen, bin) in builds.into_iter().flatten() {
        vars.extend(up(activate(inetd, Kind::Inetd, bin, &o.extra), inetd));
        let laddr = loopback();
        // Every bench client comes from 127.0.0.1: no per-source limit
        // below the 32 concurrent clients (and the children still ending).
        let mut listen_args = vec![
            "--listen".to_string(),
            laddr.to_string(),
            "--max-per-source".to_string(),
            "1000".to_string(),
        ];
        listen_args.extend(o.extra.iter().cloned());
        vars.extend(up(
            spawn(listen, Kind::Listen, Command::new(bin).args(&listen_args), laddr),
            listen,
        ));
    }
    if o.dante {
        vars.extend(up(dante(dir), "dante"));
    }
    vars.extend(up(activate("exec-floor", Kind::Floor, "/bin/cat", &[]), "exec floor"));
    if let Some(c) = &o.c_relay {
        vars.extend(up(activate("c-relay", Kind::Inetd, c, &[]), "c-relay"));
    }
    for &n in &o.rules {
        for frozen in [false, true] {
            let name = leak(format!("{}-{n}", if frozen { "frozen" } else { "rules" }));
            let made = rules_file(o, dir, n, frozen).and_then(|path| {
                let mut args = o.extra.clone();
                args.extend(["-f".to_string(), path]);
                activate(name, Kind::Rules, &o.bin, &args)
            });
            vars.extend(up(made, name));
        }
    }
}

/// A loopback address with a port free a moment ago.
fn loopback() -> SocketAddr {
    let port = dests::listener().local_addr().unwrap().port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn wait_up(addr: SocketAddr) -> io::Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, format!("{addr} never came up")))
}

/// Starts `cmd`, which will serve on `addr`, and waits until it does.
fn spawn(name: &'static str, kind: Kind, cmd: &mut Command, addr: SocketAddr) -> io::Result<Variant> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let v = Variant {
        name,
        kind,
        addr: Some(addr),
        child: Some(child),
    };
    wait_up(addr)?;
    Ok(v)
}

/// `prog` with `args` under `systemd-socket-activate --inetd`: one process
/// per connection, the socket on its stdin and stdout.
fn activate(name: &'static str, kind: Kind, prog: &str, args: &[String]) -> io::Result<Variant> {
    let addr = loopback();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["--inetd", "-a", "-l", &addr.to_string(), prog]).args(args);
    spawn(name, kind, &mut cmd, addr)
}

fn dante(dir: &Path) -> io::Result<Variant> {
    let addr = loopback();
    let port = addr.port();
    let conf = format!(
        "logoutput: stderr\n\
         internal: 127.0.0.1 port = {port}\n\
         external: 127.0.0.1\n\
         clientmethod: none\n\
         socksmethod: none\n\
         user.privileged: root\n\
         user.unprivileged: nobody\n\
         client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
         socks pass {{ from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }}\n"
    );
    let dir = dir.to_str().unwrap();
    let path = format!("{dir}/danted.conf");
    std::fs::write(&path, conf)?;
    let pid = format!("{dir}/danted.pid");
    spawn(
        "dante",
        Kind::Dante,
        Command::new("danted").args(["-f", &path, "-p", &pid]),
        addr,
    )
}

/// A rules file of `n` lines in `dir` (compiled when `frozen`): `n - 1`
/// lines in three forms that no bench request matches, then the permit
/// for loopback clients.
fn rules_file(o: &Opts, dir: &Path, n: usize, frozen: bool) -> io::Result<String> {
    let mut text = String::new();
    for i in 0..n.saturating_sub(1) {
        let (a, b, c) = ((i >> 16) & 255, (i >> 8) & 255, i & 255);
        let port = 1024 + i % 50_000;
        text += &match i % 3 {
            0 => format!("deny 10.{a}.{b}.{c} 255.255.255.255 192.0.2.0 255.255.255.0 eq {port}\n"),
            1 => format!("deny 10.{a}.{b}.{c}/32 198.51.100.0/24 ge {port}\n"),
            _ => format!("permit ?=n 10.{a}.{b}.{c} 255.255.255.255 eq 25\n"),
        };
    }
    text += "permit 127.0.0.0 255.0.0.0\n";
    let path = dir.join(format!("{}-{n}.conf", if frozen { "frozen" } else { "rules" }));
    std::fs::write(&path, text)?;
    let path = path.display().to_string();
    if frozen {
        let out = Command::new(&o.bin)
            .args(["--check-config", "--compile", "-f", &path])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "--compile {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(path)
}
