//! What a handler may still do once it holds its client, applied in one
//! place right after intake and the same under inetd, socket units and
//! `--listen`: read (and run) the system's programs, libraries and
//! configuration, write nothing but into the `--writable` directories
//! (where nothing can be read back, and so nothing loaded or run), change
//! no file's mode, owner or times, open Internet and local sockets only,
//! gain no privilege, and trace or signal no process outside itself. The
//! rules' commands inherit all of it.
//!
//! Three kernel mechanisms carry it, each optional on old kernels:
//! - Landlock: the file-system allow-list below, plus (ABI 6) no signals to
//!   and no abstract-socket connections with processes outside the handler.
//!   Each handler gets its own Landlock domain, so handlers that share a
//!   user id are still kept apart.
//! - A seccomp allow-list of system calls ([`crate::syscalls`]).
//! - `PR_SET_NO_NEW_PRIVS`, `PR_SET_DUMPABLE` 0 and `RLIMIT_CORE` 0.
//!
//! [`Plan::new`] does the work that can be shared (opening the allowed
//! paths, building the filter); [`Plan::enter`] applies it to the calling
//! process. `--listen` makes the plan once and enters it in every child.

use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, LandlockStatus, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::audit::{Line, Log};
use crate::config::Config;
use crate::syscalls;

/// The ABI whose file-system rights are handled: everything up to device
/// ioctls. Later ABIs add rights (such as connecting to path-named Unix
/// sockets) that a handler needs for syslog and name services.
const FS_ABI: ABI = ABI::V5;
/// The ABI whose scopes are handled: signals and abstract Unix sockets.
const SCOPE_ABI: ABI = ABI::V6;

/// Directories whose files a handler and its commands may read and run:
/// programs, libraries, configuration (name service, `/etc/services`) and
/// the run-time sockets of the name services. Not `/home`, `/root`,
/// `/tmp`, `/var`, `/proc`, `/sys` or `/dev`. Those missing on a host are
/// left out.
pub const READABLE: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/run", "/opt",
];

/// Device files a handler and its commands may open; `/dev/null` also for
/// writing (the commands' standard streams).
const DEVICES: &[(&str, bool)] = &[
    ("/dev/null", true),
    ("/dev/zero", false),
    ("/dev/full", false),
    ("/dev/random", false),
    ("/dev/urandom", false),
];

/// The confinement to apply, prepared.
pub struct Plan {
    landlock: Result<RulesetCreated, Failure>,
    filter: Result<syscalls::Filter, String>,
    /// Paths named by `--readable`/`--writable` that could not be used.
    skipped: Vec<String>,
}

/// Why part of the confinement could not be made: a sentence for the log,
/// and whether the host ran short (descriptors, memory) rather than lacked
/// the feature.
#[derive(Debug, Clone)]
struct Failure {
    why: String,
    exhausted: bool,
}

impl Failure {
    fn of(e: &(dyn std::error::Error + 'static)) -> Failure {
        Failure {
            why: e.to_string(),
            exhausted: exhausted(e),
        }
    }
}

/// Whether an error, or one of its causes, is the host running short:
/// EMFILE, ENFILE, ENOMEM.
fn exhausted(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.raw_os_error(),
                Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOMEM)
            ) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// What [`Plan::enter`] could not apply. Each entry is a sentence for the
/// log; an empty list means fully confined. `refuse` is set when a part
/// failed because the host ran short of descriptors or memory, not for
/// want of the kernel feature: the handler must then refuse the connection
/// rather than serve it less confined than the host allows.
#[derive(Debug, Default)]
pub struct Gaps(pub Vec<String>, pub Option<String>);

impl Gaps {
    /// One warning line per gap, and an error line when the connection
    /// must be refused. Returns whether it may be served.
    pub fn log(&self, log: &Log) -> bool {
        for gap in &self.0 {
            log.warning(Line::new("confine").quoted("gap", gap.as_bytes()).as_str());
        }
        if let Some(why) = &self.1 {
            log.error(Line::new("confine").quoted("failed", why.as_bytes()).as_str());
        }
        self.1.is_none()
    }
}

