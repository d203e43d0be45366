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
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::decide::{Facts, Partial, Reach};
use super::grammar::{Checked, NoteKind};
use super::trust::{self, Trust};
use super::{read_capped, Action, Hook, Lookups, Net, PortOp, Rule, Rules, System, SERVICES_FILE};
use crate::ident::Mode;

/// What is appended to the rules file's path.
pub const SUFFIX: &str = ".frozen";
/// How old the newest time of a file must be before it is frozen.
pub const SETTLE: Duration = Duration::from_secs(2);
/// The largest frozen file read.
const MAX_LEN: u64 = 256 << 20;

const MAGIC: &[u8; 8] = b"s4dfrz\0\x01";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const VERSION_LEN: usize = 16;
const _: () = assert!(VERSION.len() <= VERSION_LEN);

const IDENTITY_LEN: usize = 64;
const HEADER_LEN: usize = 144;
const DEP_LEN: usize = 8 + IDENTITY_LEN;
const RULE_LEN: usize = 56;
const NET_LEN: usize = 36;
const USER_LEN: usize = 8;
/// "None" in a count or length field.
const NONE: u32 = u32::MAX;

/// The frozen file of rules file `path`.
pub fn path_for(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(SUFFIX);
    PathBuf::from(p)
}

/// What identifies a file's contents without reading them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    uid: u32,
    mode: u32,
}

