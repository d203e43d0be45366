//! socks4d: arguments, intake, exit status.
//!
//! `#![no_main]`: every connection starts a process, and std's runtime
//! start is work no connection needs; [`socks4d::start::prepare`] does the
//! part that matters (SIGPIPE, the standard descriptors). The arguments
//! are taken from `main`'s own `argv`: `std::env::args` is empty in a
//! static musl build, where std learns them only from its runtime start.

#![no_main]

use socks4d::audit::Log;
use socks4d::config::{self, Action, Config};
use socks4d::intake::{self, Found};
use socks4d::policy::Policy;
use socks4d::{confine, listen, privilege, route, rules, session};

/// Exit status after a setup error.
const EXIT_SETUP: u8 = 1;
/// Exit status after a usage error (EX_USAGE).
const EXIT_USAGE: u8 = 64;

const HOW_TO_RUN: &str = "socks4d: no client socket: inetd or a systemd socket unit starts it \
with one. To try it: socks4d --listen 127.0.0.1:1080 --ident off --log-stderr; to deploy it: \
socks4d(8), DEPLOYMENT (socks4d.socket, or the inetd.conf line \
`socks stream tcp nowait.1000000 nobody /usr/sbin/socks4d socks4d`)";

#[no_mangle]
// The C runtime is the only caller, with the arguments it was started with.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    socks4d::start::prepare();
    // SAFETY: the C runtime passes main argc NUL-terminated strings.
    let args = unsafe { socks4d::start::args(argc, argv) };
    std::ffi::c_int::from(run(args))
}

/// The program, given the arguments after its name; its exit status.
fn run(args: Result<Vec<String>, String>) -> u8 {
    let cfg = match args.and_then(config::parse_args) {
        Ok(Action::Serve(cfg)) => cfg,
        Ok(Action::CheckConfig(cfg)) => return check_config(&cfg),
        Ok(Action::Explain {
            cfg,
            user,
            src,
            dst,
            port,
        }) => return explain(&cfg, &user, &src, &dst, &port),
        Ok(Action::Help) => {
            println!("{}", config::HELP);
            return 0;
        }
        Ok(Action::Version) => {
            println!("socks4d {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Err(e) => {
            // Under inetd stderr may be the client's socket.
            if intake::socket_passed() {
                Log::syslog(syslog::Facility::LOG_DAEMON, config::DEFAULT_LOG_TIMEOUT)
                    .error(&format!("usage error: {e}"));
            } else {
                eprintln!("socks4d: {e} (see socks4d --help)");
            }
            return EXIT_USAGE;
        }
    };

    if !cfg.listen.is_empty() {
        return match listen::bind(&cfg) {
            Ok(listeners) => serve_listeners(&cfg, listeners, true),
            Err(e) => {
                let msg = format!("setup error: {e:#}");
                open_log(&cfg, true).error(&msg);
                if !cfg.log_stderr {
                    eprintln!("socks4d: {msg}");
                }
                EXIT_SETUP
            }
        };
    }

    match intake::find() {
        Found::Client(conn, stderr_was_client) => {
            let log = open_log(&cfg, !stderr_was_client);
            if cfg.max_children_given {
                log.error(
                    "setup error: --max-children and --max-per-source need --listen or a listening \
                     socket (Accept=no, inetd wait); here one connection was passed",
                );
                return EXIT_USAGE;
            }
            // Syslog is open and the rules and routes are read; drop root
            // (the child then confines itself) before reading a byte from
            // the client, a PROXY header included.
            let policy = Policy::load(&cfg, &rules::Trust::new(&cfg.user), &log);
            if let Err(e) = privilege::drop_root(&cfg.user) {
                // Nothing is read as root; the client hears a refusal.
                socks4d::net::turn_away(conn.stream);
                log.error(&format!("setup error: {e:#}"));
                return EXIT_SETUP;
            }
            session::serve_one(conn, &cfg, &confine::Plan::new(&cfg), policy, &log)
        }
        Found::Listeners(listeners, stderr_allowed) => serve_listeners(&cfg, listeners, stderr_allowed),
        Found::SetupError(why, stderr_allowed) => {
            open_log(&cfg, stderr_allowed).error(&format!("setup error: {why}"));
            EXIT_SETUP
        }
        Found::Nothing => {
            eprintln!("{HOW_TO_RUN}");
            EXIT_USAGE
        }
    }
}

/// Syslog, or stderr with `--log-stderr` when stderr is not the client.
fn open_log(cfg: &Config, stderr_allowed: bool) -> Log {
    if cfg.log_stderr && stderr_allowed {
        Log::stderr(cfg.log_timeout)
    } else {
        Log::syslog(cfg.log_facility, cfg.log_timeout)
    }
}

/// What to say when the logger cannot be reached.
fn logger_missing(why: &str) -> String {
    format!(
        "the logger cannot be reached ({why}): socks4d grants nothing it cannot log, so every request \
         gets 91 (0x5B) until a syslog daemon runs; to try socks4d without one, add --log-stderr"
    )
}

/// Why nothing answers on this host's identd port, if so.
fn no_local_identd() -> Option<String> {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], socks4d::ident::IDENT_PORT));
    std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_millis(500))
        .err()
        .map(|e| e.to_string())
}

