//! Access rules in the grammar of the classic CSTC `sockd.conf(5)`, one
//! rule per line:
//!
//! ```text
//! action [?=use_identd] [*=userlist] src_addr src_mask [dst_addr dst_mask] [op dst_port] [: shell_cmd]
//! ```
//!
//! plus the hook lines `#NO_IDENTD: cmd` and `#BAD_ID: cmd`, and, as an
//! extension, `addr/prefix` (IPv4 or IPv6) in place of `addr mask`.
//!
//! The parts, each with its own tests, none of which imports this file:
//!
//! - [`rule`]: what a file is made of, and how one rule matches a request
//!   ([`Conditions`]), the first-match loop included;
//! - [`lex`]: a line's fields, split on blanks as sockd split them;
//! - [`grammar`]: a file's text to rules, and the [`Note`]s ([`note`]) on
//!   the lines that a classic sockd read otherwise or that use a legacy
//!   form;
//! - [`classic`]: where CSTC sockd's line and field limits made it read a
//!   line otherwise than socks4d does;
//! - [`users`]: `*=` lists and user-list files;
//! - [`lookups`]: the files and host names a file names, looked up;
//! - [`frozen`]: a compiled file, read and decided from in place;
//! - [`decide`]: the rules a connection is decided by, parsed or frozen
//!   ([`RuleSource`]), and deciding, pure;
//! - [`services`]: `/etc/services`, for port names and `%S`;
//! - [`trust`]: which files are believed, and reading them without
//!   waiting;
//! - [`command`]: a rule's or hook's shell command, its `%` substitutions
//!   and its run, waited for up to a time limit.
//!
//! Parsing and deciding are pure: what a rules file refers to outside
//! itself (user-list files, host names in address fields) is looked up
//! through a [`Lookups`] the caller passes in. [`load`] passes the real
//! file system and resolver ([`System`]), which reads only the files a
//! [`Trust`] believes.

pub mod classic;
pub mod command;
pub mod decide;
pub mod frozen;
pub mod grammar;
pub mod lex;
pub mod lookups;
pub mod note;
pub mod rule;
pub mod services;
pub mod trust;
pub mod users;

use std::io;
use std::path::{Path, PathBuf};

pub use command::{expand, sanitize, spawn, Spawned, Subst, MAX_SUBST_LEN, NAME_LOOKUP_TIMEOUT};
pub use decide::{decide, outlook, settled, Decision, Loaded, Origin, Outlook, RuleSource, Rules, BUILTIN};
pub use grammar::{port_number, Parsed, MAX_LINE_LEN};
pub use lookups::{Fixed, Lookups, System, RESOLVE_TIMEOUT};
pub use note::{Note, NoteKind};
pub use rule::{Action, Conditions, Error, Facts, Hook, Partial, PortOp, Reach, Rule};
pub use services::{Services, SERVICES_FILE};
pub use trust::{Trust, MAX_FILE_LEN};

/// Where the rules are read from unless `-f` names another file.
pub const DEFAULT_FILE: &str = "/etc/socks4d.conf";

/// A parse, and the notes on its lines.
#[derive(Debug)]
pub struct Checked {
    pub loaded: Loaded,
    pub notes: Vec<Note>,
}

/// Parses the text of rules file `file`, as a connection does: every line
/// is checked, and every error returned; no notes are made.
pub fn parse(text: &[u8], file: &str, services: Services, lookups: &mut dyn Lookups) -> Loaded {
    read(text, file, services, lookups, false).loaded
}

/// As [`parse`], with a note for each line that CSTC sockd read otherwise
/// or that uses a legacy form (`--check-config`).
pub fn check(text: &[u8], file: &str, services: Services, lookups: &mut dyn Lookups) -> Checked {
    read(text, file, services, lookups, true)
}

/// [`parse`], with notes when `noted`.
fn read(text: &[u8], file: &str, services: Services, lookups: &mut dyn Lookups, noted: bool) -> Checked {
    let (parsed, notes) = grammar::read(text, file, &services, lookups, noted);
    let loaded = parsed.map(|p| {
        let mut rules = Rules::new(Origin::File(file.into()), RuleSource::Text(p.rules), services);
        rules.no_identd = p.no_identd;
        rules.bad_id = p.bad_id;
        rules
    });
    Checked { loaded, notes }
}

