//! A compiled ("frozen", as CSTC sockd called its compiled configuration)
//! rules file: `FILE.frozen` beside the rules file `FILE`, written by
//! `socks4d --check-config --compile` and read by each connection instead
//! of parsing `FILE`. It is read whole into the process's own memory,
//! checked there, and decided from there: a file truncated, rewritten in
//! place or replaced meanwhile changes nothing that was checked (a shared
//! mapping would fault, or change under the decision). Deciding reads the
//! records in place; only the line that decides is turned into a [`Rule`].
//!
//! A frozen file must be believed as the rules file is ([`Trust`]: a
//! regular file, root's or the starting user's, writable by no one else,
//! in directories no one else may change) and be owned by root or by the
//! owner of `FILE`; otherwise there is no service, as for a rules file
//! that is not believed. Each file it depends on (below) is held to the
//! same. It is used only when, besides, all of this holds, and otherwise
//! the text is parsed as if there were none (never failing open):
//!
//! - it was written by this version of socks4d;
//! - `FILE` has the identity recorded in it: device, inode, size, owner,
//!   mode, and modification and change times to the nanosecond; and so has
//!   each user-list file the rules name, and `/etc/services` when a port
//!   was given by name. The change time cannot be set by an unprivileged
//!   user, and any write, rename or `touch` moves it. The compile step
//!   reads a file only once its newest time is two seconds old, so that a
//!   write within the same tick of a coarse clock still changes it;
//! - its records are all within its bounds.
//!
//! The hash of `FILE`'s text is recorded too; `--check-config` compares
//! it. A connection does not: that would mean reading the text, which is
//! what the frozen file saves.
//!
//! Rules files that name host names in address fields are not frozen:
//! those names are looked up each time the file is read.

use std::cell::RefCell;
use std::fs::Metadata;
use std::io;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use zerocopy::little_endian::{I64, U128, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::grammar::{self, Parsed};
use super::lookups::{Lookups, System};
use super::note::NoteKind;
use super::rule::{Action, Conditions, Hook, PortOp, Rule};
use super::services::{Services, SERVICES_FILE};
use super::trust::{self, Trust, MAX_FILE_LEN};
use crate::addr::Net;
use crate::ident::Mode;

/// What is appended to the rules file's path.
pub const SUFFIX: &str = ".frozen";
/// How old the newest time of a file must be before it is frozen.
pub const SETTLE: Duration = Duration::from_secs(2);
/// The largest frozen file read.
const MAX_LEN: u64 = 256 << 20;

const MAGIC: &[u8; 8] = b"s4dfrz\0\x02";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const VERSION_LEN: usize = 16;
const _: () = assert!(VERSION.len() <= VERSION_LEN);
/// "None" in a count or length field.
const NONE: u32 = u32::MAX;

/// The frozen file of rules file `path`.
pub fn path_for(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(SUFFIX);
    PathBuf::from(p)
}

// The records of a frozen file, all little-endian and unaligned, so that
// they are read in place from any offset. In file order: the header, one
// `DepRecord` per file the rules depend on, one `RuleRecord` per rule, the
// `NetRecord`s the rules point into, one `Str` per user-id of a `*=` list,
// then the strings.

/// What identifies a file's contents without reading them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Identity {
    dev: U64,
    ino: U64,
    size: U64,
    mtime: I64,
    mtime_nsec: I64,
    ctime: I64,
    ctime_nsec: I64,
    uid: U32,
    mode: U32,
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Header {
    magic: [u8; 8],
    /// socks4d's version, NUL-padded.
    version: [u8; VERSION_LEN],
    text_hash: U64,
    /// The rules file's.
    text: Identity,
    deps: U32,
    rules: U32,
    nets: U32,
    users: U32,
    strings_len: U32,
    no_identd: HookRecord,
    bad_id: HookRecord,
    reserved: [u8; 4],
}

/// Bytes in the strings area.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Str {
    offset: U32,
    len: U32,
}

/// Records of an array: `count` from `start`; a count of [`NONE`]: no
/// such field.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Span {
    start: U32,
    count: U32,
}

