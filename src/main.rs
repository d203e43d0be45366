//! socks4d: arguments, intake, exit status.

use std::process::ExitCode;

use socks4d::audit::Log;
use socks4d::config::{self, Action, Config};
use socks4d::intake::{self, Found};
use socks4d::{listen, privilege, session};

/// Exit status after a setup error.
const EXIT_SETUP: u8 = 1;
/// Exit status after a usage error (EX_USAGE).
const EXIT_USAGE: u8 = 64;

const HOW_TO_RUN: &str = "socks4d: no client socket. Run it from inetd \
(`socks stream tcp nowait nobody /usr/sbin/socks4d socks4d`), from a systemd \
socket unit with Accept=yes, or try it with `socks4d --listen 127.0.0.1:1080 --log-stderr`";

fn main() -> ExitCode {
    let cfg = match config::parse_args(std::env::args().skip(1)) {
        Ok(Action::Serve(cfg)) => cfg,
        Ok(Action::Help) => {
            println!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("socks4d {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Under inetd stderr may be the client's socket.
            if intake::socket_passed() {
                Log::syslog(syslog::Facility::LOG_DAEMON).error(&format!("usage error: {e}"));
            } else {
                eprintln!("socks4d: {e}\n{}", config::USAGE);
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };

    if !cfg.listen.is_empty() {
        return serve_listen(&cfg);
    }

    match intake::find() {
        Found::Client(c) => {
            let log = open_log(&cfg, !c.stderr_was_client);
            // Syslog is open; drop root before reading a byte from the client.
            if let Err(e) = privilege::drop_root(&cfg.user) {
                log.error(&format!("setup error: {e:#}"));
                return ExitCode::from(EXIT_SETUP);
            }
            session::handle(c.stream, c.peer, c.local, &cfg, &log);
            ExitCode::SUCCESS
        }
        Found::SetupError(why, stderr_allowed) => {
            open_log(&cfg, stderr_allowed).error(&format!("setup error: {why}"));
            ExitCode::from(EXIT_SETUP)
        }
        Found::Nothing => {
            eprintln!("{HOW_TO_RUN}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Syslog, or stderr with `--log-stderr` when stderr is not the client.
fn open_log(cfg: &Config, stderr_allowed: bool) -> Log {
    if cfg.log_stderr && stderr_allowed {
        Log::stderr()
    } else {
        Log::syslog(cfg.log_facility)
    }
}

fn serve_listen(cfg: &Config) -> ExitCode {
    let log = open_log(cfg, true);
    match listen::serve(cfg, &log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("setup error: {e:#}");
            log.error(&msg);
            if !cfg.log_stderr {
                eprintln!("socks4d: {msg}");
            }
            ExitCode::from(EXIT_SETUP)
        }
    }
}
