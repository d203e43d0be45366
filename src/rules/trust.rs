//! Which files socks4d believes: the rules file, the user-list files it
//! names, its frozen file, the route file and `/etc/services`. As sshd's
//! StrictModes, a file is believed only when
//!
//! - it is a regular file: a FIFO, a device, a socket or a directory is
//!   refused before a byte is read, and every file is opened with
//!   `O_NONBLOCK`, so that not even one swapped in after the check can
//!   make the open or the read wait;
//! - it is owned by root, or by the user socks4d was started as when that
//!   is not root, and never by the user it serves as (`--user`);
//! - no one else may write it: no group or other write bit (a POSIX ACL
//!   that lets anyone else write shows as the group write bit);
//! - each directory on the way to it, and each symbolic link followed, is
//!   owned in the same way, and no directory is writable by group or
//!   others unless it is sticky (as `/tmp`): there others may add names,
//!   but not rename or remove one of root's, and every name on the way
//!   below it is checked to be a trusted user's.
//!
//! The file's own checks are made on the descriptor it is then read from,
//! so what is read is what was checked.

use std::cell::OnceCell;
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// The largest rules file or user-list file read. Real ones are a few
/// kilobytes, and every connection reads them.
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// At most this many symbolic links are followed on the way to one file,
/// as Linux's own lookup allows.
const MAX_LINKS: usize = 40;

/// Whose files are believed: root's, and those of the user socks4d was
/// started as, less those of the user it serves as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// The effective uid at start; when it is not root, its files are
    /// believed too.
    euid: u32,
    /// `--user` as given, for its uid and for the messages.
    user: String,
    /// `--user`'s uid, looked up only when a file is not root's (a name
    /// costs a name-service lookup); `None` when it does not resolve.
    user_uid: OnceCell<Option<u32>>,
}

/// Why a file is not believed, as an I/O error of kind
/// `PermissionDenied` carries it.
#[derive(Debug)]
pub struct Untrusted(pub String);

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Untrusted {}

fn untrusted(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, Untrusted(why))
}

/// Why `e` refused a file, if it is a refusal of [`Trust`] rather than an
/// error of the system.
pub fn refusal(e: &io::Error) -> Option<&str> {
    e.get_ref()?.downcast_ref::<Untrusted>().map(|u| u.0.as_str())
}

/// What an error reading a file says after the file's name: the
/// refusal, or `cannot read: ` and the system's error.
pub fn describe(e: &io::Error) -> String {
    match refusal(e) {
        Some(why) => why.to_string(),
        None => format!("cannot read: {e}"),
    }
}

impl Trust {
    /// For a socks4d running as it is now, that serves as `user` (the
    /// `--user` option, a name or `UID:GID`).
    pub fn new(user: &str) -> Trust {
        Trust::started_as(nix::unistd::geteuid().as_raw(), user)
    }

    /// For a socks4d started as `euid`.
    pub fn started_as(euid: u32, user: &str) -> Trust {
        Trust {
            euid,
            user: user.to_string(),
            user_uid: OnceCell::new(),
        }
    }

    fn serves_as(&self) -> Option<u32> {
        *self
            .user_uid
            .get_or_init(|| crate::privilege::resolve(&self.user).ok().map(|(uid, _)| uid.as_raw()))
    }

    /// Whether a file, directory or link owned by `uid` may be believed.
    fn owner(&self, uid: u32) -> Result<(), String> {
        if uid == 0 {
            return Ok(());
        }
        if self.serves_as() == Some(uid) {
            return Err(format!(
                "owned by uid {uid}, the user socks4d serves as (--user {})",
                self.user
            ));
        }
        match self.euid {
            e if e == uid => Ok(()),
            0 => Err(format!("owned by uid {uid}, not root")),
            e => Err(format!(
                "owned by uid {uid}, neither root nor uid {e} that socks4d runs as"
            )),
        }
    }

    /// Whether a file of metadata `meta` may be believed: the checks on
    /// the file itself.
    pub fn file(&self, meta: &Metadata) -> Result<(), String> {
        if !meta.file_type().is_file() {
            return Err(format!("not a regular file ({})", kind(meta.file_type())));
        }
        self.owner(meta.uid())?;
        match writers(meta.mode()) {
            Some(who) => Err(format!("writable by {who} (mode {:04o})", meta.mode() & 0o7777)),
            None => Ok(()),
        }
    }

