//! What a rules file names outside itself, user-list files and host
//! names, looked up through [`Lookups`]: the real file system and
//! resolver ([`System`]), or fixed answers ([`Fixed`]) for tests and
//! fuzzing.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::trust::{Trust, MAX_FILE_LEN};
use crate::net::Deadline;

/// How long all the host-name lookups of one rules file may take together.
/// A name still unresolved then is a config error: no service.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a rules file names outside itself.
pub trait Lookups {
    /// The bytes of user-list file `path`.
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    /// The IPv4 addresses of host name `name` (an address field), or why
    /// there are none.
    fn resolve(&mut self, name: &str) -> Result<Vec<Ipv4Addr>, String>;
}

/// The real file system and resolver. Files are read only when `trust`
/// believes them. All the lookups of one rules file share one deadline of
/// [`RESOLVE_TIMEOUT`], and each name is looked up once.
pub struct System {
    trust: Trust,
    /// The files read, in order.
    read: Vec<PathBuf>,
    deadline: Option<Deadline>,
    names: HashMap<String, Result<Vec<Ipv4Addr>, String>>,
}

impl System {
    pub fn new(trust: &Trust) -> System {
        System {
            trust: trust.clone(),
            read: Vec::new(),
            deadline: None,
            names: HashMap::new(),
        }
    }

    /// The files read, in order.
    pub fn into_files(self) -> Vec<PathBuf> {
        self.read
    }
}

impl Lookups for System {
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        self.read.push(path.to_path_buf());
        self.trust.read(path, MAX_FILE_LEN)
    }

    fn resolve(&mut self, name: &str) -> Result<Vec<Ipv4Addr>, String> {
        if let Some(known) = self.names.get(name) {
            return known.clone();
        }
        let deadline = *self.deadline.get_or_insert_with(|| Deadline::after(RESOLVE_TIMEOUT));
        let found = match crate::net::resolve(name, 0, deadline) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(format!(
                "no answer within {} s (all lookups of the file together)",
                RESOLVE_TIMEOUT.as_secs()
            )),
            Err(e) => Err(e.to_string()),
            Ok(addrs) => {
                let mut v4: Vec<Ipv4Addr> = Vec::new();
                for a in addrs {
                    if let IpAddr::V4(ip) = a.ip() {
                        if !v4.contains(&ip) {
                            v4.push(ip);
                        }
                    }
                }
                if v4.is_empty() {
                    Err("it has no IPv4 address".into())
                } else {
                    Ok(v4)
                }
            }
        };
        self.names.insert(name.to_string(), found.clone());
        found
    }
}

/// Fixed answers, for tests and fuzzing: files by path and hosts by name;
/// anything else is not found.
#[derive(Debug, Clone, Default)]
pub struct Fixed {
    pub files: HashMap<PathBuf, Vec<u8>>,
    pub hosts: HashMap<String, Vec<Ipv4Addr>>,
}

impl Fixed {
    pub fn file(mut self, path: &str, text: &str) -> Fixed {
        self.files.insert(PathBuf::from(path), text.as_bytes().to_vec());
        self
    }

    pub fn host(mut self, name: &str, addrs: &[Ipv4Addr]) -> Fixed {
        self.hosts.insert(name.to_string(), addrs.to_vec());
        self
    }
}

impl Lookups for Fixed {
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn resolve(&mut self, name: &str) -> Result<Vec<Ipv4Addr>, String> {
        self.hosts.get(name).cloned().ok_or_else(|| "unknown host".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_lookups_resolve_localhost_once_and_refuse_unknown_names() {
        let mut s = System::new(&Trust::default());
        assert_eq!(s.resolve("localhost"), Ok(vec![Ipv4Addr::LOCALHOST]));
        assert_eq!(s.names.len(), 1);
        assert_eq!(s.resolve("localhost"), Ok(vec![Ipv4Addr::LOCALHOST]));
        assert!(s.resolve("no-such-host.invalid").is_err());
    }

    #[test]
    fn fixed_lookups_answer_only_what_they_hold() {
        let mut f = Fixed::default()
            .file("/u", "alice")
            .host("gw", &[Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(f.read(Path::new("/u")).unwrap(), b"alice");
        assert_eq!(f.read(Path::new("/v")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(f.resolve("gw"), Ok(vec![Ipv4Addr::new(10, 0, 0, 1)]));
        assert!(f.resolve("other").is_err());
    }
}