impl Identity {
    pub fn of(m: &Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            uid: m.uid(),
            mode: m.mode(),
        }
    }

    /// The later of the two times, as a system time.
    fn newest(&self) -> SystemTime {
        let at = |(s, ns): (i64, i64)| {
            let since = Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32);
            SystemTime::UNIX_EPOCH + since
        };
        at(self.mtime).max(at(self.ctime))
    }

    fn put(&self, out: &mut Vec<u8>) {
        for v in [self.dev, self.ino, self.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
    }

    fn get(b: &Bytes, at: usize) -> Option<Identity> {
        Some(Identity {
            dev: b.u64(at)?,
            ino: b.u64(at + 8)?,
            size: b.u64(at + 16)?,
            mtime: (b.u64(at + 24)? as i64, b.u64(at + 32)? as i64),
            ctime: (b.u64(at + 40)? as i64, b.u64(at + 48)? as i64),
            uid: b.u32(at + 56)?,
            mode: b.u32(at + 60)?,
        })
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

/// Adds a string to the strings area: its offset and length.
type StringTable<'a> = dyn FnMut(&[u8]) -> Result<(u32, u32), String> + 'a;

/// Serialises parsed `rules` for the text of identity `text` and hash
/// `text_hash`, which named the files `deps`.
pub fn encode(rules: &Rules, text: Identity, text_hash: u64, deps: &[Dep]) -> Result<Vec<u8>, String> {
    let mut strings: Vec<u8> = Vec::new();
    let mut string = |s: &[u8]| -> Result<(u32, u32), String> {
        let off = u32::try_from(strings.len()).map_err(|_| "rules too large to freeze".to_string())?;
        let len = u32::try_from(s.len()).map_err(|_| "rules too large to freeze".to_string())?;
        strings.extend_from_slice(s);
        Ok((off, len))
    };
    let count = |n: usize| u32::try_from(n).map_err(|_| "rules too large to freeze".to_string());
    let mut dep_records = Vec::new();
    for d in deps {
        let path = d.path.as_os_str().as_bytes();
        let (off, len) = string(path)?;
        dep_records.extend_from_slice(&off.to_le_bytes());
        dep_records.extend_from_slice(&len.to_le_bytes());
        d.identity.put(&mut dep_records);
    }
    let hook = |h: &Option<Hook>, string: &mut StringTable| match h {
        None => Ok([0, 0, 0]),
        Some(h) => {
            let (off, len) = string(&h.command)?;
            Ok::<_, String>([count(h.line.max(1))?, off, len])
        }
    };
    let no_identd = hook(&rules.no_identd, &mut string)?;
    let bad_id = hook(&rules.bad_id, &mut string)?;

    let mut records = Vec::with_capacity(rules.rules.len() * RULE_LEN);
    let mut nets = Vec::new();
    let mut users = Vec::new();
    let mut n_nets = 0usize;
    let mut n_users = 0usize;
    for r in &rules.rules {
        let mut put_nets = |list: &[Net]| -> Result<(u32, u32), String> {
            let start = count(n_nets)?;
            for n in list {
                let (kind, addr, mask) = match *n {
                    Net::V4 { addr, mask } => (4u32, u128::from(addr), u128::from(mask)),
                    Net::V6 { addr, mask } => (6, addr, mask),
                };
                nets.extend_from_slice(&kind.to_le_bytes());
                nets.extend_from_slice(&addr.to_le_bytes());
                nets.extend_from_slice(&mask.to_le_bytes());
                n_nets += 1;
            }
            Ok((start, count(list.len())?))
        };
        let (src_start, src_count) = put_nets(&r.src)?;
        let (dst_start, dst_count) = match &r.dst {
            None => (0, NONE),
            Some(d) => put_nets(d)?,
        };
        let (users_start, users_count) = match &r.users {
            None => (0, NONE),
            Some(list) => {
                let start = count(n_users)?;
                for u in list {
                    let (off, len) = string(u)?;
                    users.extend_from_slice(&off.to_le_bytes());
                    users.extend_from_slice(&len.to_le_bytes());
                    n_users += 1;
                }
                (start, count(list.len())?)
            }
        };
        let (text_off, text_len) = string(r.text.as_bytes())?;
        let (cmd_off, cmd_len) = match &r.command {
            None => (0, NONE),
            Some(c) => string(c)?,
        };
        let (op, port) = match r.port {
            None => (0u8, 0u16),
            Some((op, p)) => (op_code(op), p),
        };
        let ident = match r.ident {
            None => 0u8,
            Some(Mode::Required) => 1,
            Some(Mode::Optional) => 2,
            Some(Mode::Off) => 3,
        };
        records.extend_from_slice(&count(r.line)?.to_le_bytes());
        records.extend_from_slice(&[u8::from(r.action == Action::Permit), ident, op, 0]);
        records.extend_from_slice(&port.to_le_bytes());
        records.extend_from_slice(&[0, 0]);
        for v in [
            src_start,
            src_count,
            dst_start,
            dst_count,
            users_start,
            users_count,
            text_off,
            text_len,
            cmd_off,
            cmd_len,
            0,
        ] {
            records.extend_from_slice(&v.to_le_bytes());
        }
    }

    let mut out = Vec::with_capacity(HEADER_LEN + dep_records.len() + records.len() + nets.len() + strings.len());
    out.extend_from_slice(MAGIC);
    let mut version = [0u8; VERSION_LEN];
    version[..VERSION.len()].copy_from_slice(VERSION.as_bytes());
    out.extend_from_slice(&version);
    out.extend_from_slice(&text_hash.to_le_bytes());
    text.put(&mut out);
    for v in [
        count(deps.len())?,
        count(rules.rules.len())?,
        count(n_nets)?,
        count(n_users)?,
        count(strings.len())?,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in no_identd.iter().chain(&bad_id) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&[0; 4]);
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(&dep_records);
    out.extend_from_slice(&records);
    out.extend_from_slice(&nets);
    out.extend_from_slice(&users);
    out.extend_from_slice(&strings);
    Ok(out)
}

fn op_code(op: PortOp) -> u8 {
    match op {
        PortOp::Eq => 1,
        PortOp::Neq => 2,
        PortOp::Lt => 3,
        PortOp::Gt => 4,
        PortOp::Le => 5,
        PortOp::Ge => 6,
    }
}

fn op_of(code: u8) -> Option<PortOp> {
    Some(match code {
        1 => PortOp::Eq,
        2 => PortOp::Neq,
        3 => PortOp::Lt,
        4 => PortOp::Gt,
        5 => PortOp::Le,
        6 => PortOp::Ge,
        _ => return None,
    })
}

/// The little-endian `u32` at `at` of a record of `N` bytes: with `at`
/// a constant, one load and no bounds check.
#[inline(always)]
fn le32<const N: usize>(r: &[u8; N], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&r[at..at + 4]);
    u32::from_le_bytes(b)
}

#[inline(always)]
fn le128<const N: usize>(r: &[u8; N], at: usize) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&r[at..at + 16]);
    u128::from_le_bytes(b)
}

/// Record `k` of `N` bytes in `array`.
#[inline(always)]
fn record<const N: usize>(array: &[u8], k: usize) -> &[u8; N] {
    array[k * N..(k + 1) * N].try_into().expect("a record is N bytes")
}