#[derive(Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct HookRecord {
    /// 0: no such hook.
    line: U32,
    command: Str,
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct DepRecord {
    path: Str,
    identity: Identity,
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RuleRecord {
    line: U32,
    /// 1: permit, 0: deny.
    action: u8,
    /// 0: none, 1: `?=I`, 2: `?=i`, 3: `?=n`.
    ident: u8,
    /// 0: no port test; else [`op_code`].
    op: u8,
    pad: u8,
    port: U16,
    pad2: [u8; 2],
    src: Span,
    dst: Span,
    users: Span,
    text: Str,
    /// A length of [`NONE`]: no command.
    command: Str,
    /// A length of [`NONE`]: no `.domain` destination.
    domain: Str,
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct NetRecord {
    /// 4 or 6.
    family: U32,
    addr: U128,
    mask: U128,
}

const _: () = assert!(std::mem::size_of::<Header>() == 144 && std::mem::size_of::<RuleRecord>() == 60);

impl Identity {
    pub fn of(m: &Metadata) -> Identity {
        Identity {
            dev: m.dev().into(),
            ino: m.ino().into(),
            size: m.size().into(),
            mtime: m.mtime().into(),
            mtime_nsec: m.mtime_nsec().into(),
            ctime: m.ctime().into(),
            ctime_nsec: m.ctime_nsec().into(),
            uid: m.uid().into(),
            mode: m.mode().into(),
        }
    }

    /// The later of the two times, as a system time.
    fn newest(&self) -> SystemTime {
        let at = |s: I64, ns: I64| {
            let since = Duration::new(s.get().max(0) as u64, ns.get().clamp(0, 999_999_999) as u32);
            SystemTime::UNIX_EPOCH + since
        };
        at(self.mtime, self.mtime_nsec).max(at(self.ctime, self.ctime_nsec))
    }
}

/// FNV-1a, 64 bits: the text's hash recorded in the frozen file.
pub fn hash(text: &[u8]) -> u64 {
    text.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A file the frozen rules depend on besides the rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub path: PathBuf,
    pub identity: Identity,
}

/// The arrays of a frozen file being written.
#[derive(Default)]
struct Encoder {
    rules: Vec<RuleRecord>,
    nets: Vec<NetRecord>,
    users: Vec<Str>,
    strings: Vec<u8>,
}

/// A count or offset that fits the file's 32-bit fields.
fn count(n: usize) -> Result<U32> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n != NONE)
        .map(U32::new)
        .context("rules too large to freeze")
}

impl Encoder {
    fn string(&mut self, s: &[u8]) -> Result<Str> {
        let offset = count(self.strings.len())?;
        self.strings.extend_from_slice(s);
        Ok(Str {
            offset,
            len: count(s.len())?,
        })
    }

    fn nets(&mut self, list: &[Net]) -> Result<Span> {
        let start = count(self.nets.len())?;
        for n in list {
            let (family, addr, mask) = match *n {
                Net::V4 { addr, mask } => (4, u128::from(addr), u128::from(mask)),
                Net::V6 { addr, mask } => (6, addr, mask),
            };
            self.nets.push(NetRecord {
                family: U32::new(family),
                addr: addr.into(),
                mask: mask.into(),
            });
        }
        Ok(Span {
            start,
            count: count(list.len())?,
        })
    }

    fn users(&mut self, list: &[Vec<u8>]) -> Result<Span> {
        let start = count(self.users.len())?;
        for u in list {
            let s = self.string(u)?;
            self.users.push(s);
        }
        Ok(Span {
            start,
            count: count(list.len())?,
        })
    }

    fn hook(&mut self, h: &Option<Hook>) -> Result<HookRecord> {
        Ok(match h {
            None => HookRecord::default(),
            Some(h) => HookRecord {
                line: count(h.line.max(1))?,
                command: self.string(&h.command)?,
            },
        })
    }

    fn rule(&mut self, r: &Rule) -> Result<RuleRecord> {
        const ABSENT: Span = Span {
            start: U32::ZERO,
            count: U32::new(NONE),
        };
        Ok(RuleRecord {
            line: count(r.line)?,
            action: u8::from(r.action == Action::Permit),
            ident: match r.ident {
                None => 0,
                Some(Mode::Required) => 1,
                Some(Mode::Optional) => 2,
                Some(Mode::Off) => 3,
            },
            op: r.port.map_or(0, |(op, _)| op_code(op)),
            pad: 0,
            port: r.port.map_or(0, |(_, p)| p).into(),
            pad2: [0; 2],
            src: self.nets(&r.src)?,
            dst: r.dst.as_deref().map_or(Ok(ABSENT), |d| self.nets(d))?,
            users: r.users.as_deref().map_or(Ok(ABSENT), |u| self.users(u))?,
            text: self.string(r.text.as_bytes())?,
            command: match &r.command {
                None => Str {
                    offset: U32::ZERO,
                    len: U32::new(NONE),
                },
                Some(c) => self.string(c)?,
            },
            domain: match &r.domain {
                None => Str {
                    offset: U32::ZERO,
                    len: U32::new(NONE),
                },
                Some(d) => self.string(d.as_bytes())?,
            },
        })
    }
}

