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
///
/// `user` is a name, looked up through the name service (NSS; in the
/// static musl build, in `/etc/passwd` only), or `UID:GID` in numbers,
/// which needs no lookup: each connection then reads neither
/// `/etc/nsswitch.conf` nor `/etc/passwd`.
pub fn drop_root(user: &str) -> Result<Dropped> {
    if !getuid().is_root() && !geteuid().is_root() {
        return Ok(Dropped::NotRoot);
    }
    let (uid, gid) = resolve(user)?;
    if uid.is_root() {
        bail!("--user {user} is root; name an unprivileged user");
    }
    setgroups(&[gid]).context("setgroups")?;
    setgid(gid).context("setgid")?;
    setuid(uid).context("setuid")?;
    verify(uid, gid)?;
    Ok(Dropped::To {
        user: user.to_string(),
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}

/// The ids of `user`: `UID:GID` in numbers, else a name looked up through
/// the name service.
pub fn resolve(user: &str) -> Result<(Uid, Gid)> {
    match numeric(user) {
        Some(ids) => ids,
        None => {
            let entry = User::from_name(user)
                .with_context(|| format!("look up user {user}"))?
                .with_context(|| format!("no such user: {user}{}", crate::net::WITHOUT_NSS_USERS))?;
            Ok((entry.uid, entry.gid))
        }
    }
}

/// `UID:GID` in decimal, or `None` when `user` is not of that form (a
/// name). Group 0 is refused as uid 0 is: the numeric form names both.
pub fn numeric(user: &str) -> Option<Result<(Uid, Gid)>> {
    let (u, g) = user.split_once(':')?;
    let number = |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>());
    let (u, g) = (number(u)?, number(g)?);
    Some(match (u, g) {
        (Ok(u), Ok(g)) if u == u32::MAX || g == u32::MAX => Err(anyhow::anyhow!("--user {user}: -1 is not an id")),
        (Ok(_), Ok(0)) => Err(anyhow::anyhow!(
            "--user {user}: group 0 is root's; name an unprivileged group"
        )),
        (Ok(u), Ok(g)) => Ok((Uid::from_raw(u), Gid::from_raw(g))),
        _ => Err(anyhow::anyhow!("--user {user}: ids are at most {}", u32::MAX - 1)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_need_no_lookup() {
        let ids = |s: &str| numeric(s).map(|r| r.map(|(u, g)| (u.as_raw(), g.as_raw())).map_err(|e| e.to_string()));
        assert_eq!(ids("65534:65534"), Some(Ok((65534, 65534))));
        assert_eq!(ids("1000:100"), Some(Ok((1000, 100))));
        // Names, and anything else not two numbers, go to the name service.
        for name in ["nobody", "socks4d", "1000", ":100", "1000:", "a:b", "10:x", "+1:2"] {
            assert_eq!(ids(name), None, "{name}");
        }
        assert!(ids("1000:0").unwrap().unwrap_err().contains("group 0"));
        assert!(ids("4294967295:1").unwrap().is_err());
        assert!(ids("99999999999:1").unwrap().unwrap_err().contains("at most"));
    }
}
