//! The relay: both directions of one connection in one `poll` loop.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, MsgFlags};

use crate::net;

/// Bytes buffered per direction. Measured on loopback: 8 KiB buffers relay
/// at a fraction of the speed of 128 KiB ones, and larger ones gain nothing.
pub const BUFFER_SIZE: usize = 128 * 1024;
/// Pipe size per direction for the splice path (F_SETPIPE_SZ), chosen on
/// loopback with the bench (CPU per GiB relayed, 512 MiB runs): copy
/// 280-420 ms, 64 KiB pipes 150-230 ms, 256 KiB 130-150 ms, 1 MiB 80-120 ms.
/// 256 KiB takes most of the gain while each connection charges its user
/// 128 pipe pages against `fs.pipe-user-pages-soft` (16384 by default)
/// instead of 512, so that hundreds of relays under one user keep theirs.
pub const PIPE_SIZE: usize = 256 * 1024;
/// What a direction's pipe grows to once a read has filled it: a bulk
/// transfer whose sink takes the bytes more slowly than its source sends
/// them. Measured on loopback (static build, 512 MiB each way, six
/// rounds interleaved with bench/c-relay.c, which splices through
/// 256 KiB pipes): CPU per GiB 380/360 ms up/down at 256 KiB (the C relay
/// 400/415), 315/325 at 512 KiB, 305/320 at 1 MiB. Only such directions
/// pay the 64 pages more against the user's pipe quota; an interactive or
/// idle relay keeps [`PIPE_SIZE`]. Over the quota the kernel refuses
/// (EPERM) and the pipe stays as it is.
pub const BULK_PIPE_SIZE: usize = 512 * 1024;
/// A pipe smaller than this is not worth splicing through (the kernel
/// hands out one-page pipes to a user over its pipe quota): copy instead.
const MIN_PIPE_SIZE: usize = 64 * 1024;
/// The mode [`run`] uses.
const DEFAULT_MODE: Mode = Mode::Splice;

/// What ended a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Both directions finished cleanly; the client closed its side first.
    ClientEof,
    /// Both directions finished cleanly; the destination closed first.
    DestEof,
    /// The client's side failed (reset, or another socket error).
    ClientError(String),
    /// The destination's side failed.
    DestError(String),
    /// Nothing moved in either direction for the idle timeout.
    IdleTimeout,
    /// The relay's buffers could not be had.
    NoMemory(String),
}

impl End {
    /// The audit `end=` keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            End::ClientEof => "client-eof",
            End::DestEof => "dest-eof",
            End::ClientError(_) => "client-error",
            End::DestError(_) => "dest-error",
            End::IdleTimeout => "idle-timeout",
            End::NoMemory(_) => "no-memory",
        }
    }

    /// The errno text for the error variants.
    pub fn detail(&self) -> Option<&str> {
        match self {
            End::ClientError(e) | End::DestError(e) | End::NoMemory(e) => Some(e),
            _ => None,
        }
    }
}

/// What the relay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Bytes written to the destination (client → destination).
    pub up: u64,
    /// Bytes written to the client (destination → client).
    pub down: u64,
    pub end: End,
    /// How bytes moved in each direction.
    pub via: Via,
}

/// How one direction moved its bytes, in the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Splice,
    Copy,
}

/// The paths of both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    pub up: Path,
    pub down: Path,
}

impl Via {
    /// The audit `relay=` keyword: `splice` or `copy` when both directions
    /// went the same way, `mixed` when they did not.
    pub fn keyword(&self) -> &'static str {
        match (self.up, self.down) {
            (Path::Splice, Path::Splice) => "splice",
            (Path::Copy, Path::Copy) => "copy",
            _ => "mixed",
        }
    }
}

/// How bytes move from one socket to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `recv` into a buffer, `send` out of it: two copies through user
    /// memory.
    Copy,
    /// `splice(2)` into a pipe and out of it: the bytes stay in the
    /// kernel. Falls back to [`Mode::Copy`] where splice is refused.
    Splice,
}

