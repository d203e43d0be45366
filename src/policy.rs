//! What the files say: the rules (with the user lists they name, or their
//! frozen file), the route file and the chain file (with its user lists
//! and credential files), read once per connection in the per-connection
//! start modes, and once and again on change by a long-running socks4d
//! (`--listen`, `Accept=no`, inetd `wait`).
//!
//! A long-running socks4d notices a change by the files' identity
//! (device, inode, size, owner, mode, modification and change times), as
//! frozen files are checked: a `stat` of each file the policy was read
//! from, at each connection, before it is handed to a handler. No file is
//! read again until one has changed, unless the policy is in error: then
//! it is read again at each connection until it is fixed.

use std::path::{Path, PathBuf};

use crate::audit::Log;
use crate::chain;
use crate::config::Config;
use crate::route;
use crate::rules::{self, frozen::Identity, Trust};

/// The rules, the routes and the chain. Any one in error means no
/// service: every request gets 0x5B.
#[derive(Debug)]
pub struct Policy {
    pub rules: rules::Loaded,
    pub routes: route::Loaded,
    /// `None` without `--chain`: every request leaves directly.
    pub chain: Option<chain::Loaded>,
    /// Whose files are believed, as decided when socks4d started.
    trust: Trust,
    /// Each file the policy was read from (or would be, were it there),
    /// and its identity then: `None` when it was absent.
    files: Vec<(PathBuf, Option<Identity>)>,
}

impl Policy {
    /// Reads the rules file, the files it names, the route file and the
    /// chain file (with its user lists and credential files). Files
    /// are believed as [`Trust`] says: root's (or the starting user's)
    /// and writable by no one else, never `--user`'s. Errors are logged,
    /// each with its line; every request then gets 0x5B. For one
    /// connection: nothing is watched.
    pub fn load(cfg: &Config, trust: &Trust, log: &Log) -> Policy {
        let policy = Policy::read(cfg, trust);
        policy.report(cfg, log, &[]);
        policy
    }

    /// The files read, nothing logged.
    fn read(cfg: &Config, trust: &Trust) -> Policy {
        Policy {
            rules: rules::load(&cfg.rules_file, cfg.rules_file_named, trust),
            routes: route::load(cfg.route_file.as_deref(), trust),
            chain: cfg.chain_file.as_deref().map(|path| chain::load(path, trust)),
            trust: trust.clone(),
            files: Vec::new(),
        }
    }

    /// Every error, as its config error line says it.
    pub fn errors(&self) -> Vec<String> {
        let chain = self.chain.as_ref().and_then(|c| c.as_ref().err());
        let all = [self.rules.as_ref().err(), self.routes.as_ref().err(), chain];
        all.into_iter().flatten().flatten().map(ToString::to_string).collect()
    }

    /// Logs the errors, but those of `known` (logged already), and the
    /// frozen file's warning.
    fn report(&self, cfg: &Config, log: &Log, known: &[String]) {
        for e in self.errors().iter().filter(|e| !known.contains(e)) {
            log.error(&format!("config error: {e}; no service until it is fixed"));
        }
        if let (Ok(r), []) = (&self.rules, known) {
            if let Some(why) = &r.frozen_unused {
                log.warning(&format!(
                    "rules: {} not used: {why}; {} was read instead (run socks4d --check-config --compile)",
                    rules::frozen::path_for(&cfg.rules_file).display(),
                    cfg.rules_file.display()
                ));
            }
        }
    }

    /// As [`Policy::load`], for a long-running socks4d: with the identity
    /// of each file it was read from, for [`Policy::stale`].
    pub fn load_watched(cfg: &Config, trust: &Trust, log: &Log) -> Policy {
        Policy::watched(cfg, trust, log, &[])
    }

    /// [`Policy::load_watched`], logging only errors not in `known`.
    fn watched(cfg: &Config, trust: &Trust, log: &Log, known: &[String]) -> Policy {
        let mut paths: Vec<PathBuf> = vec![cfg.rules_file.clone(), rules::frozen::path_for(&cfg.rules_file)];
        paths.extend(cfg.route_file.clone());
        paths.extend(cfg.chain_file.clone());
        paths.push(PathBuf::from(rules::SERVICES_FILE));
        let before: Vec<Option<Identity>> = paths.iter().map(|p| identity(p)).collect();
        let mut policy = Policy::read(cfg, trust);
        policy.report(cfg, log, known);
        if let Ok(r) = &policy.rules {
            paths.extend(r.files.iter().cloned());
        }
        if let Some(Ok(c)) = &policy.chain {
            paths.extend(c.files.iter().cloned());
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

    /// Whether every file can be used: none is in error.
    pub fn usable(&self) -> bool {
        self.rules.is_ok() && self.routes.is_ok() && !matches!(self.chain, Some(Err(_)))
    }

    /// Why the policy is to be read again, if it is: the first file it
    /// was read from that has changed since (or appeared, or gone), or
    /// errors. A policy in error is read again at each connection, as in
    /// the per-connection modes: the file that needs fixing may be one
    /// that was never read whole (a user list or a credential file that
    /// could not be opened), and whose change would not be noticed.
    pub fn stale(&self) -> Option<String> {
        if !self.usable() {
            return Some("the last reading had errors".into());
        }
        self.files
            .iter()
            .find(|(path, then)| identity(path) != *then)
            .map(|(path, _)| format!("{} changed", path.display()))
    }

    /// The policy read again, with the same trust, and watched. Errors
    /// that this policy had are not logged again.
    pub fn reload(&self, cfg: &Config, log: &Log) -> Policy {
        Policy::watched(cfg, &self.trust, log, &self.errors())
    }
}

/// The identity of the file at `path` now, following links; `None` when
/// it cannot be had (absent, say).
fn identity(path: &Path) -> Option<Identity> {
    std::fs::metadata(path).ok().map(|m| Identity::of(&m))
}