/// The records of `N` bytes in `array`.
fn records<const N: usize>(array: &[u8]) -> impl Iterator<Item = &[u8; N]> {
    array
        .chunks_exact(N)
        .map(|r| r.try_into().expect("a record is N bytes"))
}

/// An address to match, read once per decision.
#[derive(Clone, Copy)]
enum Ip {
    V4(u32),
    V6(u128),
}

impl Ip {
    fn of(ip: std::net::IpAddr) -> Ip {
        match ip {
            std::net::IpAddr::V4(a) => Ip::V4(a.into()),
            std::net::IpAddr::V6(a) => Ip::V6(a.into()),
        }
    }
}

/// Whether one of the `count` nets from `start` in `nets` holds `ip`, as
/// [`Net::contains`] says.
#[inline(always)]
fn any_net(nets: &[u8], start: u32, count: u32, ip: Ip) -> bool {
    (start as usize..start as usize + count as usize).any(|k| {
        let n = record::<NET_LEN>(nets, k);
        match (le32(n, 0), ip) {
            (4, Ip::V4(a)) => {
                let mask = le32(n, 20);
                a & mask == le32(n, 4) & mask
            }
            (6, Ip::V6(a)) => {
                let mask = le128(n, 20);
                a & mask == le128(n, 4) & mask
            }
            _ => false,
        }
    })
}

/// Bytes of a frozen file, read little-endian with bounds checks.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u32(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(self.0.get(at..at + 4)?.try_into().ok()?))
    }
    fn u64(&self, at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(self.0.get(at..at + 8)?.try_into().ok()?))
    }
}