/// One direction: bytes read from one socket and not yet written to the
/// other.
struct Flow {
    /// Bytes the client sent with its request; written before anything
    /// else in this direction.
    pending: Vec<u8>,
    sent_pending: usize,
    mover: Mover,
    /// The source sent EOF.
    eof: bool,
    /// EOF has been passed on with `shutdown(Write)` on the sink.
    shut: bool,
    /// Bytes written to the sink.
    bytes: u64,
}

/// A relay buffer of [`BUFFER_SIZE`] bytes in a mapping of its own: its
/// pages are the kernel's zero page until bytes arrive, so a relay that
/// copies costs memory only for what it has had in flight (an idle one,
/// none). Written with zeros, or taken from the heap where the allocator
/// may clear it, each cost 128 KiB per buffer and per handler; relays
/// copy when the user's pipe quota is spent, which is when they are many.
struct Buffer {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
}

impl Buffer {
    fn new() -> io::Result<Buffer> {
        let len = std::num::NonZeroUsize::new(BUFFER_SIZE).expect("a constant size");
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("no memory for the relay buffer: {e}"),
            )
        })?;
        Ok(Buffer { ptr })
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping is BUFFER_SIZE readable bytes, alive until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), BUFFER_SIZE) }
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and writable; `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<u8>(), BUFFER_SIZE) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`, once.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, BUFFER_SIZE) };
    }
}

enum Mover {
    Copy {
        buf: Buffer,
        start: usize,
        end: usize,
    },
    Splice {
        read_end: OwnedFd,
        write_end: OwnedFd,
        capacity: usize,
        /// Bytes in the pipe.
        held: usize,
        /// Growing the pipe to [`BULK_PIPE_SIZE`] was tried.
        grow_tried: bool,
    },
}

impl Mover {
    /// A buffer of [`BUFFER_SIZE`] bytes, or an error when the memory
    /// cannot be had (RLIMIT_AS, say) instead of an abort.
    fn copy() -> io::Result<Mover> {
        Ok(Mover::Copy {
            buf: Buffer::new()?,
            start: 0,
            end: 0,
        })
    }

    /// A pipe of [`PIPE_SIZE`] bytes, or the copy mover when no pipe can
    /// be had: out of descriptors, or over the user's pipe quota
    /// (`fs.pipe-user-pages-soft`), where the kernel hands out small
    /// pipes and refuses to grow them.
    fn splice() -> io::Result<Mover> {
        let Ok((read_end, write_end)) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) else {
            return Mover::copy();
        };
        // The kernel may grant less than asked (pipe-max-size); use what it gave.
        let capacity = fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32))
            .or_else(|_| fcntl(&write_end, FcntlArg::F_GETPIPE_SZ))
            .map(|n| n as usize)
            .unwrap_or(0);
        if capacity < MIN_PIPE_SIZE {
            return Mover::copy();
        }
        Ok(Mover::Splice {
            read_end,
            write_end,
            capacity,
            held: 0,
            grow_tried: false,
        })
    }

    fn path(&self) -> Path {
        match self {
            Mover::Copy { .. } => Path::Copy,
            Mover::Splice { .. } => Path::Splice,
        }
    }
}

enum Step {
    /// Something moved (or EOF arrived).
    Progress,
    /// Nothing to do until the socket is ready.
    Blocked,
}

const SPLICE_FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

impl Flow {
    fn new(mode: Mode, pending: &[u8]) -> io::Result<Flow> {
        Ok(Flow {
            pending: pending.to_vec(),
            sent_pending: 0,
            mover: match mode {
                Mode::Copy => Mover::copy()?,
                Mode::Splice => Mover::splice()?,
            },
            eof: false,
            shut: false,
            bytes: 0,
        })
    }

