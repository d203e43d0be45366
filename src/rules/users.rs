//! `*=` user lists: user-ids and absolute paths of files of user-ids.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::lookups::Lookups;
use crate::text::show;

/// The user-ids of `*=alice,bob,/etc/socks4d.users`, files read through
/// `lookups`. An empty list is the caller's to handle (it means any user).
/// An empty name, a relative path, or a file that cannot be read is an
/// error.
pub fn parse_list(list: &[u8], lookups: &mut dyn Lookups) -> Result<Vec<Vec<u8>>, String> {
    let mut users = Vec::new();
    for item in list.split(|&b| b == b',') {
        if item.is_empty() {
            return Err(format!(
                "empty name in the user list {} (CSTC sockd let it match an empty user-id; \
                 remove the extra comma)",
                show(list)
            ));
        }
        if item.first() == Some(&b'/') {
            let path = Path::new(OsStr::from_bytes(item));
            let text = lookups
                .read(path)
                .map_err(|e| format!("user list file {}: {e}", path.display()))?;
            users.extend(parse_file(&text));
        } else if item.contains(&b'/') {
            return Err(format!("user list file {} is not an absolute path", show(item)));
        } else {
            users.push(item.to_vec());
        }
    }
    Ok(users)
}

/// The user-ids of a user-list file: separated by blanks, commas, tabs or
/// newlines (as CSTC sockd read them), `#` starting a comment that runs to
/// the end of its line.
pub fn parse_file(text: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    text.split(|&b| b == b'\n').flat_map(|line| {
        let line = line.split(|&b| b == b'#').next().unwrap_or_default();
        line.split(|&b| b.is_ascii_whitespace() || b == b',')
            .filter(|u| !u.is_empty())
            .map(<[u8]>::to_vec)
    })
}

#[cfg(test)]
mod tests {
    use super::super::lookups::Fixed;
    use super::*;

    fn names(v: &[Vec<u8>]) -> Vec<&str> {
        v.iter().map(|u| std::str::from_utf8(u).unwrap()).collect()
    }

    #[test]
    fn files_split_on_blanks_commas_tabs_and_newlines() {
        let got: Vec<Vec<u8>> = parse_file(b"alice,bob\tcarol  dave,,\r\n# erin\nfrank # gina\n,henry,\n").collect();
        assert_eq!(names(&got), ["alice", "bob", "carol", "dave", "frank", "henry"]);
    }

    #[test]
    fn names_and_files_in_a_list() {
        let mut fs = Fixed::default().file("/etc/ops", "alice, bob\n");
        let got = parse_list(b"root,/etc/ops,zed", &mut fs).unwrap();
        assert_eq!(names(&got), ["root", "alice", "bob", "zed"]);
    }

    #[test]
    fn bad_lists_are_errors_that_say_why() {
        let mut fs = Fixed::default();
        assert!(parse_list(b"a,,b", &mut fs).unwrap_err().contains("empty name"));
        assert!(parse_list(b"a,", &mut fs).unwrap_err().contains("empty name"));
        assert!(parse_list(b"etc/users", &mut fs)
            .unwrap_err()
            .contains("not an absolute path"));
        let e = parse_list(b"/no/such/file", &mut fs).unwrap_err();
        assert!(e.starts_with("user list file /no/such/file:"), "{e}");
    }
}