impl Plan {
    /// Prepares the confinement for `cfg`: the allowed paths opened, the
    /// system-call filter built. Cheap (tens of microseconds); nothing is
    /// applied yet.
    pub fn new(cfg: &Config) -> Plan {
        let mut skipped = Vec::new();
        let landlock = ruleset(&cfg.readable, &cfg.writable, &mut skipped);
        Plan {
            landlock,
            filter: syscalls::Filter::new(),
            skipped,
        }
    }

    /// Confines the calling process, which must be single-threaded. What
    /// cannot be applied on this kernel is left out and named in the
    /// returned [`Gaps`]; the rest is applied regardless.
    pub fn enter(&self) -> Gaps {
        let mut gaps = Gaps(self.skipped.clone(), None);
        if let Err(e) = nix::sys::prctl::set_no_new_privs() {
            gaps.0.push(format!("no_new_privs: {e}"));
        }
        // Nobody else may ptrace or read this process's memory, and a
        // crash writes no core file.
        let _ = nix::sys::prctl::set_dumpable(false);
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        let failed = match &self.landlock {
            Err(f) => Some(f.clone()),
            Ok(created) => match created.try_clone().map_err(|e| Failure::of(&e)).and_then(restrict) {
                Ok(None) => None,
                Ok(Some(gap)) => {
                    gaps.0.push(gap);
                    None
                }
                Err(f) => Some(f),
            },
        };
        if let Some(f) = failed {
            if f.exhausted {
                gaps.1 = Some(format!("landlock: {}; the host ran short, connection refused", f.why));
            } else {
                gaps.0.push(format!("landlock: {}; {LANDLOCK_NONE}", f.why));
            }
        }
        match &self.filter {
            Err(e) => gaps.0.push(format!("seccomp: {e}; system calls not filtered")),
            Ok(f) => match f.apply() {
                Ok(()) => {}
                Err((e, true)) => gaps.1 = Some(format!("seccomp: {e}; the host ran short, connection refused")),
                Err((e, false)) => gaps.0.push(format!("seccomp: {e}")),
            },
        }
        gaps
    }
}

/// What is left open when no Landlock ruleset applies.
const LANDLOCK_NONE: &str = "files, signals and abstract sockets not confined";

/// Enforces a prepared ruleset; `Some` names what this kernel left out.
fn restrict(created: RulesetCreated) -> Result<Option<String>, Failure> {
    let status = created.restrict_self().map_err(|e| Failure::of(&e))?;
    Ok(match (status.ruleset, status.landlock) {
        (RulesetStatus::FullyEnforced, _) => None,
        (RulesetStatus::NotEnforced, LandlockStatus::NotImplemented) => {
            Some(format!("landlock: not in this kernel (ENOSYS); {LANDLOCK_NONE}"))
        }
        (RulesetStatus::NotEnforced, LandlockStatus::NotEnabled) => Some(format!(
            "landlock: not enabled in this kernel (add landlock to lsm= on its command line); {LANDLOCK_NONE}"
        )),
        (RulesetStatus::NotEnforced, _) => Some(format!("landlock: not enforced; {LANDLOCK_NONE}")),
        (RulesetStatus::PartiallyEnforced, LandlockStatus::Available { effective_abi, .. }) => {
            Some(partial_gap(abi_number(effective_abi)))
        }
        (RulesetStatus::PartiallyEnforced, _) => Some("landlock: partly enforced".into()),
    })
}

/// The gap of a kernel whose Landlock has only ABI `abi` (1 to 5): what
/// the later ABIs would have confined.
fn partial_gap(abi: u32) -> String {
    let mut open = Vec::new();
    if abi < 3 {
        open.push("truncating files");
    }
    if abi < abi_number(FS_ABI) {
        open.push("device ioctls");
    }
    if abi < abi_number(SCOPE_ABI) {
        open.push("signals and abstract sockets outside the handler");
    }
    if open.is_empty() {
        open.push("some file rights");
    }
    format!("landlock: only ABI {abi} here; not confined: {}", open.join(", "))
}

fn abi_number(abi: ABI) -> u32 {
    [
        ABI::V1,
        ABI::V2,
        ABI::V3,
        ABI::V4,
        ABI::V5,
        ABI::V6,
        ABI::V7,
        ABI::V8,
        ABI::V9,
        ABI::V10,
    ]
    .iter()
    .position(|a| *a == abi)
    .map_or(0, |i| i as u32 + 1)
}