/// Serialises `parsed` rules for the text of identity `text` and hash
/// `text_hash`, which named the files `deps`.
pub fn encode(parsed: &Parsed, text: Identity, text_hash: u64, deps: &[Dep]) -> Result<Vec<u8>> {
    let mut e = Encoder::default();
    let mut dep_records = Vec::with_capacity(deps.len());
    for d in deps {
        let path = e.string(d.path.as_os_str().as_bytes())?;
        dep_records.push(DepRecord {
            path,
            identity: d.identity,
        });
    }
    let (no_identd, bad_id) = (e.hook(&parsed.no_identd)?, e.hook(&parsed.bad_id)?);
    for r in &parsed.rules {
        let record = e.rule(r)?;
        e.rules.push(record);
    }
    let mut version = [0u8; VERSION_LEN];
    version[..VERSION.len()].copy_from_slice(VERSION.as_bytes());
    let header = Header {
        magic: *MAGIC,
        version,
        text_hash: text_hash.into(),
        text,
        deps: count(deps.len())?,
        rules: count(e.rules.len())?,
        nets: count(e.nets.len())?,
        users: count(e.users.len())?,
        strings_len: count(e.strings.len())?,
        no_identd,
        bad_id,
        reserved: [0; 4],
    };
    let mut out = header.as_bytes().to_vec();
    for part in [
        dep_records.as_bytes(),
        e.rules.as_bytes(),
        e.nets.as_bytes(),
        e.users.as_bytes(),
        &e.strings,
    ] {
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// The code of a port test's operator: 1 to 6, as [`PortOp::ALL`] lists
/// them.
fn op_code(op: PortOp) -> u8 {
    op as u8 + 1
}

fn op_of(code: u8) -> Option<PortOp> {
    PortOp::ALL.get(usize::from(code.checked_sub(1)?)).copied()
}

/// The arrays of a frozen file, typed, each within its bytes.
#[derive(Clone, Copy, Default)]
struct Parts<'a> {
    deps: &'a [DepRecord],
    rules: &'a [RuleRecord],
    nets: &'a [NetRecord],
    users: &'a [Str],
    strings: &'a [u8],
}

impl<'a> Parts<'a> {
    /// `bytes` split as its header says, when that is exactly their length.
    fn of(bytes: &'a [u8]) -> Option<Parts<'a>> {
        let (header, rest) = Header::ref_from_prefix(bytes).ok()?;
        let n = |v: U32| v.get() as usize;
        let (deps, rest) = <[DepRecord]>::ref_from_prefix_with_elems(rest, n(header.deps)).ok()?;
        let (rules, rest) = <[RuleRecord]>::ref_from_prefix_with_elems(rest, n(header.rules)).ok()?;
        let (nets, rest) = <[NetRecord]>::ref_from_prefix_with_elems(rest, n(header.nets)).ok()?;
        let (users, strings) = <[Str]>::ref_from_prefix_with_elems(rest, n(header.users)).ok()?;
        (strings.len() == n(header.strings_len)).then_some(Parts {
            deps,
            rules,
            nets,
            users,
            strings,
        })
    }

    fn string(&self, s: Str) -> Option<&'a [u8]> {
        let start = s.offset.get() as usize;
        self.strings.get(start..start.checked_add(s.len.get() as usize)?)
    }

    /// The records of `span` in `array`; `None` for an absent field or one
    /// out of bounds.
    fn span<T>(array: &'a [T], span: Span) -> Option<&'a [T]> {
        let start = span.start.get() as usize;
        array.get(start..start.checked_add(span.count.get() as usize)?)
    }

    /// Whether one of the nets of `span` holds `ip`, as [`Net::contains`]
    /// says.
    fn any_net(&self, span: Span, ip: IpAddr) -> bool {
        let nets = Parts::span(self.nets, span).unwrap_or_default();
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                nets.iter().any(|n| {
                    let (addr, mask) = (n.addr.get() as u32, n.mask.get() as u32);
                    n.family.get() == 4 && a & mask == addr & mask
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                nets.iter().any(|n| {
                    let mask = n.mask.get();
                    n.family.get() == 6 && a & mask == n.addr.get() & mask
                })
            }
        }
    }

    fn hook(&self, h: HookRecord) -> Option<Option<Hook>> {
        let line = h.line.get() as usize;
        Some((line != 0).then_some(Hook {
            line,
            command: self.string(h.command)?.to_vec(),
        }))
    }

    /// Whether each record's fields are within their arrays and strings.
    fn records_ok(&self) -> bool {
        let within = |span: Span, len: usize| u64::from(span.start.get()) + u64::from(span.count.get()) <= len as u64;
        let string_ok = |s: Str| {
            within(
                Span {
                    start: s.offset,
                    count: s.len,
                },
                self.strings.len(),
            )
        };
        let maybe = |span: Span, len: usize| span.count.get() == NONE || within(span, len);
        let rules_ok = self.rules.iter().all(|r| {
            r.action <= 1
                && r.ident <= 3
                && r.op <= 6
                && r.src.count.get() != 0
                && r.src.count.get() != NONE
                && within(r.src, self.nets.len())
                && maybe(r.dst, self.nets.len())
                && maybe(r.users, self.users.len())
                && string_ok(r.text)
                && (r.command.len.get() == NONE || string_ok(r.command))
                && (r.domain.len.get() == NONE || string_ok(r.domain))
        });
        rules_ok
            && self.nets.iter().all(|n| matches!(n.family.get(), 4 | 6))
            && self.users.iter().all(|&u| string_ok(u))
    }
}

/// One rule of a frozen file, read in place: what deciding asks.
#[derive(Clone, Copy)]
pub struct Line<'a> {
    record: &'a RuleRecord,
    parts: Parts<'a>,
}

impl Conditions for Line<'_> {
    fn permits(&self) -> bool {
        self.record.action == 1
    }
    fn runs_command(&self) -> bool {
        self.record.command.len.get() != NONE
    }
    fn src_holds(&self, ip: IpAddr) -> bool {
        self.parts.any_net(self.record.src, ip)
    }
    fn dst_holds(&self, ip: IpAddr) -> Option<bool> {
        self.has_dst().then(|| self.parts.any_net(self.record.dst, ip))
    }
    fn has_dst(&self) -> bool {
        self.record.dst.count.get() != NONE
    }
    fn dst_covers_every(&self) -> bool {
        let nets = Parts::span(self.parts.nets, self.record.dst).unwrap_or_default();
        let whole = |family: u32| nets.iter().any(|n| n.family.get() == family && n.mask.get() == 0);
        whole(4) && whole(6)
    }
    fn port_test(&self) -> Option<(PortOp, u16)> {
        op_of(self.record.op).map(|op| (op, self.record.port.get()))
    }
    fn users_hold(&self, user: &[u8]) -> Option<bool> {
        let list = Parts::span(self.parts.users, self.record.users)?;
        Some(list.iter().any(|&u| self.parts.string(u) == Some(user)))
    }
    fn has_users(&self) -> bool {
        self.record.users.count.get() != NONE
    }
    fn domain(&self) -> Option<&str> {
        if self.record.domain.len.get() == NONE {
            return None;
        }
        std::str::from_utf8(self.parts.string(self.record.domain)?).ok()
    }
}