/// `--check-config`: every error and every warning with its line on
/// stderr, then a summary on stdout; exit 1 when the file cannot be used.
fn check_config(cfg: &Config) -> u8 {
    if !cfg.log_stderr {
        if let Err(why) = open_log(cfg, false).reachable() {
            println!("syslog: {}", logger_missing(&why));
        }
    }
    let trust = rules::Trust::new(&cfg.user);
    let checked = rules::load_checked(&cfg.rules_file, cfg.rules_file_named, &trust);
    let mut diagnostics: Vec<(Option<usize>, String)> =
        checked.notes.iter().map(|n| (Some(n.line), n.to_string())).collect();
    if let Err(errors) = &checked.loaded {
        diagnostics.extend(errors.iter().map(|e| (e.line, e.to_string())));
    }
    // In file order; the stable sort keeps a line's errors after its notes.
    diagnostics.sort_by_key(|d| d.0);
    for (_, d) in &diagnostics {
        eprintln!("{d}");
    }
    let rules_ok = match checked.loaded {
        Ok(r) if r.origin == rules::Origin::Builtin => {
            println!(
                "{}: absent; the built-in policy applies (permit loopback clients, deny the rest)",
                cfg.rules_file.display()
            );
            true
        }
        Ok(r) => {
            println!(
                "{}: {} rules, OK{}",
                cfg.rules_file.display(),
                r.rules.len(),
                count_warnings(checked.notes.len())
            );
            if cfg.compile {
                match rules::freeze(&cfg.rules_file, &trust) {
                    Ok((path, n)) => {
                        println!("{}: written, {n} rules", path.display());
                        true
                    }
                    Err(e) => {
                        eprintln!("socks4d: {e}");
                        false
                    }
                }
            } else {
                if let Some(status) = rules::frozen_status(&cfg.rules_file, &trust) {
                    println!("{status}");
                }
                true
            }
        }
        Err(errors) => {
            println!(
                "{}: {} error(s){}; no service until fixed",
                cfg.rules_file.display(),
                errors.len(),
                count_warnings(checked.notes.len())
            );
            false
        }
    };
    let routes_ok = check_routes(cfg, &trust);
    if rules_ok && routes_ok {
        0
    } else {
        EXIT_SETUP
    }
}

fn count_warnings(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => ", 1 warning".to_string(),
        n => format!(", {n} warnings"),
    }
}

/// `--check-config` for `--route FILE`: each error with its line, a
/// warning for each interface address this host does not have (a CONNECT
/// or BIND that line decides would fail), then a summary line. False
/// when the file cannot be used.
fn check_routes(cfg: &Config, trust: &rules::Trust) -> bool {
    let Some(path) = &cfg.route_file else {
        return true;
    };
    match route::load(Some(path), trust) {
        Ok(routes) => {
            let mut warnings = 0;
            for r in &routes.routes {
                let Some(ip) = r.source() else { continue };
                if let Err(e) = std::net::UdpSocket::bind((ip, 0)) {
                    eprintln!(
                        "{}: warning: interface_addr {ip} cannot be used here ({e}); \
                         requests this line decides will fail with 0x5B",
                        routes.label(r)
                    );
                    warnings += 1;
                }
            }
            println!(
                "{}: {} routes, OK{}",
                path.display(),
                routes.routes.len(),
                count_warnings(warnings)
            );
            true
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            println!("{}: {} error(s); no service until fixed", path.display(), errors.len());
            false
        }
    }
}

