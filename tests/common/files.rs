//! Files: the project's directory and the tests' temporary directories.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The project's top directory.
pub fn top() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh empty directory, removed with what it holds on drop. Shown
/// (`{dir}`) as its path.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Under the system's temporary directory, named after `tag`, this
    /// process and a count, so that no two tests share one.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("socks4d-{tag}-{}-{n}", std::process::id()));
        TempDir::at(dir)
    }

    /// As [`TempDir::new`], writable by everyone (mode 1777), as /tmp is:
    /// for files the handler's commands write, as the user socks4d drops
    /// to (nobody, when the tests run as root).
    pub fn shared(tag: &str) -> TempDir {
        TempDir::with_mode(tag, 0o1777)
    }

    /// As [`TempDir::new`], with mode `mode` exactly (the umask aside).
    pub fn with_mode(tag: &str, mode: u32) -> TempDir {
        let dir = TempDir::new(tag);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    /// The directory `path`, made afresh.
    pub fn at(path: PathBuf) -> TempDir {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path of `name` in it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The path of `name` in it, as a string (for an argument).
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Writes `text` to `name` in it; returns the file's path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.file(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for TempDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
