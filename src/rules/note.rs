//! Notes on the lines of a rules file that CSTC sockd read otherwise, or
//! that use a legacy form: what `--check-config` prints as warnings.

use std::fmt;

/// What a note is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoteKind {
    /// A rule whose port test was sockd's 9th field, which sockd dropped.
    NineFields,
    /// An 8-field rule ending in a service name followed by more text,
    /// which sockd skipped as "Invalid port number".
    EighthFieldService,
    /// A line of 1022 bytes or more, which sockd read in pieces.
    LongLine,
    /// `*=` with nothing after it: any user.
    EmptyUsers,
    /// `?=` followed by more than one letter: the first counts.
    IdentLetters,
    /// A host name in an address field, resolved when the file is read.
    HostName,
    /// An `inet_addr` form such as `10.1` or `010.0.0.1`.
    InetAton,
    /// A port such as `23abc`: its leading digits.
    PortDigits,
    /// `:` with no command after it.
    EmptyCommand,
    /// A hook line with no command.
    EmptyHook,
    /// A command that begins with `:` (the line has `::`).
    DoubleColon,
    /// Fields after a complete rule, ignored.
    ExtraFields,
    /// A net written as IPv4-mapped IPv6 addresses, read as IPv4.
    Mapped,
    /// A destination net of NAT64 addresses, which matches nothing.
    Nat64,
    /// A deny line that leaves the other address family open.
    OneFamily,
    /// A line that decides by name, and what that cannot promise.
    ByName,
}

impl NoteKind {
    /// Whether CSTC sockd decided such lines otherwise than socks4d does
    /// (its bugs, where socks4d is right); the other kinds are legacy forms
    /// that socks4d reads as sockd did.
    pub fn sockd_differs(self) -> bool {
        matches!(
            self,
            NoteKind::NineFields | NoteKind::EighthFieldService | NoteKind::LongLine
        )
    }
}

/// A line that CSTC sockd read otherwise, or that uses a legacy form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub file: String,
    pub line: usize,
    pub kind: NoteKind,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file, self.line, self.message)
    }
}

/// Notes on one line, before the file name and line number are known:
/// `None` when no one will read them (a connection's parse), so that none
/// is made.
pub struct LineNotes(Option<Vec<(NoteKind, String)>>);

impl LineNotes {
    /// Notes kept (`--check-config`), or none made (a connection's parse).
    pub fn new(kept: bool) -> LineNotes {
        LineNotes(kept.then(Vec::new))
    }

    /// Adds a note; its message is made only when notes are kept.
    pub fn add(&mut self, kind: NoteKind, message: impl FnOnce() -> String) {
        if let Some(list) = &mut self.0 {
            list.push((kind, message()));
        }
    }

    /// Adds a note made by `make`, which runs only when notes are kept.
    pub fn add_from(&mut self, make: impl FnOnce() -> Option<(NoteKind, String)>) {
        if let Some(list) = &mut self.0 {
            list.extend(make());
        }
    }

    /// The notes of line `line` of `file`.
    pub fn of(self, file: &str, line: usize) -> impl Iterator<Item = Note> + '_ {
        self.0.into_iter().flatten().map(move |(kind, message)| Note {
            file: file.into(),
            line,
            kind,
            message,
        })
    }
}
