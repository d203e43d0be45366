//! Dropping root. A classic inetd.conf line may start socks4d as root;
//! after syslog is open and the rules are read, it becomes `--user` before
//! it reads a byte from the client.

use anyhow::{bail, Context, Result};
use nix::unistd::{getegid, geteuid, getgid, getuid, setgid, setgroups, setuid, Gid, Uid, User};

/// The user to become when started as root, unless `--user` says
/// otherwise.
pub const DEFAULT_USER: &str = "nobody";

/// What [`drop_root`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not running as root: nothing to drop.
    NotRoot,
    /// Now running as this user and group.
    To { user: String, uid: u32, gid: u32 },
}

/// When running as root (real or effective uid 0), becomes `user`:
/// supplementary groups set to the user's primary group only, then the
/// group, then the user. Then checks that root cannot be regained. Any
/// failure is an error and the caller must not serve.
pub fn drop_root(user: &str) -> Result<Dropped> {
    if !getuid().is_root() && !geteuid().is_root() {
        return Ok(Dropped::NotRoot);
    }
    let entry = User::from_name(user)
        .with_context(|| format!("look up user {user}"))?
        .with_context(|| format!("no such user: {user}"))?;
    if entry.uid.is_root() {
        bail!("--user {user} is root; name an unprivileged user");
    }
    setgroups(&[entry.gid]).context("setgroups")?;
    setgid(entry.gid).context("setgid")?;
    setuid(entry.uid).context("setuid")?;
    verify(entry.uid, entry.gid)?;
    Ok(Dropped::To {
        user: user.to_string(),
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
    })
}

/// Checks that the ids are the dropped ones and that setuid(0) fails.
fn verify(uid: Uid, gid: Gid) -> Result<()> {
    if getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid {
        bail!(
            "privilege drop did not take: uid {}/{} gid {}/{}",
            getuid(),
            geteuid(),
            getgid(),
            getegid()
        );
    }
    if setuid(Uid::from_raw(0)).is_ok() {
        bail!("privilege drop did not take: setuid(0) succeeded");
    }
    Ok(())
}