/// From this size on, a frozen file is copied into memory laid out for
/// transparent huge pages: one 2 MiB page fault instead of 512 of 4 KiB.
/// A 20 000-line file (3.3 MB) cost a connection about 1.5 ms of CPU more
/// in 4 KiB pages, mostly faults, and about 0.2 ms in huge pages.
const HUGE_PAGE: usize = 2 << 20;

/// The process's own copy of a frozen file's bytes: the ones checked and
/// decided from. Nothing else can change them.
enum Snapshot {
    Heap(Vec<u8>),
    /// A private anonymous mapping of `span` bytes from `base`, whose
    /// bytes from `at` (2 MiB aligned) to `at + len` hold the file.
    Mapped {
        base: std::ptr::NonNull<std::ffi::c_void>,
        span: usize,
        at: usize,
        len: usize,
    },
}

impl Snapshot {
    /// All of `file`, whose size was `size` (the caller compares the file's
    /// identity before and after), at most [`MAX_LEN`] bytes.
    fn read(file: &std::fs::File, size: u64) -> io::Result<Snapshot> {
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        if len < HUGE_PAGE {
            return trust::read_capped(file, size, MAX_LEN).map(Snapshot::Heap);
        }
        if size > MAX_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_LEN} bytes"),
            ));
        }
        let whole = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let span = whole + HUGE_PAGE;
        let prot = nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE;
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                std::num::NonZeroUsize::new(span).expect("at least 2 MiB"),
                prot,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
            )
        }?;
        let at = (base.as_ptr() as usize).next_multiple_of(HUGE_PAGE) - base.as_ptr() as usize;
        // SAFETY: `at` is less than 2 MiB into the mapping, and `whole`
        // bytes from there end within it. Advice only: where the kernel
        // has no transparent huge pages it fails, and the copy is made in
        // 4 KiB pages.
        let _ = unsafe {
            let start = std::ptr::NonNull::new_unchecked(base.as_ptr().cast::<u8>().add(at).cast());
            nix::sys::mman::madvise(start, whole, nix::sys::mman::MmapAdvise::MADV_HUGEPAGE)
        };
        let mut copy = Snapshot::Mapped { base, span, at, len };
        let mut got = 0;
        let mut reader = file;
        while got < len {
            match io::Read::read(&mut reader, &mut copy.bytes_mut()[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Snapshot::Mapped { len, .. } = &mut copy {
            // A file that shrank meanwhile: what was read. (It has changed,
            // and the caller's identity check says so.)
            *len = got;
        }
        Ok(copy)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Snapshot::Heap(v) => v,
            // SAFETY: `len` bytes from `at` lie within the mapping, which is
            // readable and writable and lives until drop; `&mut self` makes
            // the borrow exclusive.
            Snapshot::Mapped { base, at, len, .. } => unsafe {
                std::slice::from_raw_parts_mut(base.as_ptr().cast::<u8>().add(*at), *len)
            },
        }
    }
}

impl std::ops::Deref for Snapshot {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Snapshot::Heap(v) => v,
            // SAFETY: as in bytes_mut, read only.
            Snapshot::Mapped { base, at, len, .. } => unsafe {
                std::slice::from_raw_parts(base.as_ptr().cast::<u8>().add(*at), *len)
            },
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Snapshot::Mapped { base, span, .. } = self {
            // SAFETY: unmaps the mapping made in `read`, once.
            let _ = unsafe { nix::sys::mman::munmap(*base, *span) };
        }
    }
}

/// A frozen rules file, checked and ready to decide from.
pub struct Frozen {
    /// The file's bytes, the process's own copy: the ones checked.
    store: Rc<Snapshot>,
    /// The lines that have decided, turned into [`Rule`]s: at most one per
    /// line, kept for the process's life (a handler decides once or a few
    /// times, and exits).
    decided: RefCell<Vec<(usize, &'static Rule)>>,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frozen({} rules)", self.len())
    }
}

/// Why a frozen file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unused {
    /// There is none.
    Absent,
    /// There is one, but it does not describe the rules file as it is now,
    /// or is damaged: why. The text is read instead.
    Stale(String),
    /// It, or a file it depends on (the path), is not believed: why. No
    /// service, as for a rules file that is not.
    Untrusted(PathBuf, String),
}