/// Where the parts of a frozen file are; all checked against its length.
#[derive(Debug, Clone, Copy)]
struct Layout {
    rules: usize,
    n_rules: usize,
    nets: usize,
    users: usize,
    strings: usize,
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
    layout: Layout,
    /// The lines that have decided, turned into [`Rule`]s: at most one per
    /// line, kept for the process's life (a handler decides once or a few
    /// times, and exits).
    decided: RefCell<Vec<(usize, &'static Rule)>>,
}

impl Clone for Frozen {
    fn clone(&self) -> Frozen {
        Frozen {
            store: self.store.clone(),
            layout: self.layout,
            decided: RefCell::new(self.decided.borrow().clone()),
        }
    }
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frozen({} rules)", self.layout.n_rules)
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
    let text = Identity::get(&Bytes(&bytes), 32).unwrap_or_default();
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
fn check(store: Rc<Snapshot>, text: Identity, check_deps: Option<&Trust>) -> Result<Opened, Unused> {
    let b = Bytes(&store);
    let bad = |why: &str| Unused::Stale(format!("it is damaged ({why})"));
    if b.0.len() < HEADER_LEN || &b.0[..8] != MAGIC {
        return Err(bad("no frozen-rules header"));
    }
    let version = &b.0[8..8 + VERSION_LEN];
    let version = &version[..version.iter().position(|&c| c == 0).unwrap_or(VERSION_LEN)];
    if version != VERSION.as_bytes() {
        return Err(Unused::Stale(format!(
            "it was written by socks4d {}, this is {VERSION}",
            String::from_utf8_lossy(version)
        )));
    }
    let recorded = Identity::get(&b, 32).ok_or_else(|| bad("header"))?;
    if recorded != text {
        return Err(Unused::Stale("the rules file has changed since it was compiled".into()));
    }
    let field = |at: usize| b.u32(at).map(|v| v as usize).ok_or_else(|| bad("header"));
    let (n_deps, n_rules, n_nets, n_users, strings_len) =
        (field(96)?, field(100)?, field(104)?, field(108)?, field(112)?);
    let deps = HEADER_LEN;
    let rules = deps + n_deps * DEP_LEN;
    let nets = rules + n_rules * RULE_LEN;
    let users = nets + n_nets * NET_LEN;
    let strings = users + n_users * USER_LEN;
    if strings.checked_add(strings_len) != Some(b.0.len()) {
        return Err(bad("its length"));
    }
    let layout = Layout {
        rules,
        n_rules,
        nets,
        users,
        strings,
    };
    let string = |off: u32, len: u32| -> Result<&[u8], Unused> {
        let (off, len) = (off as usize, len as usize);
        let end = off
            .checked_add(len)
            .filter(|&e| e <= strings_len)
            .ok_or_else(|| bad("a string"))?;
        Ok(&b.0[strings + off..strings + end])
    };
    let mut files = Vec::with_capacity(n_deps);
    for i in 0..n_deps {
        let at = deps + i * DEP_LEN;
        let path = string(b.u32(at).unwrap_or(NONE), b.u32(at + 4).unwrap_or(NONE))?;
        let identity = Identity::get(&b, at + 8).ok_or_else(|| bad("a dependency"))?;
        let path = Path::new(std::ffi::OsStr::from_bytes(path));
        files.push(path.to_path_buf());
        if let Some(trust) = check_deps {
            match trust.stat(path) {
                Ok(m) if Identity::of(&m) == identity => {}
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
    let within = |start: u32, count: u32, total: usize| u64::from(start) + u64::from(count) <= total as u64;
    let records_ok = records::<RULE_LEN>(&b.0[rules..nets]).all(|r| {
        let src = le32(r, 16);
        r[4] <= 1
            && r[5] <= 3
            && r[6] <= 6
            && src != 0
            && src != NONE
            && within(le32(r, 12), src, n_nets)
            && (le32(r, 24) == NONE || within(le32(r, 20), le32(r, 24), n_nets))
            && (le32(r, 32) == NONE || within(le32(r, 28), le32(r, 32), n_users))
            && within(le32(r, 36), le32(r, 40), strings_len)
            && (le32(r, 48) == NONE || within(le32(r, 44), le32(r, 48), strings_len))
    });
    let nets_ok = records::<NET_LEN>(&b.0[nets..users]).all(|n| matches!(le32(n, 0), 4 | 6));
    let users_ok = records::<USER_LEN>(&b.0[users..strings]).all(|u| within(le32(u, 0), le32(u, 4), strings_len));
    if !(records_ok && nets_ok && users_ok) {
        return Err(bad("a record"));
    }
    let hook = |at: usize| -> Result<Option<Hook>, Unused> {
        let line = field(at)?;
        if line == 0 {
            return Ok(None);
        }
        let command = string(b.u32(at + 4).unwrap_or(NONE), b.u32(at + 8).unwrap_or(NONE))?.to_vec();
        Ok(Some(Hook { line, command }))
    };
    let (no_identd, bad_id) = (hook(116)?, hook(128)?);
    Ok(Opened {
        frozen: Frozen {
            store: store.clone(),
            layout,
            decided: RefCell::new(Vec::new()),
        },
        no_identd,
        bad_id,
        text_hash: b.u64(24).unwrap_or(0),
        files,
    })
}

impl Frozen {
    /// The number of rules.
    pub fn len(&self) -> usize {
        self.layout.n_rules
    }

    pub fn is_empty(&self) -> bool {
        self.layout.n_rules == 0
    }

    /// The first line that matches `f`, as [`super::decide`] does for
    /// parsed rules.
    pub fn decide(&self, f: &Facts) -> Option<&Rule> {
        let b: &[u8] = &self.store;
        let l = &self.layout;
        let nets = &b[l.nets..l.users];
        let (src, dst) = (Ip::of(f.src), Ip::of(f.dst));
        let found = records::<RULE_LEN>(&b[l.rules..l.nets]).position(|r| {
            any_net(nets, le32(r, 12), le32(r, 16), src)
                && (le32(r, 24) == NONE || any_net(nets, le32(r, 20), le32(r, 24), dst))
                && op_of(r[6]).is_none_or(|op| op.holds(f.port, u16::from_le_bytes([r[8], r[9]])))
                && (le32(r, 32) == NONE
                    || (le32(r, 28)..le32(r, 28) + le32(r, 32)).any(|k| self.user(b, k as usize) == f.user))
        });
        found.map(|i| self.rule(i))
    }

    /// [`super::outlook`] for these rules: `None` when a line may permit
    /// or may decide with a command, else the line that denies every
    /// request of these facts (`Some(None)`: no line matches).
    pub fn outlook(&self, p: &Partial) -> Option<Option<&Rule>> {
        let b: &[u8] = &self.store;
        let l = &self.layout;
        let nets = &b[l.nets..l.users];
        let src = Ip::of(p.src);
        for (i, r) in records::<RULE_LEN>(&b[l.rules..l.nets]).enumerate() {
            if !any_net(nets, le32(r, 12), le32(r, 16), src) {
                continue;
            }
            let users = match (le32(r, 32) == NONE, p.user) {
                (true, _) => Reach::Surely,
                (false, Some(u)) if (le32(r, 28)..le32(r, 28) + le32(r, 32)).any(|k| self.user(b, k as usize) == u) => {
                    Reach::Surely
                }
                (false, Some(_)) => Reach::Never,
                (false, None) => Reach::Maybe,
            };
            let port = match (op_of(r[6]), p.port) {
                (None, _) => Reach::Surely,
                (Some(op), Some(port)) if op.holds(port, u16::from_le_bytes([r[8], r[9]])) => Reach::Surely,
                (Some(_), Some(_)) => Reach::Never,
                (Some(_), None) => Reach::Maybe,
            };
            if users == Reach::Never || port == Reach::Never {
                continue;
            }
            if r[4] == 1 || le32(r, 48) != NONE {
                return None;
            }
            if users == Reach::Surely && port == Reach::Surely && le32(r, 24) == NONE {
                return Some(Some(self.rule(i)));
            }
        }
        Some(None)
    }

    fn net(&self, b: &[u8], k: usize) -> Net {
        let n = record::<NET_LEN>(&b[self.layout.nets..], k);
        if le32(n, 0) == 4 {
            Net::V4 {
                addr: le32(n, 4),
                mask: le32(n, 20),
            }
        } else {
            Net::V6 {
                addr: le128(n, 4),
                mask: le128(n, 20),
            }
        }
    }

    fn string<'b>(&self, b: &'b [u8], off: usize, len: usize) -> &'b [u8] {
        &b[self.layout.strings + off..self.layout.strings + off + len]
    }

    fn user<'b>(&self, b: &'b [u8], k: usize) -> &'b [u8] {
        let u = record::<USER_LEN>(&b[self.layout.users..], k);
        self.string(b, le32(u, 0) as usize, le32(u, 4) as usize)
    }

