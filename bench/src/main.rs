//! Side-by-side benchmark on loopback: a direct connection, socks4d under
//! `systemd-socket-activate --inetd`, socks4d `--listen`, Dante (when
//! installed) and the exec floor (`/bin/cat` under the same
//! `systemd-socket-activate --inetd`). Variants are interleaved within each
//! round; each figure is reported as median [min–max] over the rounds.
//!
//! Usage: socks4d-bench --bin PATH [--bin-static PATH] [--extra "ARGS"]
//!        [--bytes N] [--rounds N]
//!        [--latency N] [--conns N] [--idle N] [--out FILE] [--no-dante]
//!        [--rules N,N,...|none] [--c-relay PATH]
//!        [--external NAME=ADDR]... [--external-floor NAME=ADDR]... [--only-external]
//!        [--account-tree PID]
//!        socks4d-bench --handlers N --bin PATH [--bin-static PATH]
//!        [--compare PATH]... [--extra "ARGS"] [--rounds N] [--wrap "PROGRAM ARGS"]
//!        [--out FILE]
//!
//! `--rules` (default 1,100,1000,20000) adds, for each count, socks4d under
//! the same launcher with a rules file of that many lines, read as text
//! (`rules-N`) and compiled with `--check-config --compile` (`frozen-N`):
//! N-1 lines that do not match the bench's requests, then the permit that
//! does, so every connection goes through the whole file. They get the
//! per-connection figures (connect-to-reply and CPU per connection).
//! `--c-relay` adds bench/c-relay.c under the same launcher: a SOCKS4
//! CONNECT relay in C that does nothing else (no rules, log, ident or
//! confinement), the floor of a relay started per connection.
//! `--bin-static` adds a second build of socks4d (the static musl one)
//! under the same launcher and as `--listen`: `static-inetd` and
//! `static-listen`, with every figure the glibc build gets, so that the two
//! builds are compared in one run.
//!
//! `--external` adds a proxy someone else started (a systemd unit, inetd)
//! and `--external-floor` a handler that echoes the request back (the
//! floor of its launcher); they get the per-connection figures only
//! (latency, connections per second). `--only-external` starts no variants
//! of its own (no --bin needed); bench/container.sh runs it that way inside
//! a booted container, with `--account-tree` naming the container's init:
//! the CPU of that process tree (the instances it reaped included) during
//! each external variant's sequential connections is that variant's "CPU
//! µs per conn", all the container spent on a connection (systemd,
//! journald, the service).
//!
//! `--handlers N` measures the builds alone instead (`--bin`, `--bin-static`
//! and each `--compare`): each started directly for one connection, as
//! inetd does, N per build and round, and what each handler cost, from
//! `wait4` (handlers.rs). The report is printed, and written only to
//! `--out`.

mod account;
mod dests;
mod handlers;
mod measure;
mod options;
mod report;
mod rounds;
mod variants;

use dests::Dests;
use options::Opts;
use variants::Kind;

fn main() {
    let o = match options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("socks4d-bench: {e}");
            std::process::exit(64);
        }
    };
    let d = dests::start(o.bytes);
    let (out, ok) = if o.handlers > 0 {
        handlers::run(&o, &d)
    } else {
        side_by_side(&o, &d)
    };
    print!("{out}");
    let path = o.out.as_deref().or((o.handlers == 0).then_some("bench/results.txt"));
    if let Some(path) = path {
        if let Err(e) = std::fs::write(path, &out) {
            eprintln!("socks4d-bench: {path}: {e}");
        }
    }
    if !ok {
        std::process::exit(1);
    }
}

/// The variants side by side: the report, and whether nothing failed.
fn side_by_side(o: &Opts, d: &Dests) -> (String, bool) {
    let dir = std::env::temp_dir().join(format!("socks4d-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vars = variants::start(o, &dir);
    // The run starts once the variants are up.
    let (started, load_before) = (report::utc_now(), report::load());
    let measured = rounds::run(o, d, &vars);
    let names: Vec<&str> = vars.iter().filter(|v| v.kind != Kind::Rules).map(|v| v.name).collect();
    let out = report::write(o, &measured, &names, &started, &load_before);
    drop(vars);
    let _ = std::fs::remove_dir_all(&dir);
    (out, measured.failures.is_empty())
}