/// What `open` gives: the frozen rules, and the two hooks.
pub struct Opened {
    pub frozen: Frozen,
    pub no_identd: Option<Hook>,
    pub bad_id: Option<Hook>,
    /// The hash of the text that was compiled.
    pub text_hash: u64,
    /// The files the compiled rules depend on (user lists, /etc/services).
    pub files: Vec<PathBuf>,
}

/// Reads the frozen file of rules file `path`, whose metadata is `text`
/// (of the descriptor it was read from), if it is there, believed by
/// `trust` and current. The bytes are read into memory of this process's
/// own, then checked; a file that changed while it was read is not used.
pub fn open(path: &Path, text: &Metadata, trust: &Trust) -> Result<Opened, Unused> {
    let fpath = path_for(path);
    let (file, meta) = match trust.open(&fpath) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unused::Absent),
        Err(e) => {
            return Err(match trust::refusal(&e) {
                Some(why) => Unused::Untrusted(fpath, why.to_string()),
                None => Unused::Stale(format!("cannot open it: {e}")),
            })
        }
    };
    if meta.uid() != 0 && meta.uid() != text.uid() {
        let why = format!("owned by uid {}, neither root nor the rules file's owner", meta.uid());
        return Err(Unused::Untrusted(fpath, why));
    }
    if meta.len() > MAX_LEN {
        return Err(Unused::Stale(format!("it is larger than {MAX_LEN} bytes")));
    }
    let bytes = Snapshot::read(&file, meta.len()).map_err(|e| Unused::Stale(format!("cannot read it: {e}")))?;
    match file.metadata() {
        Ok(after) if Identity::of(&after) == Identity::of(&meta) => {}
        _ => return Err(Unused::Stale("it changed while it was read".into())),
    }
    check(Rc::new(bytes), Identity::of(text), Some(trust))
}

/// Checks the bytes of a frozen file as a connection does, for a rules
/// file of the identity they record and with no file they depend on
/// looked at: what the fuzz target feeds.
pub fn from_bytes(bytes: Vec<u8>) -> Result<Opened, Unused> {
    let text = Header::ref_from_prefix(&bytes).map_or_else(|_| Identity::default(), |(h, _)| h.text);
    check(Rc::new(Snapshot::Heap(bytes)), text, None)
}

/// Whether the frozen file of `path`, if there is one, is believed, as
/// [`open`] checks it (for `--check-config`).
pub fn believed(path: &Path, text: &Metadata, trust: &Trust) -> Result<(), Unused> {
    match open(path, text, trust) {
        Err(untrusted @ Unused::Untrusted(..)) => Err(untrusted),
        _ => Ok(()),
    }
}

/// Checks a frozen file's header, identities (with `check_deps`, each
/// dependency against the file system now, and believed by that trust)
/// and bounds.
/// Checks a frozen file's header, identities (with `check_deps`, each
/// dependency against the file system now, and believed by that trust)
/// and bounds.
fn check(store: Rc<Snapshot>, text: Identity, check_deps: Option<&Trust>) -> Result<Opened, Unused> {
    let bad = |why: &str| Unused::Stale(format!("it is damaged ({why})"));
    let header = match Header::ref_from_prefix(&store) {
        Ok((h, _)) if h.magic == *MAGIC => h,
        _ => return Err(bad("no frozen-rules header")),
    };
    let version = &header.version[..header.version.iter().position(|&c| c == 0).unwrap_or(VERSION_LEN)];
    if version != VERSION.as_bytes() {
        return Err(Unused::Stale(format!(
            "it was written by socks4d {}, this is {VERSION}",
            String::from_utf8_lossy(version)
        )));
    }
    if header.text != text {
        return Err(Unused::Stale("the rules file has changed since it was compiled".into()));
    }
    let parts = Parts::of(&store).ok_or_else(|| bad("its length"))?;
    let mut files = Vec::with_capacity(parts.deps.len());
    for dep in parts.deps {
        let path = Path::new(std::ffi::OsStr::from_bytes(
            parts.string(dep.path).ok_or_else(|| bad("a string"))?,
        ));
        files.push(path.to_path_buf());
        if let Some(trust) = check_deps {
            match trust.stat(path) {
                Ok(m) if Identity::of(&m) == dep.identity => {}
                Err(e) if trust::refusal(&e).is_some() => {
                    let why = trust::refusal(&e).unwrap_or_default().to_string();
                    return Err(Unused::Untrusted(path.to_path_buf(), why));
                }
                _ => {
                    return Err(Unused::Stale(format!(
                        "{} has changed since it was compiled",
                        path.display()
                    )))
                }
            }
        }
    }
    // Every record's fields within their arrays and strings: plain
    // arithmetic per record, as this runs at every connection.
    if !parts.records_ok() {
        return Err(bad("a record"));
    }
    let (no_identd, bad_id) = match (parts.hook(header.no_identd), parts.hook(header.bad_id)) {
        (Some(n), Some(b)) => (n, b),
        _ => return Err(bad("a string")),
    };
    let text_hash = header.text_hash.get();
    Ok(Opened {
        frozen: Frozen {
            store: store.clone(),
            decided: RefCell::new(Vec::new()),
        },
        no_identd,
        bad_id,
        text_hash,
        files,
    })
}