/// The rules file `path`, opened and believed: `None` when it is absent
/// and was not `named` (the built-in policy applies).
fn open_text(
    path: &Path,
    named: bool,
    trust: &Trust,
) -> Result<Option<(std::fs::File, std::fs::Metadata)>, Vec<Error>> {
    match trust.open(path) {
        Ok(opened) => Ok(Some(opened)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !named => Ok(None),
        Err(e) => Err(vec![Error {
            file: path.display().to_string(),
            line: None,
            message: trust::describe(&e),
        }]),
    }
}

/// Reads and parses the opened rules file `path`, with the notes
/// `--check-config` prints when `noted` (a connection makes none).
fn parse_text(path: &Path, file: std::fs::File, meta: &std::fs::Metadata, trust: &Trust, noted: bool) -> Checked {
    let name = path.display().to_string();
    match trust::read_capped(&file, meta.len(), MAX_FILE_LEN) {
        Ok(text) => {
            let mut system = System::new(trust);
            let mut checked = read(&text, &name, Services::system(trust), &mut system, noted);
            if let Ok(rules) = &mut checked.loaded {
                rules.files = system.into_files();
            }
            checked
        }
        Err(e) => Checked {
            loaded: Err(vec![Error {
                file: name,
                line: None,
                message: trust::describe(&e),
            }]),
            notes: Vec::new(),
        },
    }
}

/// The error of a file that a frozen file made the rules depend on and
/// that is not believed: the frozen file, or a file it names.
fn untrusted(file: &Path, why: String) -> Error {
    Error {
        file: file.display().to_string(),
        line: None,
        message: why,
    }
}

/// Reads and parses `path`, or reads its frozen file instead when that is
/// there and current ([`frozen`]). When the file is absent and was not
/// `named` on the command line, the built-in policy applies. A named file
/// that is missing, any file that cannot be read or parsed, and any file
/// involved that `trust` does not believe, is an error.
pub fn load(path: &Path, named: bool, trust: &Trust) -> Loaded {
    let (file, meta) = match open_text(path, named, trust)? {
        Some(opened) => opened,
        None => return Ok(Rules::builtin(Services::system(trust))),
    };
    match frozen::open(path, &meta, trust) {
        Ok(opened) => {
            let origin = Origin::File(path.display().to_string());
            let mut rules = Rules::new(origin, RuleSource::Frozen(opened.frozen), Services::system(trust));
            rules.no_identd = opened.no_identd;
            rules.bad_id = opened.bad_id;
            rules.files = opened.files;
            Ok(rules)
        }
        Err(frozen::Unused::Untrusted(file, why)) => Err(vec![untrusted(&file, why)]),
        Err(unused) => {
            let mut loaded = parse_text(path, file, &meta, trust, false).loaded;
            if let (Ok(rules), frozen::Unused::Stale(why)) = (&mut loaded, unused) {
                rules.frozen_unused = Some(why);
            }
            loaded
        }
    }
}

/// What `--check-config` says about the frozen file of `path`, if there
/// is one: current, or why a connection would not use it.
pub fn frozen_status(path: &Path, trust: &Trust) -> Option<String> {
    let (file, meta) = trust.open(path).ok()?;
    let text = trust::read_capped(&file, meta.len(), MAX_FILE_LEN).ok()?;
    frozen::status(path, &meta, &text, trust)
}

/// Writes the frozen file of rules file `path` (`--check-config
/// --compile`): parsed again here, with every file it names recorded.
/// Returns the frozen file's path and its number of rules, or why none
/// was written.
pub fn freeze(path: &Path, trust: &Trust) -> anyhow::Result<(PathBuf, usize)> {
    frozen::write(path, trust)
}

/// As [`load`], with the notes `--check-config` prints: the text is
/// always parsed, and a frozen file that is there must be believed, as
/// [`load`] asks.
pub fn load_checked(path: &Path, named: bool, trust: &Trust) -> Checked {
    let (file, meta) = match open_text(path, named, trust) {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            return Checked {
                loaded: Ok(Rules::builtin(Services::system(trust))),
                notes: Vec::new(),
            }
        }
        Err(errors) => {
            return Checked {
                loaded: Err(errors),
                notes: Vec::new(),
            }
        }
    };
    let mut checked = parse_text(path, file, &meta, trust, true);
    if let Err(frozen::Unused::Untrusted(file, why)) = frozen::believed(path, &meta, trust) {
        let e = untrusted(&file, why);
        match &mut checked.loaded {
            Ok(_) => checked.loaded = Err(vec![e]),
            Err(errors) => errors.push(e),
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_hook_runs_nothing() {
        let h = Hook {
            line: 3,
            command: Vec::new(),
        };
        assert_eq!(h.command(), None);
        let h = Hook {
            line: 3,
            command: b"logger x".to_vec(),
        };
        assert_eq!(h.command(), Some(&b"logger x"[..]));
    }
}
