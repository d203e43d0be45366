//! socks4d: arguments, intake, exit status.
//!
//! `#![no_main]`: every connection starts a process, and std's runtime
//! start is work no connection needs; [`socks4d::start::prepare`] does the
//! part that matters (SIGPIPE, the standard descriptors). The arguments
//! are taken from `main`'s own `argv`: `std::env::args` is empty in a
//! static musl build, where std learns them only from its runtime start.

#![no_main]

use socks4d::audit::Log;
use socks4d::check::{self, Report};
use socks4d::config::{self, Action, Config, EXIT_SETUP, EXIT_USAGE};
use socks4d::intake::{self, Found};
use socks4d::policy::Policy;
use socks4d::{confine, listen, privilege, rules, session};

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
        Ok(Action::CheckConfig(cfg)) => return print(check::config(&cfg)),
        Ok(Action::Explain(cfg, query)) => return print(check::explain(&cfg, &query)),
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
        // Before the port is open: a SIGHUP from then on is a reload.
        if let Err(e) = listen::hold_signals() {
            return setup_error(
                &open_log(&cfg, true),
                &cfg,
                true,
                &anyhow::anyhow!("block signals: {e}"),
            );
        }
        return match listen::bind(&cfg) {
            Ok(listeners) => serve_listeners(&cfg, listeners, true),
            Err(e) => setup_error(&open_log(&cfg, true), &cfg, true, &e),
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
                session::turn_away(conn.stream);
                log.error(&format!("setup error: {e:#}"));
                return EXIT_SETUP;
            }
            session::serve_one(conn, &cfg, &confine::Plan::new(&cfg), policy, &log)
        }
        Found::Listeners(listeners, stderr_allowed) => {
            if let Err(e) = listen::hold_signals() {
                let log = open_log(&cfg, stderr_allowed);
                return setup_error(&log, &cfg, stderr_allowed, &anyhow::anyhow!("block signals: {e}"));
            }
            serve_listeners(&cfg, listeners, stderr_allowed)
        }
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

/// `--listen`, `Accept=no` or inetd `wait`: one forked handler per
/// connection until SIGTERM; first, on stderr unless it is the log, what
/// a newcomer must know (no logger, no identd).
fn serve_listeners(cfg: &Config, listeners: Vec<std::net::TcpListener>, stderr_allowed: bool) -> u8 {
    let log = open_log(cfg, stderr_allowed);
    for hint in listen::hints(cfg, &log) {
        if stderr_allowed && !cfg.log_stderr {
            eprintln!("socks4d: {hint}");
        }
    }
    match listen::run(listeners, cfg, &log) {
        Ok(()) => 0,
        Err(e) => setup_error(&log, cfg, stderr_allowed, &e),
    }
}

/// Logs a setup error, and says it on stderr too where that is a
/// terminal's or a unit's, not a client's; exit status 1.
fn setup_error(log: &Log, cfg: &Config, stderr_allowed: bool, e: &anyhow::Error) -> u8 {
    let msg = format!("setup error: {e:#}");
    log.error(&msg);
    if !cfg.log_stderr && stderr_allowed && !intake::socket_passed() {
        eprintln!("socks4d: {msg}");
    }
    EXIT_SETUP
}

/// Prints what a check found: errors and warnings on stderr, answers on
/// stdout; its status.
fn print(report: Report) -> u8 {
    for line in &report.err {
        eprintln!("{line}");
    }
    for line in &report.out {
        println!("{line}");
    }
    report.status
}