impl Frozen {
    /// The arrays of the checked bytes. (They were split so when checked,
    /// and the copy cannot change; were it not so, there would be no line,
    /// and every request denied.)
    fn parts(&self) -> Option<Parts<'_>> {
        Parts::of(&self.store)
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.parts().map_or(0, |p| p.rules.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rules in order, read in place.
    pub fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        let parts = self.parts().unwrap_or_default();
        parts.rules.iter().map(move |record| Line { record, parts })
    }

    /// Rule `i`, made once.
    pub fn rule(&self, i: usize) -> &Rule {
        if let Some(&(_, r)) = self.decided.borrow().iter().find(|(k, _)| *k == i) {
            return r;
        }
        let r: &'static Rule = Box::leak(Box::new(self.make(i)));
        self.decided.borrow_mut().push((i, r));
        r
    }

    /// Rule `i` as its record says (an index or string out of bounds, which
    /// the checks refuse, would leave that part empty).
    fn make(&self, i: usize) -> Rule {
        let Some((p, r)) = self.parts().and_then(|p| Some((p, p.rules.get(i)?))) else {
            return Rule::plain(0, "", Action::Deny, Vec::new());
        };
        let string = |s: Str| p.string(s).unwrap_or_default();
        let present = |span: Span| span.count.get() != NONE;
        let nets = |span: Span| -> Vec<Net> {
            Parts::span(p.nets, span)
                .unwrap_or_default()
                .iter()
                .map(|n| match n.family.get() {
                    4 => Net::V4 {
                        addr: n.addr.get() as u32,
                        mask: n.mask.get() as u32,
                    },
                    _ => Net::V6 {
                        addr: n.addr.get(),
                        mask: n.mask.get(),
                    },
                })
                .collect()
        };
        Rule {
            line: r.line.get() as usize,
            text: String::from_utf8_lossy(string(r.text)).into_owned(),
            action: if r.action == 1 { Action::Permit } else { Action::Deny },
            ident: match r.ident {
                1 => Some(Mode::Required),
                2 => Some(Mode::Optional),
                3 => Some(Mode::Off),
                _ => None,
            },
            users: present(r.users).then(|| {
                let list = Parts::span(p.users, r.users).unwrap_or_default();
                list.iter().map(|&u| string(u).to_vec()).collect()
            }),
            src: nets(r.src),
            dst: present(r.dst).then(|| nets(r.dst)),
            port: op_of(r.op).map(|op| (op, r.port.get())),
            command: (r.command.len.get() != NONE).then(|| string(r.command).to_vec()),
            domain: (r.domain.len.get() != NONE).then(|| String::from_utf8_lossy(string(r.domain)).into_owned()),
        }
    }
}

/// The lookups of [`System`], recording each user-list file read and
/// whether it changed while being read.
struct Recording {
    system: System,
    deps: Vec<Dep>,
    changed: Option<PathBuf>,
}

impl Lookups for Recording {
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        let before = std::fs::metadata(path)?;
        let text = self.system.read(path)?;
        let after = std::fs::metadata(path)?;
        if Identity::of(&before) != Identity::of(&after) {
            self.changed = Some(path.to_path_buf());
        }
        self.deps.push(Dep {
            path: path.to_path_buf(),
            identity: Identity::of(&after),
        });
        Ok(text)
    }

    fn resolve(&mut self, name: &str) -> Result<Vec<std::net::Ipv4Addr>, String> {
        self.system.resolve(name)
    }
}

/// How many times [`write`] reads the files again when one changed while
/// it read them, or was too fresh.
const ATTEMPTS: usize = 3;

