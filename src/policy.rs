//! What the files say: the rules (with the user lists they name, or their
//! frozen file) and the route file, read once per connection in the
//! per-connection start modes, and once and again on change by a
//! long-running socks4d (`--listen`, `Accept=no`, inetd `wait`).
//!
//! A long-running socks4d notices a change by the files' identity
//! (device, inode, size, owner, mode, modification and change times), as
//! frozen files are checked: a `stat` of each file the policy was read
//! from, at each connection, before it is handed to a handler. No file is
//! read again until one has changed.

use std::path::{Path, PathBuf};

use crate::audit::Log;
use crate::config::Config;
use crate::route;
use crate::rules::{self, frozen::Identity, Trust};

/// The rules and the routes. Either one in error means no service: every
/// request gets 0x5B.
#[derive(Debug)]
pub struct Policy {
    pub rules: rules::Loaded,
    pub routes: route::Loaded,
    /// Whose files are believed, as decided when socks4d started.
    trust: Trust,
    /// Each file the policy was read from (or would be, were it there),
    /// and its identity then: `None` when it was absent.
    files: Vec<(PathBuf, Option<Identity>)>,
}

impl Policy {
    /// Reads the rules file, the files it names, and the route file. Files
    /// are believed as [`Trust`] says: root's (or the starting user's)
    /// and writable by no one else, never `--user`'s. Errors are logged,
    /// each with its line; every request then gets 0x5B. For one
    /// connection: nothing is watched ([`Policy::changed`] says none).
    pub fn load(cfg: &Config, trust: &Trust, log: &Log) -> Policy {
        let routes = route::load(cfg.route_file.as_deref(), trust);
        if let Err(errors) = &routes {
            for e in errors {
                log.error(&format!("config error: {e}; no service until it is fixed"));
            }
        }
        Policy {
            rules: load_rules(cfg, trust, log),
            routes,
            trust: trust.clone(),
            files: Vec::new(),
        }
    }

    /// As [`Policy::load`], for a long-running socks4d: with the identity
    /// of each file it was read from, for [`Policy::changed`].
    pub fn load_watched(cfg: &Config, trust: &Trust, log: &Log) -> Policy {
        let mut paths: Vec<PathBuf> = vec![cfg.rules_file.clone(), rules::frozen::path_for(&cfg.rules_file)];
        paths.extend(cfg.route_file.clone());
        paths.push(PathBuf::from(rules::SERVICES_FILE));
        let before: Vec<Option<Identity>> = paths.iter().map(|p| identity(p)).collect();
        let mut policy = Policy::load(cfg, trust, log);
        if let Ok(r) = &policy.rules {
            paths.extend(r.files.iter().cloned());
        }
        // A file that changed while it was read is recorded as it was
        // before, so that the next connection finds it changed and reads
        // it again.
        policy.files = paths
            .into_iter()
            .enumerate()
            .map(|(i, path)| {
                let now = identity(&path);
                let then = match before.get(i) {
                    Some(b) if *b != now => *b,
                    _ => now,
                };
                (path, then)
            })
            .collect();
        policy
    }

    /// The first file the policy was read from that has changed since
    /// (or appeared, or gone), if any.
    pub fn changed(&self) -> Option<&Path> {
        self.files
            .iter()
            .find(|(path, then)| identity(path) != *then)
            .map(|(path, _)| path.as_path())
    }

    /// The policy read again, with the same trust, and watched.
    pub fn reload(&self, cfg: &Config, log: &Log) -> Policy {
        Policy::load_watched(cfg, &self.trust, log)
    }
}

/// The identity of the file at `path` now, following links; `None` when
/// it cannot be had (absent, say).
fn identity(path: &Path) -> Option<Identity> {
    std::fs::metadata(path).ok().map(|m| Identity::of(&m))
}

/// Reads the rules file and the files it names, logging its errors.
fn load_rules(cfg: &Config, trust: &Trust, log: &Log) -> rules::Loaded {
    let loaded = rules::load(&cfg.rules_file, cfg.rules_file_named, trust);
    match &loaded {
        Ok(r) => {
            if let Some(why) = &r.frozen_unused {
                log.warning(&format!(
                    "rules: {} not used: {why}; {} was read instead (run socks4d --check-config --compile)",
                    rules::frozen::path_for(&cfg.rules_file).display(),
                    cfg.rules_file.display()
                ));
            }
        }
        Err(errors) => {
            for e in errors {
                log.error(&format!("config error: {e}; no service until it is fixed"));
            }
        }
    }
    loaded
}