    /// Whether directory `path` of metadata `meta` may lead to a believed
    /// file.
    fn dir(&self, path: &Path, meta: &Metadata) -> Result<(), String> {
        let at = |why: String| format!("directory {}: {why}", path.display());
        self.owner(meta.uid()).map_err(at)?;
        match writers(meta.mode()) {
            Some(who) if meta.mode() & 0o1000 == 0 => {
                Err(at(format!("writable by {who} (mode {:04o})", meta.mode() & 0o7777)))
            }
            _ => Ok(()),
        }
    }

    /// Checks the way to `path`: every directory looked in and every link
    /// followed, from `/` (a relative path from the working directory),
    /// and that the last name is a regular file. The file's owner and
    /// mode are left to the caller, on what it opens.
    fn walk(&self, path: &Path) -> io::Result<()> {
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()?.join(path)
        };
        // The names still to look up, the next one last.
        let mut todo: Vec<OsString> = Vec::new();
        push(&mut todo, &full);
        let mut at = PathBuf::from("/");
        self.dir(&at, &std::fs::symlink_metadata(&at)?).map_err(untrusted)?;
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                // `at` has no links in it: its parent is its prefix, and
                // was checked on the way here.
                at.pop();
                continue;
            }
            let next = at.join(&name);
            let meta = std::fs::symlink_metadata(&next)?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(nix::libc::ELOOP));
                }
                self.owner(meta.uid())
                    .map_err(|why| untrusted(format!("symbolic link {}: {why}", next.display())))?;
                let target = std::fs::read_link(&next)?;
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                push(&mut todo, &target);
            } else if todo.is_empty() {
                // The file. Anything else is refused before it is opened.
                if !kind.is_file() {
                    return Err(untrusted(format!("not a regular file ({})", self::kind(kind))));
                }
                return Ok(());
            } else if kind.is_dir() {
                self.dir(&next, &meta).map_err(untrusted)?;
                at = next;
            } else {
                return Err(io::Error::from_raw_os_error(nix::libc::ENOTDIR));
            }
        }
        // A path that ends in `/` or `..`: a directory.
        Err(untrusted("not a regular file (a directory)".into()))
    }

    /// Opens `path` to read it, once the way to it is checked, and checks
    /// the file on the opened descriptor. Never waits: a FIFO or device
    /// is refused, and the open is non-blocking.
    pub fn open(&self, path: &Path) -> io::Result<(File, Metadata)> {
        self.walk(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY | nix::libc::O_CLOEXEC)
            .open(path)?;
        let meta = file.metadata()?;
        self.file(&meta).map_err(untrusted)?;
        Ok((file, meta))
    }

    /// The metadata of `path`, a file compared but not read (what a
    /// frozen file depends on), when it and the way to it are believed.
    pub fn stat(&self, path: &Path) -> io::Result<Metadata> {
        self.walk(path)?;
        let meta = std::fs::metadata(path)?;
        self.file(&meta).map_err(untrusted)?;
        Ok(meta)
    }

    /// The whole of believed file `path`, at most `cap` bytes.
    pub fn read(&self, path: &Path, cap: u64) -> io::Result<Vec<u8>> {
        let (file, meta) = self.open(path)?;
        read_capped(&file, meta.len(), cap)
    }
}

/// All of `file`, whose size was `size`, when it is at most `cap` bytes.
pub fn read_capped(mut file: &File, size: u64, cap: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(size.min(cap) as usize);
    (&mut file).take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(bytes)
}

/// Pushes the names of `path` onto `todo`, the first one last.
fn push(todo: &mut Vec<OsString>, path: &Path) {
    let names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(names.into_iter().rev());
}

/// Who besides the owner may write a file of mode `mode`.
fn writers(mode: u32) -> Option<&'static str> {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("group and others"),
        (true, false) => Some("group"),
        (false, true) => Some("others"),
        (false, false) => None,
    }
}

fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_root_the_starting_user_and_never_the_service_user() {
        let root = Trust::started_as(0, "65534:65534");
        assert_eq!(root.owner(0), Ok(()));
        assert_eq!(root.owner(1000).unwrap_err(), "owned by uid 1000, not root");
        assert_eq!(
            root.owner(65534).unwrap_err(),
            "owned by uid 65534, the user socks4d serves as (--user 65534:65534)"
        );
        let alice = Trust::started_as(1000, "65534:65534");
        assert_eq!(alice.owner(0), Ok(()));
        assert_eq!(alice.owner(1000), Ok(()));
        assert_eq!(
            alice.owner(1001).unwrap_err(),
            "owned by uid 1001, neither root nor uid 1000 that socks4d runs as"
        );
        // Started as the user it would serve as: its files are not its own.
        let same = Trust::started_as(1000, "1000:1000");
        assert!(same.owner(1000).unwrap_err().contains("serves as (--user 1000:1000)"));
        // A --user that does not resolve takes nothing away.
        let unknown = Trust::started_as(1000, "no-such-user-here");
        assert_eq!(unknown.owner(1000), Ok(()));
    }

    #[test]
    fn write_bits_for_anyone_else_are_named() {
        assert_eq!(writers(0o100644), None);
        assert_eq!(writers(0o100600), None);
        assert_eq!(writers(0o100664), Some("group"));
        assert_eq!(writers(0o100646), Some("others"));
        assert_eq!(writers(0o100666), Some("group and others"));
        assert_eq!(writers(0o041777), Some("group and others"));
    }

    #[test]
    fn names_are_pushed_first_last() {
        let mut todo = Vec::new();
        push(&mut todo, Path::new("/etc/./a/../b/"));
        let want: Vec<OsString> = ["b", "..", "a", "etc"].iter().map(OsString::from).collect();
        assert_eq!(todo, want);
    }

    /// A directory of root's in the system temp dir, for tests that need
    /// the file system. Tests run as root (CI); elsewhere they use the
    /// running user.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("socks4d-trust-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        dir
    }

    fn me() -> Trust {
        Trust::new("65534:65534")
    }

    #[test]
    fn a_file_reached_by_links_is_read_and_the_links_checked() {
        let dir = scratch("links");
        let file = dir.join("file");
        std::fs::write(&file, "alice\n").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("file", dir.join("rel")).unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("loop")).unwrap();
        std::os::unix::fs::symlink("../", dir.join("up")).unwrap();
        for p in ["file", "rel", "loop/rel", "loop/loop/file"] {
            assert_eq!(me().read(&dir.join(p), 100).unwrap(), b"alice\n", "{p}");
        }
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(me().read(&dir.join(format!("up/{name}/rel")), 100).unwrap(), b"alice\n");
        // Too large.
        let e = me().read(&file, 3).unwrap_err();
        assert_eq!(e.to_string(), "larger than 3 bytes");
        // A directory, and a file taken for a directory.
        let e = me().read(&dir, 100).unwrap_err();
        assert_eq!(refusal(&e), Some("not a regular file (a directory)"));
        let e = me().read(&dir.join("file/x"), 100).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ENOTDIR));
        // A cycle of links.
        std::os::unix::fs::symlink("b", dir.join("a")).unwrap();
        std::os::unix::fs::symlink("a", dir.join("b")).unwrap();
        let e = me().read(&dir.join("a"), 100).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ELOOP));
        let e = me().read(&dir.join("missing"), 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(describe(&e).starts_with("cannot read: "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fifo_is_refused_without_waiting() {
        let dir = scratch("fifo");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = me().read(&fifo, 100).unwrap_err();
        assert_eq!(describe(&e), "not a regular file (a FIFO)");
        let e = me().read(Path::new("/dev/null"), 100).unwrap_err();
        assert_eq!(describe(&e), "not a regular file (a device)");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn write_bits_on_the_file_and_its_directories() {
        let dir = scratch("modes");
        let file = dir.join("file");
        std::fs::write(&file, "x").unwrap();
        let mode =
            |p: &Path, m: u32| std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
        mode(&file, 0o664);
        let e = me().read(&file, 100).unwrap_err();
        assert_eq!(describe(&e), "writable by group (mode 0664)");
        mode(&file, 0o644);
        mode(&dir, 0o757);
        let e = me().read(&file, 100).unwrap_err();
        assert_eq!(
            describe(&e),
            format!("directory {}: writable by others (mode 0757)", dir.display())
        );
        mode(&dir, 0o1777);
        assert_eq!(me().read(&file, 100).unwrap(), b"x");
        // Relative to the working directory, which is checked too.
        let e = me().read(Path::new("no/such/relative/file"), 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