/// Parses rules file `path` and writes its frozen file, by a
/// new file renamed into place, with the text's permissions less any
/// write bit for group and others. Refused: a file with errors, one that
/// names host names, and a caller that is neither root nor the file's
/// owner (a handler would not trust what it wrote). A file (or a user list
/// it names) whose newest time is less than [`SETTLE`] old is waited for,
/// once.
pub fn write(path: &Path, trust: &Trust) -> Result<(PathBuf, usize)> {
    let file = path.display().to_string();
    let euid = nix::unistd::geteuid().as_raw();
    for _ in 0..ATTEMPTS {
        let meta = std::fs::metadata(path).with_context(|| file.clone())?;
        if euid != 0 && euid != meta.uid() {
            bail!(
                "{file} is owned by uid {}: only root or that user may compile it (a handler trusts no other)",
                meta.uid()
            );
        }
        let services_before = std::fs::metadata(SERVICES_FILE).ok().map(|m| Identity::of(&m));
        let text = match trust.read(path, MAX_FILE_LEN) {
            Ok(text) => text,
            Err(e) => bail!("{file}: {}", trust::describe(&e)),
        };
        let mut lookups = Recording {
            system: System::new(trust),
            deps: Vec::new(),
            changed: None,
        };
        let services = Services::system(trust);
        let (parsed, notes) = grammar::read(&text, &file, &services, &mut lookups, true);
        let parsed = match parsed {
            Ok(p) => p,
            Err(errors) => bail!("{file}: {} error(s); not compiled", errors.len()),
        };
        if let Some(n) = notes.iter().find(|n| n.kind == NoteKind::HostName) {
            bail!(
                "{file}:{}: a host name in an address field is looked up each time the file is read, \
                 so the file is not compiled; write the address instead",
                n.line
            );
        }
        let mut deps = lookups.deps;
        if services.was_read() {
            let now = std::fs::metadata(SERVICES_FILE).ok().map(|m| Identity::of(&m));
            match (services_before, now) {
                (Some(a), Some(b)) if a == b => deps.push(Dep {
                    path: PathBuf::from(SERVICES_FILE),
                    identity: b,
                }),
                _ => continue,
            }
        }
        let after = Identity::of(&std::fs::metadata(path).with_context(|| file.clone())?);
        if after != Identity::of(&meta) || after.size.get() != text.len() as u64 || lookups.changed.is_some() {
            continue;
        }
        // A write in the same tick of a coarse clock would leave the times
        // as they are: wait until the newest is SETTLE old, then read again.
        let newest = deps
            .iter()
            .map(|d| d.identity.newest())
            .fold(after.newest(), SystemTime::max);
        match newest
            .checked_add(SETTLE)
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
        {
            None => {}
            Some(wait) if wait <= SETTLE + Duration::from_secs(1) => {
                std::thread::sleep(wait);
                continue;
            }
            Some(_) => bail!("{file} or a file it names has a time in the future; not compiled"),
        }
        let bytes = encode(&parsed, after, hash(&text), &deps)?;
        let target = path_for(path);
        put(&target, &bytes, meta.mode() & 0o644).with_context(|| target.display().to_string())?;
        return Ok((target, parsed.rules.len()));
    }
    bail!("{file} kept changing while it was compiled; not compiled")
}

/// Writes `bytes` to a new file beside `target` and renames it over
/// `target`.
fn put(target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)?;
        // The umask may have taken bits away; set exactly these.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What `--check-config` says about the frozen file of rules file `path`