    fn wants_read(&self) -> bool {
        !self.eof
            && match &self.mover {
                Mover::Copy { buf, end, .. } => *end < buf.len(),
                Mover::Splice { capacity, held, .. } => held < capacity,
            }
    }

    fn wants_write(&self) -> bool {
        self.sent_pending < self.pending.len()
            || match &self.mover {
                Mover::Copy { start, end, .. } => start < end,
                Mover::Splice { held, .. } => *held > 0,
            }
    }

    fn read_from(&mut self, src: &TcpStream) -> io::Result<Step> {
        let result = match &mut self.mover {
            Mover::Copy { buf, end, .. } => socket::recv(src.as_raw_fd(), &mut buf[*end..], MsgFlags::empty()),
            Mover::Splice {
                write_end,
                capacity,
                held,
                ..
            } => splice(src, None, &*write_end, None, *capacity - *held, SPLICE_FLAGS),
        };
        match result {
            Ok(0) => {
                self.eof = true;
                Ok(Step::Progress)
            }
            Ok(n) => {
                match &mut self.mover {
                    Mover::Copy { end, .. } => *end += n,
                    Mover::Splice {
                        write_end,
                        capacity,
                        held,
                        grow_tried,
                        ..
                    } => {
                        *held += n;
                        if *held == *capacity && !*grow_tried {
                            // A full pipe: a bulk transfer. Once per
                            // direction; a refusal leaves the pipe as it is.
                            *grow_tried = true;
                            if let Ok(granted) = fcntl(&*write_end, FcntlArg::F_SETPIPE_SZ(BULK_PIPE_SIZE as i32)) {
                                *capacity = (granted as usize).max(*capacity);
                            }
                        }
                    }
                }
                Ok(Step::Progress)
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(Step::Blocked),
            // Splice refused for this socket before anything moved: the
            // pipe is empty, so switching to copying loses nothing.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) if self.fall_back() => self.read_from(src),
            Err(e) => Err(e.into()),
        }
    }

    fn write_to(&mut self, sink: &TcpStream) -> io::Result<Step> {
        let result = if self.sent_pending < self.pending.len() {
            socket::send(
                sink.as_raw_fd(),
                &self.pending[self.sent_pending..],
                MsgFlags::MSG_NOSIGNAL,
            )
            .inspect(|&n| {
                self.sent_pending += n;
            })
        } else {
            match &mut self.mover {
                Mover::Copy { buf, start, end } => {
                    socket::send(sink.as_raw_fd(), &buf[*start..*end], MsgFlags::MSG_NOSIGNAL).inspect(|&n| {
                        *start += n;
                        if start == end {
                            *start = 0;
                            *end = 0;
                        }
                    })
                }
                Mover::Splice { read_end, held, .. } => splice(&*read_end, None, sink, None, *held, SPLICE_FLAGS)
                    .inspect(|&n| {
                        *held -= n;
                    }),
            }
        };
        match result {
            Ok(n) => {
                self.bytes += n as u64;
                Ok(Step::Progress)
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(Step::Blocked),
            Err(e) => Err(e.into()),
        }
    }

    /// Turns an empty splice mover into a copy mover. False if there is
    /// nothing to fall back from, or bytes are in the pipe.
    fn fall_back(&mut self) -> bool {
        match self.mover {
            Mover::Splice { held: 0, .. } => match Mover::copy() {
                Ok(copy) => {
                    self.mover = copy;
                    true
                }
                Err(_) => false,
            },
            _ => false,
        }
    }

    /// Passes EOF on once everything read has been written.
    fn finish(&mut self, sink: &TcpStream) {
        if self.eof && !self.shut && !self.wants_write() {
            // ENOTCONN here means the sink is already gone; the other
            // direction will find out.
            let _ = sink.shutdown(Shutdown::Write);
            self.shut = true;
        }
    }
}

/// Which socket failed.
#[derive(Clone, Copy)]
enum Side {
    Client,
    Dest,
}

/// A relay with its pipes and buffers, ready to run. Preparing it before
/// the client is told "granted" means that a host out of memory refuses
/// the request instead of failing a granted one.
pub struct Relay {
    up: Flow,
    down: Flow,
}

impl Relay {
    /// The pipes (or buffers) for both directions, the way [`run`] moves
    /// bytes. `pending` is what the client sent after its request; it goes
    /// to the destination first. Fails only when the memory for a buffer
    /// cannot be had.
    pub fn prepare(pending: &[u8]) -> io::Result<Relay> {
        Relay::prepare_with(DEFAULT_MODE, pending)
    }

    /// The relay with `early` to go to the client before anything the
    /// destination sends: what a parent proxy sent after its answer.
    pub fn early_down(mut self, early: &[u8]) -> Relay {
        self.down.pending = early.to_vec();
        self
    }

    /// [`Relay::prepare`] with the way bytes are moved chosen by the caller.
    pub fn prepare_with(mode: Mode, pending: &[u8]) -> io::Result<Relay> {
        Ok(Relay {
            up: Flow::new(mode, pending)?,
            down: Flow::new(mode, &[])?,
        })
    }

    /// Relays between `client` and `dest` until both directions have
    /// ended, one side fails, or nothing moves for `idle` (`None`: no
    /// limit). Both sockets must be non-blocking.
    ///
    /// EOF from one side is passed on as `shutdown(Write)` on the other
    /// once its buffer is flushed, and the other direction goes on. While
    /// the relay runs both sockets are set to reset on close, so when one
    /// side fails or the process dies (killed for memory, say), neither
    /// peer mistakes a cut-short stream for a complete one. Only a relay
    /// whose two directions both finished, or that sat idle past `idle`
    /// with nothing in flight, closes them cleanly. Both sockets are closed
    /// before returning.
    pub fn run(self, client: TcpStream, dest: TcpStream, idle: Option<Duration>) -> Summary {
        net::reset_on_close(&client);
        net::reset_on_close(&dest);
        let summary = relay(self.up, self.down, &client, &dest, idle);
        if matches!(summary.end, End::ClientEof | End::DestEof | End::IdleTimeout) {
            net::close_cleanly(&client);
            net::close_cleanly(&dest);
        }
        summary
    }
}

/// Prepares and runs a relay the default way; see [`Relay::run`].
pub fn run(client: TcpStream, dest: TcpStream, pending: &[u8], idle: Option<Duration>) -> Summary {
    run_with(DEFAULT_MODE, client, dest, pending, idle)
}

/// [`run`] with the way bytes are moved chosen by the caller.
pub fn run_with(mode: Mode, client: TcpStream, dest: TcpStream, pending: &[u8], idle: Option<Duration>) -> Summary {
    match Relay::prepare_with(mode, pending) {
        Ok(r) => r.run(client, dest, idle),
        Err(e) => {
            net::reset_on_close(&client);
            net::reset_on_close(&dest);
            Summary {
                up: 0,
                down: 0,
                end: End::NoMemory(e.to_string()),
                via: Via {
                    up: Path::Copy,
                    down: Path::Copy,
                },
            }
        }
    }
}

fn relay(mut up: Flow, mut down: Flow, client: &TcpStream, dest: &TcpStream, idle: Option<Duration>) -> Summary {
    let mut first_eof: Option<End> = None;
    let mut last_activity = Instant::now();

    let end = loop {
        up.finish(dest);
        down.finish(client);
        if up.eof && first_eof.is_none() {
            first_eof = Some(End::ClientEof);
        }
        if down.eof && first_eof.is_none() {
            first_eof = Some(End::DestEof);
        }
        if up.shut && down.shut {
            break first_eof.unwrap_or(End::ClientEof);
        }

        let client_events = flags(up.wants_read(), down.wants_write());
        let dest_events = flags(down.wants_read(), up.wants_write());
        let timeout = match idle {
            None => PollTimeout::NONE,
            Some(limit) => match (last_activity + limit).checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => {
                    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
                _ => break End::IdleTimeout,
            },
        };

        // A socket with nothing wanted stays out of the set: poll reports
        // POLLHUP whatever was asked, and that would spin.
        let c = PollFd::new(client.as_fd(), client_events);
        let d = PollFd::new(dest.as_fd(), dest_events);
        let (mut set, sides, n) = match (client_events.is_empty(), dest_events.is_empty()) {
            (false, false) => ([c, d], [Side::Client, Side::Dest], 2),
            (false, true) => ([c, d], [Side::Client, Side::Dest], 1),
            (true, false) => ([d, c], [Side::Dest, Side::Client], 1),
            // Cannot happen: a flow that is not shut wants to read or to
            // write, and the loop ends when both are shut.
            (true, true) => break first_eof.unwrap_or(End::ClientEof),
        };
        match nix::poll::poll(&mut set[..n], timeout) {
            Ok(0) => continue, // the idle check above decides
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => break End::ClientError(format!("poll: {e}")),
        }

        let mut failed = None;
        for (&side, p) in sides.iter().zip(&set[..n]) {
            let revents = p.revents().unwrap_or(PollFlags::empty());
            if revents.is_empty() {
                continue;
            }
            let result = match side {
                Side::Client => pump(client, dest, &mut up, &mut down),
                Side::Dest => pump(dest, client, &mut down, &mut up),
            };
            match result {
                Ok(Step::Progress) => last_activity = Instant::now(),
                Ok(Step::Blocked) if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) => {
                    // Ready with an error but no operation could move: take
                    // the pending error, or call it a hang-up.
                    let sock = match side {
                        Side::Client => &client,
                        Side::Dest => &dest,
                    };
                    let why = match socket::getsockopt(sock, sockopt::SocketError) {
                        Ok(e) if e != 0 => io::Error::from_raw_os_error(e).to_string(),
                        _ => "connection hung up".to_string(),
                    };
                    failed = Some((side, why));
                }
                Ok(Step::Blocked) => {}
                Err(e) => failed = Some((side, e.to_string())),
            }
            if failed.is_some() {
                break;
            }
        }
        if let Some((side, why)) = failed {
            match side {
                Side::Client => {
                    net::reset_on_close(dest);
                    break End::ClientError(why);
                }
                Side::Dest => {
                    net::reset_on_close(client);
                    break End::DestError(why);
                }
            }
        }
    };

    Summary {
        up: up.bytes,
        down: down.bytes,
        end,
        via: Via {
            up: up.mover.path(),
            down: down.mover.path(),
        },
    }
}

/// Does what `fd` is wanted for: read into `from_fd` (the flow whose
/// source it is) and write out `to_fd` (the flow whose sink it is). An
/// error names the socket `fd` when it came from reading or writing `fd`;
/// errors from `other` surface when `other` is polled.
fn pump(fd: &TcpStream, other: &TcpStream, from_fd: &mut Flow, to_fd: &mut Flow) -> io::Result<Step> {
    let mut step = Step::Blocked;
    if from_fd.wants_read() {
        if let Step::Progress = from_fd.read_from(fd)? {
            step = Step::Progress;
            // Pass the new bytes on at once rather than after another poll.
            // An error here shows again when `other` is polled for writing,
            // and is reported against `other` then.
            if from_fd.wants_write() {
                let _ = from_fd.write_to(other);
            }
        }
    }
    if to_fd.wants_write() {
        if let Step::Progress = to_fd.write_to(fd)? {
            step = Step::Progress;
        }
    }
    Ok(step)
}

fn flags(read: bool, write: bool) -> PollFlags {
    let mut f = PollFlags::empty();
    if read {
        f |= PollFlags::POLLIN;
    }
    if write {
        f |= PollFlags::POLLOUT;
    }
    f
}