/// `--explain USER SRC DST PORT`: which line decides that request, and how,
/// with the warnings `--check-config` gives for that line.
fn explain(cfg: &Config, user: &str, src: &str, dst: &str, port: &str) -> u8 {
    let trust = rules::Trust::new(&cfg.user);
    let checked = rules::load_checked(&cfg.rules_file, cfg.rules_file_named, &trust);
    let (loaded, routes) = match (checked.loaded, route::load(cfg.route_file.as_deref(), &trust)) {
        (Ok(r), Ok(routes)) => (r, routes),
        (rules, routes) => {
            for e in rules.err().into_iter().chain(routes.err()).flatten() {
                eprintln!("{e}");
            }
            return EXIT_SETUP;
        }
    };
    let (Ok(src_ip), Ok(dst_ip)) = (src.parse::<std::net::IpAddr>(), dst.parse()) else {
        eprintln!("socks4d: --explain: SRC and DST must be IP addresses");
        return EXIT_USAGE;
    };
    // As a connection sees them: a mapped client address is IPv4, and a
    // destination in its canonical form.
    let src_ip = src_ip.to_canonical();
    let dst_ip = match socks4d::dest::canonical(dst_ip) {
        Ok(ip) => ip,
        Err(why) => {
            println!("destination {dst_ip}: refused whatever the rules say: {}", why.why());
            println!("decision: deny");
            return 0;
        }
    };
    if dst.parse::<std::net::IpAddr>().is_ok_and(|written| written != dst_ip) {
        println!("destination: {dst_ip} (as {dst} is matched and connected to)");
    }
    let judged = socks4d::dest::judged(dst_ip);
    if judged != dst_ip {
        println!("destination: judged as {judged} (NAT64)");
    }
    let port = match rules::port_number(port.as_bytes(), &loaded.services) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("socks4d: --explain: {e}");
            return EXIT_USAGE;
        }
    };
    let facts = rules::Facts {
        user: user.as_bytes(),
        src: src_ip,
        dst: judged,
        port,
    };
    let d = rules::decide(&loaded, &facts);
    match d.rule {
        Some(rule) => {
            println!("{}: {}", d.label(), rule.text);
            println!("decision: {}", rule.action.name());
            if d.permit() {
                println!("ident: {}", d.ident(cfg.ident).name());
            }
            if let Some(cmd) = d.command() {
                println!("command: {}", String::from_utf8_lossy(cmd));
            }
            for n in checked.notes.iter().filter(|n| n.line == rule.line) {
                println!("warning: {}", n.message);
            }
        }
        None => {
            println!("{}: no rule matches", d.label());
            println!("decision: deny");
        }
    }
    if d.permit() {
        explain_source(cfg, &routes, dst_ip);
    }
    0
}

/// `--explain`'s lines on the source address of the CONNECT: the route
/// line that decides it, if any, and the source.
fn explain_source(cfg: &Config, routes: &route::Routes, dst: std::net::IpAddr) {
    let found = routes.find(dst, None);
    match found {
        Some(r) => println!("route: {}: {}", routes.label(r), r.text),
        None if cfg.route_file.is_some() => println!("route: no line matches"),
        None => {}
    }
    if let Some(ip) = found.and_then(route::Route::source) {
        println!("source: {ip}");
        return;
    }
    match cfg.outgoing {
        config::Outgoing::Same => println!("source: the address the client connected to (--outgoing-address same)"),
        out => match out.source(dst, dst) {
            Some(ip) => println!("source: {ip} (--outgoing-address)"),
            None => println!("source: chosen by the kernel"),
        },
    }
}

/// `--listen`, `Accept=no` or inetd `wait`: one forked handler per
/// connection until SIGTERM.
fn serve_listeners(cfg: &Config, listeners: Vec<std::net::TcpListener>, stderr_allowed: bool) -> u8 {
    let log = open_log(cfg, stderr_allowed);
    if let Err(why) = log.reachable() {
        if stderr_allowed {
            eprintln!("socks4d: {}", logger_missing(&why));
        }
    }
    if cfg.ident == socks4d::ident::Mode::Required {
        if let Some(why) = no_local_identd() {
            let line = format!(
                "nothing answers on 127.0.0.1:113 ({why}): with --ident required, the default, a client \
                 on this host gets 92 (0x5C) unless an identd runs (oidentd, say); to try socks4d without \
                 one, add --ident off"
            );
            log.warning(&line);
            if stderr_allowed && !cfg.log_stderr {
                eprintln!("socks4d: {line}");
            }
        }
    }
    // The ports are bound. The rules are read as --user, at start as at
    // every reload, with the trust of the user socks4d was started as.
    let trust = rules::Trust::new(&cfg.user);
    if let Err(e) = privilege::drop_root(&cfg.user) {
        let msg = format!("setup error: {e:#}");
        log.error(&msg);
        if !cfg.log_stderr && stderr_allowed && !intake::socket_passed() {
            eprintln!("socks4d: {msg}");
        }
        return EXIT_SETUP;
    }
    let policy = Policy::load(cfg, &trust, &log);
    if let Ok(r) = &policy.rules {
        if r.origin == rules::Origin::Builtin {
            log.info(&format!(
                "rules: {} is absent; built-in policy: permit loopback clients, deny the rest",
                cfg.rules_file.display()
            ));
        }
    }
    match listen::serve(listeners, cfg, policy, &log) {
        Ok(()) => 0,
        Err(e) => {
            let msg = format!("setup error: {e:#}");
            log.error(&msg);
            if !cfg.log_stderr && stderr_allowed && !intake::socket_passed() {
                eprintln!("socks4d: {msg}");
            }
            EXIT_SETUP
        }
    }
}