    /// Rule `i`, made once.
    fn rule(&self, i: usize) -> &Rule {
        if let Some(&(_, r)) = self.decided.borrow().iter().find(|(k, _)| *k == i) {
            return r;
        }
        let r: &'static Rule = Box::leak(Box::new(self.make(i)));
        self.decided.borrow_mut().push((i, r));
        r
    }

    fn make(&self, i: usize) -> Rule {
        let b: &[u8] = &self.store;
        let r = record::<RULE_LEN>(&b[self.layout.rules..], i);
        let v = |k: usize| le32(r, k) as usize;
        let nets = |start: usize, count: usize| (start..start + count).map(|k| self.net(b, k)).collect();
        Rule {
            line: v(0),
            text: String::from_utf8_lossy(self.string(b, v(36), v(40))).into_owned(),
            action: if r[4] == 1 { Action::Permit } else { Action::Deny },
            ident: match r[5] {
                1 => Some(Mode::Required),
                2 => Some(Mode::Optional),
                3 => Some(Mode::Off),
                _ => None,
            },
            users: (v(32) != NONE as usize).then(|| (v(28)..v(28) + v(32)).map(|k| self.user(b, k).to_vec()).collect()),
            src: nets(v(12), v(16)),
            dst: (v(24) != NONE as usize).then(|| nets(v(20), v(24))),
            port: op_of(r[6]).map(|op| (op, u16::from_le_bytes([r[8], r[9]]))),
            command: (v(48) != NONE as usize).then(|| self.string(b, v(44), v(48)).to_vec()),
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

/// Parses rules file `path` with `parse` and writes its frozen file, by a
/// new file renamed into place, with the text's permissions less any
/// write bit for group and others. Refused: a file with errors, one that
/// names host names, and a caller that is neither root nor the file's
/// owner (a handler would not trust what it wrote). A file (or a user list
/// it names) whose newest time is less than [`SETTLE`] old is waited for,
/// once.
pub fn write(
    path: &Path,
    trust: &Trust,
    parse: impl Fn(&[u8], &mut dyn Lookups) -> Checked,
) -> Result<(PathBuf, usize), String> {
    let file = path.display().to_string();
    let euid = nix::unistd::geteuid().as_raw();
    for _ in 0..ATTEMPTS {
        let meta = std::fs::metadata(path).map_err(|e| format!("{file}: {e}"))?;
        if euid != 0 && euid != meta.uid() {
            return Err(format!(
                "{file} is owned by uid {}: only root or that user may compile it (a handler trusts no other)",
                meta.uid()
            ));
        }
        let services_before = std::fs::metadata(SERVICES_FILE).ok().map(|m| Identity::of(&m));
        let text = read_capped(path, trust).map_err(|e| format!("{file}: {}", trust::describe(&e)))?;
        let mut lookups = Recording {
            system: System::new(trust),
            deps: Vec::new(),
            changed: None,
        };
        let checked = parse(&text, &mut lookups);
        let rules = match checked.loaded {
            Ok(r) => r,
            Err(errors) => return Err(format!("{file}: {} error(s); not compiled", errors.len())),
        };
        if let Some(n) = checked.notes.iter().find(|n| n.kind == NoteKind::HostName) {
            return Err(format!(
                "{file}:{}: a host name in an address field is looked up each time the file is read, \
                 so the file is not compiled; write the address instead",
                n.line
            ));
        }
        let mut deps = lookups.deps;
        if rules.services.was_read() {
            let now = std::fs::metadata(SERVICES_FILE).ok().map(|m| Identity::of(&m));
            match (services_before, now) {
                (Some(a), Some(b)) if a == b => deps.push(Dep {
                    path: PathBuf::from(SERVICES_FILE),
                    identity: b,
                }),
                _ => continue,
            }
        }
        let after = Identity::of(&std::fs::metadata(path).map_err(|e| format!("{file}: {e}"))?);
        if after != Identity::of(&meta) || after.size != text.len() as u64 || lookups.changed.is_some() {
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
            Some(_) => {
                return Err(format!(
                    "{file} or a file it names has a time in the future; not compiled"
                ))
            }
        }
        let bytes = encode(&rules, after, hash(&text), &deps)?;
        let target = path_for(path);
        put(&target, &bytes, meta.mode() & 0o644).map_err(|e| format!("{}: {e}", target.display()))?;
        return Ok((target, rules.len()));
    }
    Err(format!("{file} kept changing while it was compiled; not compiled"))
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
    use super::super::{parse, Fixed, Services};
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
            dev: 1,
            ino: 2,
            size: TEXT.len() as u64,
            mtime: (1_700_000_000, 5),
            ctime: (1_700_000_001, 6),
            uid: 0,
            mode: 0o100644,
        }
    }

    fn parsed() -> Rules {
        let mut fs = Fixed::default().file("/etc/blocked", "eve\ntrent\n");
        parse(TEXT.as_bytes(), "t.conf", Services::default(), &mut fs).unwrap()
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
                        };
                        let want = super::super::decide(&rules, &f).rule;
                        let got = opened.frozen.decide(&f);
                        assert_eq!(got, want, "{user:?} {src} {dst} {port}");
                        seen.insert(got.map(|r| r.line));
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
        };
        let a = opened.frozen.decide(&f).unwrap() as *const Rule;
        let b = opened.frozen.decide(&f).unwrap() as *const Rule;
        assert_eq!(a, b);
        assert_eq!(opened.frozen.decided.borrow().len(), 1);
    }

    #[test]
    fn another_identity_or_version_is_stale() {
        let bytes = encoded();
        let mut other = identity();
        other.ctime.1 += 1;
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
        assert!(frozen(bytes[..HEADER_LEN - 1].to_vec()).is_err());
        // Every byte of the records changed in turn: refused, or still a
        // file whose every decision is in bounds.
        let f = Facts {
            user: b"eve",
            src: "10.0.0.1".parse().unwrap(),
            dst: "8.8.8.8".parse().unwrap(),
            port: 80,
        };
        for at in HEADER_LEN..bytes.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= x;
                if let Ok(o) = frozen(b) {
                    let _ = o.frozen.decide(&f);
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
    fn the_path_is_the_rules_file_and_a_suffix() {
        assert_eq!(
            path_for(Path::new("/etc/socks4d.conf")),
            Path::new("/etc/socks4d.conf.frozen")
        );
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(hash(b"permit 10.0.0.0/8"), hash(b"permit 10.0.0.0/9"));
    }
}