/// (metadata `text`, contents `bytes`): `None` when there is none.
pub fn status(path: &Path, text: &Metadata, bytes: &[u8], trust: &Trust) -> Option<String> {
    let fpath = path_for(path);
    Some(match open(path, text, trust) {
        Err(Unused::Absent) => return None,
        Err(Unused::Untrusted(file, why)) => format!("{}: not used: {why}", file.display()),
        Err(Unused::Stale(why)) => format!(
            "{}: not used: {why}; run socks4d --check-config --compile",
            fpath.display()
        ),
        Ok(o) if o.text_hash != hash(bytes) => format!(
            "{}: not used: the rules file's text differs from what was compiled; run socks4d --check-config --compile",
            fpath.display()
        ),
        Ok(o) => format!("{}: current, {} rules", fpath.display(), o.frozen.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::lookups::Fixed;
    use super::super::rule::{denied, first_match, Facts, Partial};
    use super::*;

    const TEXT: &str = "\
#NO_IDENTD: echo no identd %U
#BAD_ID: echo bad %U
deny ?=I *=mallory,/etc/blocked 10.0.0.0 255.0.0.0 : echo denied %u
permit ?=i *=alice 10.0.0.0/8 192.0.2.0/24 eq 23 : echo hi
permit ?=n 10.1.0.0 255.255.0.0 0.0.0.0 0.0.0.0 lt 1024
deny 2001:db8::/32 2001:db8:1::/48 ge 8000
permit ::/0
permit 172.16.0.0/12 198.51.100.7/32 neq 25
deny 0.0.0.0/0 203.0.113.0/24 gt 100
permit ?=I 0.0.0.0 0.0.0.0 le 80
";

    fn identity() -> Identity {
        Identity {
            dev: 1.into(),
            ino: 2.into(),
            size: (TEXT.len() as u64).into(),
            mtime: 1_700_000_000.into(),
            mtime_nsec: 5.into(),
            ctime: 1_700_000_001.into(),
            ctime_nsec: 6.into(),
            uid: 0.into(),
            mode: 0o100644.into(),
        }
    }

    fn parsed() -> Parsed {
        let mut fs = Fixed::default().file("/etc/blocked", "eve\ntrent\n");
        let (parsed, _) = grammar::read(TEXT.as_bytes(), "t.conf", &Services::default(), &mut fs, false);
        parsed.unwrap()
    }

    /// The line of `frozen` that decides `f`, as a connection finds it.
    fn decide<'a>(frozen: &'a Frozen, f: &Facts) -> Option<&'a Rule> {
        first_match(frozen.lines(), f).map(|i| frozen.rule(i))
    }

    fn frozen(bytes: Vec<u8>) -> Result<Opened, Unused> {
        check(Rc::new(Snapshot::Heap(bytes)), identity(), None)
    }

    fn encoded() -> Vec<u8> {
        encode(&parsed(), identity(), hash(TEXT.as_bytes()), &[]).unwrap()
    }

    #[test]
    fn frozen_rules_decide_as_the_parsed_ones() {
        let rules = parsed();
        let opened = frozen(encoded()).unwrap();
        assert_eq!(opened.frozen.len(), rules.rules.len());
        assert_eq!(opened.no_identd, rules.no_identd);
        assert_eq!(opened.bad_id, rules.bad_id);
        let users: [&[u8]; 5] = [b"alice", b"mallory", b"eve", b"bob", b""];
        let srcs = [
            "10.0.0.1",
            "10.1.2.3",
            "172.16.5.5",
            "11.0.0.1",
            "2001:db8::1",
            "2001:db9::1",
            "::1",
        ];
        let dsts = [
            "192.0.2.9",
            "198.51.100.7",
            "203.0.113.5",
            "8.8.8.8",
            "2001:db8:1::5",
            "2001:db8:2::5",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for user in users {
            for src in srcs {
                for dst in dsts {
                    for port in [22, 23, 25, 80, 100, 101, 1023, 1024, 8000, 65535] {
                        let f = Facts {
                            user,
                            src: src.parse().unwrap(),
                            dst: dst.parse().unwrap(),
                            port,
                            name: None,
                        };
                        let want = first_match(&rules.rules, &f).map(|i| &rules.rules[i]);
                        let got = decide(&opened.frozen, &f);
                        assert_eq!(got, want, "{user:?} {src} {dst} {port}");
                        seen.insert(got.map(|r| r.line));
                        let p = Partial {
                            src: f.src,
                            user: (port % 2 == 0).then_some(user),
                            port: (port > 100).then_some(port),
                            name: None,
                        };
                        assert_eq!(denied(opened.frozen.lines(), &p), denied(&rules.rules, &p), "{p:?}");
                    }
                }
            }
        }
        // Every line decided something, and no line at all too.
        assert_eq!(seen.len(), rules.rules.len() + 1, "{seen:?}");
    }

    #[test]
    fn a_decided_line_is_made_once() {
        let opened = frozen(encoded()).unwrap();
        let f = Facts {
            user: b"alice",
            src: "10.0.0.1".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            port: 23,
            name: None,
        };
        let a = decide(&opened.frozen, &f).unwrap() as *const Rule;
        let b = decide(&opened.frozen, &f).unwrap() as *const Rule;
        assert_eq!(a, b);
        assert_eq!(opened.frozen.decided.borrow().len(), 1);
    }

    #[test]
    fn another_identity_or_version_is_stale() {
        let bytes = encoded();
        let mut other = identity();
        other.ctime_nsec += 1;
        let r = check(Rc::new(Snapshot::Heap(bytes.clone())), other, None);
        assert_eq!(
            r.err(),
            Some(Unused::Stale("the rules file has changed since it was compiled".into()))
        );
        let mut old = bytes;
        old[8..8 + VERSION_LEN].copy_from_slice(b"0.0.1\0\0\0\0\0\0\0\0\0\0\0");
        let Err(Unused::Stale(why)) = frozen(old) else { panic!() };
        assert!(why.starts_with("it was written by socks4d 0.0.1"), "{why}");
    }

    #[test]
    fn damaged_files_are_refused_never_read_out_of_bounds() {
        let bytes = encoded();
        assert!(frozen(bytes[..bytes.len() - 1].to_vec()).is_err());
        assert!(frozen(bytes[..std::mem::size_of::<Header>() - 1].to_vec()).is_err());
        // Every byte of the records changed in turn: refused, or still a
        // file whose every decision is in bounds.
        let f = Facts {
            user: b"eve",
            src: "10.0.0.1".parse().unwrap(),
            dst: "8.8.8.8".parse().unwrap(),
            port: 80,
            name: None,
        };
        for at in std::mem::size_of::<Header>()..bytes.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= x;
                if let Ok(o) = frozen(b) {
                    let _ = decide(&o.frozen, &f);
                }
            }
        }
        // A count that points past the end.
        let mut b = bytes.clone();
        b[100..104].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(frozen(b).is_err());
    }

    #[test]
    fn copies_are_the_files_bytes_small_and_large() {
        let dir = std::env::temp_dir().join(format!("socks4d-frozen-copy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for len in [0, 1, 4095, HUGE_PAGE - 1, HUGE_PAGE, HUGE_PAGE + 1, 3 * HUGE_PAGE / 2] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
            let path = dir.join("f");
            std::fs::write(&path, &bytes).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let copy = Snapshot::read(&file, len as u64).unwrap();
            assert_eq!(matches!(copy, Snapshot::Mapped { .. }), len >= HUGE_PAGE, "{len}");
            assert!(*copy == bytes[..], "{len}");
            // The file shrank after its size was taken: what is there.
            let copy = Snapshot::read(&std::fs::File::open(&path).unwrap(), len as u64 + 4096).unwrap();
            assert_eq!(copy.len(), len);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn port_operators_keep_their_codes() {
        for (i, &op) in PortOp::ALL.iter().enumerate() {
            assert_eq!(usize::from(op_code(op)), i + 1);
            assert_eq!(op_of(op_code(op)), Some(op));
        }
        assert_eq!((op_of(0), op_of(7)), (None, None));
    }

    #[test]
    fn the_path_is_the_rules_file_and_a_suffix() {
        assert_eq!(
            path_for(Path::new("/etc/socks4d.conf")),
            Path::new("/etc/socks4d.conf.frozen")
        );
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(hash(b"permit 10.0.0.0/8"), hash(b"permit 10.0.0.0/9"));
    }
}