/// What a handler may do beneath a `--writable` directory: make, write,
/// append to, truncate, move within and remove files and directories,
/// list directories and bind sockets. Not read a file: the dynamic loader
/// (`ld.so FILE`) only opens and maps what it runs, which Landlock's
/// execute right never sees, so a file that can be read can be run. Not
/// run one, and no symbolic links (which a reader outside might follow).
fn write_only() -> BitFlags<AccessFs> {
    AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::ReadDir
        | AccessFs::MakeReg
        | AccessFs::MakeDir
        | AccessFs::MakeSock
        | AccessFs::RemoveFile
        | AccessFs::RemoveDir
        | AccessFs::Refer
}

/// Why the `--writable` directory `dir` must be left out, if it must: it
/// lies beneath a directory whose files may be read, or contains one
/// (Landlock adds up the rights of every rule on the way to a file, so
/// files written there could be read, and run). `readable` holds those
/// directories, resolved as [`resolved`] does.
fn overlap(dir: &Path, readable: &[PathBuf]) -> Option<String> {
    let at = resolved(dir)?;
    let why = |r: &PathBuf| {
        if at.starts_with(r) {
            format!("beneath {}", r.display())
        } else {
            format!("contains {}", r.display())
        }
    };
    readable
        .iter()
        .find(|r| at.starts_with(r) || r.starts_with(&at))
        .map(|r| {
            format!(
                "{}: {}, whose files may be read, so files written there could be read and run; \
                 not made writable",
                dir.display(),
                why(r)
            )
        })
}

/// `path` with every symbolic link resolved, as the kernel finds it when
/// the rule is made; `None` when it does not exist.
fn resolved(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// The Landlock ruleset: [`READABLE`] and `readable` for reading and
/// running, `writable` for writing only ([`write_only`]), [`DEVICES`]. A
/// path of the administrator's that cannot be opened, or a `--writable`
/// one that overlaps a readable one ([`overlap`]), is left out (less
/// access, never more) and noted in `skipped`; one that cannot be opened
/// for want of descriptors or memory fails the whole ruleset.
fn ruleset(readable: &[PathBuf], writable: &[PathBuf], skipped: &mut Vec<String>) -> Result<RulesetCreated, Failure> {
    let mut short: Option<Failure> = None;
    let created = build(readable, writable, skipped, &mut short).map_err(|e| Failure::of(&e))?;
    match short {
        Some(f) => Err(f),
        None => Ok(created),
    }
}

fn build(
    readable: &[PathBuf],
    writable: &[PathBuf],
    skipped: &mut Vec<String>,
    short: &mut Option<Failure>,
) -> Result<RulesetCreated, landlock::RulesetError> {
    // Resolving paths costs system calls: only when there is a writable
    // directory to check.
    let readable_dirs: Vec<PathBuf> = if writable.is_empty() {
        Vec::new()
    } else {
        READABLE
            .iter()
            .map(Path::new)
            .chain(readable.iter().map(PathBuf::as_path))
            .filter_map(resolved)
            .collect()
    };
    let writable: Vec<&PathBuf> = writable
        .iter()
        .filter(|p| match overlap(p, &readable_dirs) {
            Some(why) => {
                skipped.push(why);
                false
            }
            None => true,
        })
        .collect();
    let read = AccessFs::from_read(FS_ABI);
    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(FS_ABI))?
        .scope(Scope::from_all(SCOPE_ABI))?
        .create()?;
    let mut add = |created: RulesetCreated, path: &Path, access, named: bool| match PathFd::new(path) {
        Ok(fd) => created.add_rule(PathBeneath::new(fd, access)).map(|c| (c, true)),
        Err(e) => {
            if exhausted(&e) {
                *short = Some(Failure {
                    why: format!("{}: {e}", path.display()),
                    exhausted: true,
                });
            } else if named {
                skipped.push(format!("{}: {e}; left out of the confinement", path.display()));
            }
            Ok((created, false))
        }
    };
    let mut added: Vec<&str> = Vec::with_capacity(READABLE.len());
    for p in READABLE {
        match covered_link(p, &added) {
            Link::Covered | Link::Missing => continue,
            Link::Not => {}
        }
        let (c, ok) = add(created, Path::new(p), read, false)?;
        created = c;
        if ok {
            added.push(p);
        }
    }
    for p in readable {
        created = add(created, p, read, true)?.0;
    }
    // Writable, but nothing there may be read or run: a handler must not
    // bring its own program.
    for p in writable {
        created = add(created, p, write_only(), true)?.0;
    }
    for &(dev, write) in DEVICES {
        let access = if write {
            AccessFs::ReadFile | AccessFs::WriteFile
        } else {
            AccessFs::ReadFile.into()
        };
        created = add(created, Path::new(dev), access, false)?.0;
    }
    Ok(created)
}

