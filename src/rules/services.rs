//! TCP services from `/etc/services`, for port names in rules and `%S` in
//! commands.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::PathBuf;

use super::trust::{self, Trust, MAX_FILE_LEN};

/// Service names for `eq telnet` and `%S`.
pub const SERVICES_FILE: &str = "/etc/services";

/// TCP services: names and aliases to ports, ports to their first name.
/// The file is read on first use only: most rules files name no service,
/// and every connection would pay for the table.
///
/// Its names decide rules' ports, so it is held to the same [`Trust`] as
/// the rules file: a file that is not believed (or is missing) gives an
/// empty table, and a rule that names a port then fails to parse, saying
/// why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    table: OnceCell<ServiceTable>,
    /// Where to read the table from on first use; `None`: empty.
    path: Option<PathBuf>,
    trust: Trust,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServiceTable {
    by_name: HashMap<String, u16>,
    by_port: HashMap<u16, String>,
    /// Why the file was not read.
    unread: Option<String>,
}

impl Services {
    /// The system's table, read from [`SERVICES_FILE`] when first needed,
    /// if `trust` believes it.
    pub fn system(trust: &Trust) -> Services {
        Services {
            table: OnceCell::new(),
            path: Some(PathBuf::from(SERVICES_FILE)),
            trust: trust.clone(),
        }
    }

    /// A table from the text of a services file.
    pub fn parse(text: &[u8]) -> Services {
        Services {
            table: OnceCell::from(ServiceTable::parse(text)),
            path: None,
            trust: Trust::default(),
        }
    }

    fn table(&self) -> &ServiceTable {
        self.table.get_or_init(|| match &self.path {
            None => ServiceTable::default(),
            Some(p) => match self.trust.read(p, MAX_FILE_LEN) {
                Ok(text) => ServiceTable::parse(&text),
                Err(e) => ServiceTable {
                    unread: Some(trust::describe(&e)),
                    ..ServiceTable::default()
                },
            },
        })
    }

    /// Where names are looked up, for messages: the file, and why it was
    /// not read if it was not.
    pub fn source(&self) -> String {
        match &self.table().unread {
            Some(why) => format!("{SERVICES_FILE} ({why})"),
            None => SERVICES_FILE.to_string(),
        }
    }

    /// Whether the system's table has been read (a port was given by
    /// name, or a command's `%S` asked).
    pub fn was_read(&self) -> bool {
        self.path.is_some() && self.table.get().is_some()
    }

    /// The TCP port of service `name` (a name or an alias).
    pub fn port(&self, name: &str) -> Option<u16> {
        self.table().by_name.get(name).copied()
    }

    /// The first name of TCP port `port`.
    pub fn name(&self, port: u16) -> Option<&str> {
        self.table().by_port.get(&port).map(String::as_str)
    }
}

impl ServiceTable {
    fn parse(text: &[u8]) -> ServiceTable {
        let mut s = ServiceTable::default();
        for line in String::from_utf8_lossy(text).lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((port, "tcp")) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else { continue };
            s.by_port.entry(port).or_insert_with(|| name.to_string());
            for n in std::iter::once(name).chain(fields) {
                s.by_name.entry(n.to_string()).or_insert(port);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: &str = "ftp\t\t21/tcp\ntelnet\t\t23/tcp\nhttp\t\t80/tcp\t\twww # WorldWideWeb\ndomain\t53/udp\n# x 9/tcp\nbad\tnot/tcp\nhttp-alt 8080/tcp webcache\nwww2 80/tcp\n";

    #[test]
    fn names_aliases_and_first_name_per_port() {
        let s = Services::parse(SERVICES.as_bytes());
        assert_eq!(s.port("telnet"), Some(23));
        assert_eq!(s.port("www"), Some(80));
        assert_eq!(s.port("webcache"), Some(8080));
        assert_eq!(s.port("www2"), Some(80));
        assert_eq!(s.name(80), Some("http"));
        assert_eq!(s.name(8080), Some("http-alt"));
    }

    #[test]
    fn udp_only_comments_and_junk_name_nothing() {
        let s = Services::parse(SERVICES.as_bytes());
        assert_eq!(s.port("domain"), None);
        assert_eq!(s.port("x"), None);
        assert_eq!(s.port("bad"), None);
        assert_eq!(s.name(53), None);
        assert_eq!(Services::default().port("telnet"), None);
    }
}
