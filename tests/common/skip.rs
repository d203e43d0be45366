//! When a test cannot run here, and the slow groups.
//!
//! One policy for everything a test needs from the machine (an outside
//! program, root, a container, a setting of the host): where it is
//! missing the test is skipped, passes, and a line `SKIPPED test: why`
//! says so; under `CI=true`, where `.ci/run` provides all of it, the test
//! fails instead. The line is written to the process's stderr directly,
//! past the test harness's capture, so that a skip is seen without
//! `--nocapture`.
//!
//! What a kernel offers (Landlock's ABI) is not something CI can install:
//! a check that needs more than the kernel has is left out with a line
//! `NOT CHECKED test: why`, under CI too ([`unchecked`]).
//!
//! `SOCKS4D_QUICK=1` leaves the slow groups ([`Slow`]) out on a
//! developer's machine, each left-out test with a `SKIPPED` line. Under
//! `CI=true` it is refused: a slow test fails rather than hide.

use std::fmt::Display;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The variable that leaves the slow groups out.
pub const QUICK: &str = "SOCKS4D_QUICK";

/// Whether this run is CI's (`CI=true`): nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Writes `line` about the running test to stderr, past the capture.
fn say(kind: &str, why: impl Display) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "{kind} {test}: {why}");
}

/// Whether the test may go on: `ok`, or else a skip saying that `missing`
/// is missing (a failure under CI).
pub fn require_that(ok: bool, missing: impl Display) -> bool {
    if ok {
        return true;
    }
    if under_ci() {
        panic!("{missing}, and CI=true: .ci/run provides it, so nothing is skipped");
    }
    say("SKIPPED", missing);
    false
}

/// Whether this test process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the test may go on as root (namespaces, other users, limits
/// of other processes, port 113): a skip without it, a failure under CI,
/// which runs as root.
pub fn require_root() -> bool {
    require_that(is_root(), "needs root")
}

/// Whether `program` is installed, on PATH, as `Command::new(program)`
/// finds it: a skip otherwise, a failure under CI.
pub fn require(program: &str) -> bool {
    require_that(on_path(program).is_some(), format!("{program} is not installed"))
}

/// The first of `names` installed (on PATH, in /usr/sbin or /sbin, or a
/// path as given), for the package `what`: `None` is a skip, a failure
/// under CI.
pub fn require_program(what: &str, names: &[&str]) -> Option<PathBuf> {
    let found = find_program(names);
    require_that(found.is_some(), format!("{what} is not installed"));
    found
}

/// Notes a check left out because this kernel lacks what it needs; the
/// rest of the test runs. Not a failure under CI: no package brings a
/// kernel feature.
pub fn unchecked(why: impl Display) {
    say("NOT CHECKED", why);
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    on_path(program).is_some()
}

/// `program` as PATH finds it: an executable file.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// The first of `names` that is an executable file: looked up on PATH,
/// then in /usr/sbin and /sbin, or taken as a path when absolute.
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|name| {
        let p = Path::new(name);
        if p.is_absolute() {
            return executable(p).then(|| p.to_path_buf());
        }
        on_path(name).or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|dir| Path::new(dir).join(name))
                .find(|p| executable(p))
        })
    })
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The slow groups, which `SOCKS4D_QUICK=1` leaves out.
#[derive(Clone, Copy, Debug)]
pub enum Slow {
    /// tests/soak.rs: thousands of connections through each start mode.
    Soak,
    /// tests/systemd.rs and tests/package.rs: a container booted, Debian
    /// packages built (a release build, `cargo deb`, lintian).
    Container,
    /// tests/bench_smoke.rs: the bench client built and run.
    Bench,
    /// tests/clients.rs: Chromium and Firefox started.
    Browsers,
}

/// Whether this test, of the slow group `group`, is left out: only when
/// SOCKS4D_QUICK=1, which then says so in a `SKIPPED` line. Under
/// `CI=true` the variable fails the test instead: CI runs every group.
pub fn left_out(group: Slow) -> bool {
    let quick = std::env::var_os(QUICK).is_some_and(|v| !v.is_empty() && v != "0");
    if !quick {
        return false;
    }
    if under_ci() {
        panic!("{QUICK} is set under CI=true: CI runs every group, the slow ones ({group:?}) too");
    }
    say(
        "SKIPPED",
        format_args!("a slow test ({group:?}), left out by {QUICK}=1"),
    );
    true
}