/// What a [`READABLE`] path is, as far as its rule goes.
#[derive(Debug, PartialEq, Eq)]
enum Link {
    /// A symbolic link into one of `added` (`/bin` -> `usr/bin` where
    /// `/usr` is merged): its rule would sit on an inode beneath a
    /// directory already allowed the same rights, so it adds nothing.
    Covered,
    /// Not there at all.
    Missing,
    /// Anything else: a directory, or a link elsewhere. It gets its rule.
    Not,
}

/// Reads `path` as a link with one `readlink` (cheaper than the open,
/// stat, rule and close its rule costs).
fn covered_link(path: &str, added: &[&str]) -> Link {
    match std::fs::read_link(path) {
        Ok(target) => {
            let target = target.to_string_lossy();
            let rel = target.strip_prefix('/').unwrap_or(&target);
            let first = rel.split('/').next().unwrap_or_default();
            let inside = added.iter().any(|a| a.strip_prefix('/') == Some(first));
            if inside && !rel.split('/').any(|c| c == "..") {
                Link::Covered
            } else {
                Link::Not
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Link::Missing,
        Err(_) => Link::Not,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_landlock_names_what_it_leaves_open() {
        assert_eq!(
            partial_gap(5),
            "landlock: only ABI 5 here; not confined: signals and abstract sockets outside the handler"
        );
        assert_eq!(
            partial_gap(2),
            "landlock: only ABI 2 here; not confined: truncating files, device ioctls, \
             signals and abstract sockets outside the handler"
        );
        assert_eq!(abi_number(ABI::V6), 6);
    }

    #[test]
    fn a_writable_directory_must_keep_apart_from_readable_ones_however_it_is_named() {
        let dir = std::env::temp_dir().join(format!("socks4d-overlap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("r/sub")).unwrap();
        std::fs::create_dir_all(dir.join("w")).unwrap();
        std::os::unix::fs::symlink("r/sub", dir.join("link")).unwrap();
        let readable = [resolved(&dir.join("r")).unwrap()];
        let why = overlap(&dir.join("link"), &readable).expect("a link into a readable directory");
        assert!(
            why.contains("link: beneath ")
                && why.ends_with(
                    "/r, whose files may be read, so files written there could be read and run; not made writable"
                ),
            "{why}"
        );
        assert!(overlap(&dir, &readable).unwrap().contains(": contains "));
        assert!(overlap(&dir.join("r"), &readable).is_some());
        assert_eq!(overlap(&dir.join("w"), &readable), None);
        // A name that only shares a prefix is apart.
        std::fs::create_dir_all(dir.join("rr")).unwrap();
        assert_eq!(overlap(&dir.join("rr"), &readable), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_into_an_allowed_directory_need_no_rule_of_their_own() {
        let dir = std::env::temp_dir().join(format!("socks4d-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        let at = |name: &str| dir.join(name).to_string_lossy().into_owned();
        std::os::unix::fs::symlink("usr/bin", at("bin")).unwrap();
        std::os::unix::fs::symlink("/usr/../root", at("up")).unwrap();
        std::os::unix::fs::symlink("/srv/x", at("srv")).unwrap();
        assert_eq!(covered_link(&at("bin"), &["/usr"]), Link::Covered);
        assert_eq!(covered_link(&at("bin"), &["/etc"]), Link::Not);
        assert_eq!(covered_link(&at("up"), &["/usr"]), Link::Not);
        assert_eq!(covered_link(&at("srv"), &["/usr"]), Link::Not);
        assert_eq!(covered_link(&at("usr"), &["/usr"]), Link::Not);
        assert_eq!(covered_link(&at("none"), &["/usr"]), Link::Missing);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
