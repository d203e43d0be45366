//! The seccomp allow-list of a handler and its commands, written as data:
//! the system calls of a network service that reads files, runs commands
//! and talks TCP, UDP (name service) and local sockets. Everything else
//! fails with `EPERM`, among it: ptrace and reading other processes'
//! memory, mounts and namespaces, keyrings, BPF, perf, io_uring, kernel
//! modules, clocks, host names, swap, reboot, SysV IPC and POSIX message
//! queues, privilege changes (set*id, capset, chroot), scheduling and
//! resource changes, changes of a file's mode, owner, times or flags
//! (chmod, chown, utimes and their relatives, the `chattr` ioctls:
//! Landlock does not govern metadata, so these would reach any file of
//! the service user's, wherever it is), memfd_create, and sockets other
//! than IPv4, IPv6 and Unix (no raw sockets, no netlink, no packet
//! sockets). Memory may not be writable and executable at once, and no
//! personality other than Linux's may be set.
//!
//! The filter kills the process on a foreign architecture's system call
//! numbers (as `SystemCallArchitectures=native`).
//!
//! [`PROGRAM`] is the table compiled, while socks4d is compiled (a `const`),
//! into one small classic-BPF program:
//! the calls whose arguments matter are tested first, each by number; every
//! other call is one bit in a bitmap of allowed numbers. The kernel caches
//! the answer for each call whose verdict does not depend on arguments, so
//! those cost nothing at run time. Installing is not free: the kernel
//! converts the program to eBPF and JIT-compiles it in every process
//! (about a fifth of a handler's CPU time in `perf` with 183
//! instructions), so conditions test a set of values with one load, and
//! all leaves share one allow and one EPERM: 111 instructions. Nothing is
//! built at run time: building it at each connection (a `BTreeMap`,
//! sorted) was about 100 000 instructions.

use std::collections::BTreeMap;

use nix::libc;

/// Allowed whatever their arguments.
const ALLOWED: &[i64] = &[
    // I/O on descriptors
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_lseek,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_vmsplice,
    libc::SYS_copy_file_range,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_signalfd4,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    // Files (Landlock decides which)
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_umask,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    // Not chmod, chown or utimes in any form: Landlock does not govern a
    // file's metadata, and the service user may own files anywhere.
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    // Memory (mmap and mprotect below)
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_msync,
    libc::SYS_mincore,
    libc::SYS_mlock,
    libc::SYS_munlock,
    libc::SYS_membarrier,
    libc::SYS_get_mempolicy,
    // Processes and threads (clone below)
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getpgid,
    libc::SYS_setpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_capget,
    libc::SYS_prctl,
    libc::SYS_set_tid_address,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_get_priority_max,
    libc::SYS_getpriority,
    libc::SYS_getrusage,
    // Limits may be read (prlimit64 below).
    libc::SYS_getrlimit,
    libc::SYS_times,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrandom,
    libc::SYS_pidfd_open,
    // Signals (Landlock keeps them inside the handler)
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_pidfd_send_signal,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    // Time
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_setitimer,
    libc::SYS_getitimer,
    // Sockets (socket and socketpair below)
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // Restricting oneself further is always allowed.
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_restrict_self,
    libc::SYS_seccomp,
];

/// The older calls that only x86_64 has; glibc and programs built for it
/// still use some of them.
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[i64] = &[
    libc::SYS_open,
    libc::SYS_creat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_getdents,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_link,
    libc::SYS_symlink,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_create,
    libc::SYS_eventfd,
    libc::SYS_signalfd,
    libc::SYS_inotify_init,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_getpgrp,
    libc::SYS_alarm,
    libc::SYS_pause,
    libc::SYS_time,
    libc::SYS_accept,
    libc::SYS_arch_prctl,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[i64] = &[];

const PROT_WX: u32 = (libc::PROT_WRITE | libc::PROT_EXEC) as u32;
const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;
/// `_IOW('X', 32, struct fsxattr)`: sets a file's extended flags (as
/// `chattr` and `xfs_io` do); not in libc.
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
/// `socket(2)`'s type without SOCK_NONBLOCK and SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u32 = 0xf;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_003e);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_00b7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// What the filter answers for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Fails with this errno.
    Errno(u16),
    /// Allowed when one of these alternatives holds: each is a list of
    /// conditions that must all hold; otherwise EPERM.
    Check(Vec<Vec<Cond>>),
}

/// A condition on the low 32 bits of argument `arg` (or, with `high`, its
/// high 32 bits): `value & mask` is one of `any_of`, or with `negate`
/// none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub high: bool,
    pub mask: u32,
    pub any_of: &'static [u32],
    pub negate: bool,
}

/// `arg` is one of `values`.
const fn is(arg: u8, values: &'static [u32]) -> Cond {
    masked(arg, u32::MAX, values)
}

/// `arg & mask` is one of `values`.
const fn masked(arg: u8, mask: u32, values: &'static [u32]) -> Cond {
    Cond {
        arg,
        high: false,
        mask,
        any_of: values,
        negate: false,
    }
}

/// `arg & mask` is none of `values`.
const fn masked_not(arg: u8, mask: u32, values: &'static [u32]) -> Cond {
    Cond {
        negate: true,
        ..masked(arg, mask, values)
    }
}

/// The high 32 bits of `arg` are one of `values`.
const fn high_is(arg: u8, values: &'static [u32]) -> Cond {
    Cond {
        high: true,
        ..is(arg, values)
    }
}

/// A call whose verdict is not a plain allow.
#[derive(Debug, Clone, Copy)]
enum Special {
    Errno(u16),
    /// Allowed when one alternative's conditions all hold; else EPERM.
    Check(&'static [&'static [Cond]]),
}

const NO_EXEC: &[&[Cond]] = &[&[masked(2, libc::PROT_EXEC as u32, &[0])]];
const INET: &[u32] = &[libc::AF_INET as u32, libc::AF_INET6 as u32];

/// `socket(2)`: Unix of any type; IPv4 and IPv6 streams (TCP) and
/// datagrams (UDP, for the name service), nothing raw.
const SOCKET: &[&[Cond]] = &[
    &[is(0, &[libc::AF_UNIX as u32])],
    &[
        is(0, INET),
        masked(1, SOCK_TYPE_MASK, &[libc::SOCK_STREAM as u32]),
        is(2, &[0, libc::IPPROTO_TCP as u32]),
    ],
    &[
        is(0, INET),
        masked(1, SOCK_TYPE_MASK, &[libc::SOCK_DGRAM as u32]),
        is(2, &[0, libc::IPPROTO_UDP as u32]),
    ],
];

/// The calls whose arguments matter, or that fail with another errno.
const SPECIAL: &[(i64, Special)] = &[
    // W^X: mmap never writable and executable at once; mprotect never
    // makes memory executable.
    (libc::SYS_mmap, Special::Check(&[&[masked_not(2, PROT_WX, &[PROT_WX])]])),
    (libc::SYS_mprotect, Special::Check(NO_EXEC)),
    (libc::SYS_pkey_mprotect, Special::Check(NO_EXEC)),
    // Threads and processes, but no new namespaces. clone3 hides its flags
    // in memory a filter cannot read: ENOSYS makes glibc fall back to clone.
    (libc::SYS_clone, Special::Check(&[&[masked(0, NAMESPACE_FLAGS, &[0])]])),
    (libc::SYS_clone3, Special::Errno(libc::ENOSYS as u16)),
    // Limits may be read, not changed: prlimit64 with no new limit.
    (libc::SYS_prlimit64, Special::Check(&[&[is(2, &[0]), high_is(2, &[0])]])),
    // Only the Linux personality (0), or asking for the current one.
    (libc::SYS_personality, Special::Check(&[&[is(0, &[0, 0xffff_ffff])]])),
    (libc::SYS_socket, Special::Check(SOCKET)),
    // Any ioctl but the two that type into a terminal (a descriptor opened
    // before the confinement, such as --listen's stderr, may be one) and
    // those that set a file's flags (chattr). The kernel takes the request
    // as 32 bits.
    (
        libc::SYS_ioctl,
        Special::Check(&[&[masked_not(
            1,
            u32::MAX,
            &[
                libc::TIOCSTI as u32,
                libc::TIOCLINUX as u32,
                libc::FS_IOC_SETFLAGS as u32,
                libc::FS_IOC32_SETFLAGS as u32,
                FS_IOC_FSSETXATTR,
            ],
        )]]),
    ),
    (
        libc::SYS_socketpair,
        Special::Check(&[&[is(0, &[libc::AF_UNIX as u32])]]),
    ),
];

/// The whole policy, for reading and for the tests: every call with a
/// rule, the rest EPERM. The program installed is [`PROGRAM`], compiled
/// from the same constants.
pub fn table() -> BTreeMap<u32, Verdict> {
    let mut t: BTreeMap<u32, Verdict> = ALLOWED
        .iter()
        .chain(ALLOWED_X86_64)
        .map(|&nr| (nr as u32, Verdict::Allow))
        .collect();
    for &(nr, special) in SPECIAL {
        let v = match special {
            Special::Errno(e) => Verdict::Errno(e),
            Special::Check(alts) => Verdict::Check(alts.iter().map(|a| a.to_vec()).collect()),
        };
        t.insert(nr as u32, v);
    }
    t
}

// Classic BPF, as seccomp runs it.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const LD_IMM: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_IMM) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RSH_K: u16 = (libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K) as u16;
const RSH_X: u16 = (libc::BPF_ALU | libc::BPF_RSH | libc::BPF_X) as u16;
const TAX: u16 = (libc::BPF_MISC | libc::BPF_TAX) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const fn ret_errno(errno: u16) -> u32 {
    libc::SECCOMP_RET_ERRNO | errno as u32
}

const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The number of 32-bit words of the bitmap of plainly allowed calls.
const WORDS: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < ALLOWED.len() + ALLOWED_X86_64.len() {
        let nr = allowed_at(i);
        if nr > max {
            max = nr;
        }
        i += 1;
    }
    (max / 32 + 1) as usize
};

const fn allowed_at(i: usize) -> u32 {
    let nr = if i < ALLOWED.len() {
        ALLOWED[i]
    } else {
        ALLOWED_X86_64[i - ALLOWED.len()]
    };
    assert!(nr >= 0 && nr < 4096, "system call number out of range");
    nr as u32
}

/// Room for the program while it is built; [`PROGRAM`] is cut to size.
const MAX_PROGRAM_LEN: usize = 512;

/// The instructions of a special call's leaf.
const fn leaf_len(special: Special) -> usize {
    match special {
        Special::Errno(_) => 1,
        Special::Check(alts) => {
            let mut n = 0;
            let mut a = 0;
            while a < alts.len() {
                let mut c = 0;
                while c < alts[a].len() {
                    let cond = alts[a][c];
                    n += 1 + (cond.mask != u32::MAX) as usize + cond.any_of.len();
                    c += 1;
                }
                a += 1;
            }
            n
        }
    }
}

/// The program: check the architecture and load the call number; the
/// calls of [`SPECIAL`] by number, each jumping to its leaf; then the
/// bitmap of plain allowed calls, in 32-bit words: word `nr >> 5`, bit
/// `nr & 31`. Anything else is EPERM, including numbers past the bitmap
/// (such as x86_64's x32 calls). The leaves test their arguments and jump
/// to one shared allow or one shared EPERM at the end. Built while
/// compiling socks4d; a jump that does not fit its byte, or a call listed
/// twice, stops the build.
const fn compile(arch: u32) -> ([libc::sock_filter; MAX_PROGRAM_LEN], usize) {
    let mut words = [0u32; WORDS];
    let mut i = 0;
    while i < ALLOWED.len() + ALLOWED_X86_64.len() {
        let nr = allowed_at(i);
        assert!(
            words[(nr >> 5) as usize] & (1 << (nr & 31)) == 0,
            "a call is listed twice"
        );
        words[(nr >> 5) as usize] |= 1 << (nr & 31);
        i += 1;
    }
    let mut n_words = 0;
    let mut w = 0;
    while w < WORDS {
        n_words += (words[w] != 0) as usize;
        w += 1;
    }
    let mut leaves = 0;
    let mut s = 0;
    while s < SPECIAL.len() {
        let nr = SPECIAL[s].0 as u32;
        assert!(
            (nr >> 5) as usize >= WORDS || words[(nr >> 5) as usize] & (1 << (nr & 31)) == 0,
            "a call is both allowed and special"
        );
        leaves += leaf_len(SPECIAL[s].1);
        s += 1;
    }

    // The layout, so that every jump is known when it is written.
    let first_special = 4;
    let past_bitmap = first_special + SPECIAL.len();
    let first_word = past_bitmap + 5;
    let no_word = first_word + 3 * n_words;
    let test = no_word + 1;
    let first_leaf = test + 2;
    let allow = first_leaf + leaves;
    let deny = allow + 1;
    let len = deny + 1;
    assert!(len <= MAX_PROGRAM_LEN, "the filter is too long");

    let mut p = [stmt(0, 0); MAX_PROGRAM_LEN];
    p[0] = stmt(LD_W_ABS, ARCH_OFFSET);
    p[1] = jump(JEQ_K, arch, 1, 0);
    p[2] = stmt(RET_K, RET_KILL);
    p[3] = stmt(LD_W_ABS, NR_OFFSET);
    p[past_bitmap] = jump(JGE_K, WORDS as u32 * 32, short(deny - past_bitmap - 1), 0);
    // X = bit, A = word index.
    p[past_bitmap + 1] = stmt(AND_K, 31);
    p[past_bitmap + 2] = stmt(TAX, 0);
    p[past_bitmap + 3] = stmt(LD_W_ABS, NR_OFFSET);
    p[past_bitmap + 4] = stmt(RSH_K, 5);
    let mut n = first_word;
    w = 0;
    while w < WORDS {
        if words[w] != 0 {
            p[n] = jump(JEQ_K, w as u32, 0, 2);
            p[n + 1] = stmt(LD_IMM, words[w]);
            p[n + 2] = stmt(JA, (test - (n + 2) - 1) as u32);
            n += 3;
        }
        w += 1;
    }
    // No word of that index: the word is 0, so deny.
    p[no_word] = stmt(LD_IMM, 0);
    p[test] = stmt(RSH_X, 0);
    p[test + 1] = jump(JSET_K, 1, short(allow - test - 2), short(deny - test - 2));

    // The leaves: an errno, or alternatives of conditions, each a load, an
    // optional mask and one compare per value; a condition that fails
    // jumps to the next alternative (the last one's to EPERM), the last
    // condition that holds to allow.
    n = first_leaf;
    s = 0;
    while s < SPECIAL.len() {
        let at = first_special + s;
        p[at] = jump(JEQ_K, SPECIAL[s].0 as u32, short(n - at - 1), 0);
        match SPECIAL[s].1 {
            Special::Errno(e) => {
                p[n] = stmt(RET_K, ret_errno(e));
                n += 1;
            }
            Special::Check(alts) => {
                let mut a = 0;
                while a < alts.len() {
                    let alt = alts[a];
                    let mut alt_len = 0;
                    let mut c = 0;
                    while c < alt.len() {
                        alt_len += 1 + (alt[c].mask != u32::MAX) as usize + alt[c].any_of.len();
                        c += 1;
                    }
                    let fail = if a + 1 < alts.len() { n + alt_len } else { deny };
                    c = 0;
                    while c < alt.len() {
                        let cond = alt[c];
                        let cond_len = 1 + (cond.mask != u32::MAX) as usize + cond.any_of.len();
                        let pass = if c + 1 < alt.len() { n + cond_len } else { allow };
                        // Little-endian: the low word comes first.
                        let off = ARGS_OFFSET + 8 * cond.arg as u32 + if cond.high { 4 } else { 0 };
                        let off = if cfg!(target_endian = "big") { off ^ 4 } else { off };
                        p[n] = stmt(LD_W_ABS, off);
                        n += 1;
                        if cond.mask != u32::MAX {
                            p[n] = stmt(AND_K, cond.mask);
                            n += 1;
                        }
                        let mut v = 0;
                        while v < cond.any_of.len() {
                            let last = v + 1 == cond.any_of.len();
                            // Offsets are from the next instruction.
                            let (to_pass, to_fail) = (short(pass - n - 1), short(fail - n - 1));
                            p[n] = match (cond.negate, last) {
                                (false, false) => jump(JEQ_K, cond.any_of[v], to_pass, 0),
                                (false, true) => jump(JEQ_K, cond.any_of[v], to_pass, to_fail),
                                (true, false) => jump(JEQ_K, cond.any_of[v], to_fail, 0),
                                (true, true) => jump(JEQ_K, cond.any_of[v], to_fail, to_pass),
                            };
                            n += 1;
                            v += 1;
                        }
                        c += 1;
                    }
                    a += 1;
                }
            }
        }
        s += 1;
    }
    assert!(n == allow, "the leaves are not where they were laid out");
    p[allow] = stmt(RET_K, RET_ALLOW);
    p[deny] = stmt(RET_K, ret_errno(libc::EPERM as u16));
    (p, len)
}

/// A conditional jump's offset, which must fit in a byte.
const fn short(offset: usize) -> u8 {
    assert!(offset <= u8::MAX as usize, "a filter jump is too long for its byte");
    offset as u8
}

const COMPILED: ([libc::sock_filter; MAX_PROGRAM_LEN], usize) = match AUDIT_ARCH {
    Some(arch) => compile(arch),
    None => ([stmt(0, 0); MAX_PROGRAM_LEN], 0),
};

/// The filter's program for this architecture, compiled with socks4d:
/// a handler installs it without building anything.
pub const PROGRAM: [libc::sock_filter; COMPILED.1] = {
    let mut p = [stmt(0, 0); COMPILED.1];
    let mut i = 0;
    while i < p.len() {
        p[i] = COMPILED.0[i];
        i += 1;
    }
    p
};

/// The filter, ready to apply (in each `--listen` child too).
pub struct Filter {
    program: &'static [libc::sock_filter],
}

impl Filter {
    /// The filter for this architecture, or why there is none.
    pub fn new() -> Result<Filter, String> {
        if AUDIT_ARCH.is_none() {
            return Err(format!("no filter for architecture {}", std::env::consts::ARCH));
        }
        Ok(Filter { program: &PROGRAM })
    }

    /// The program, for inspection.
    pub fn program(&self) -> &[libc::sock_filter] {
        self.program
    }

    /// Installs the filter on the calling thread (and so on every thread
    /// and process it starts from now on). Sets no_new_privs first. An
    /// error is a sentence for the log: why, and what is left unfiltered;
    /// with `true` when the host ran short of memory rather than lacked
    /// the feature.
    pub fn apply(&self) -> Result<(), (String, bool)> {
        if let Err(e) = nix::sys::prctl::set_no_new_privs() {
            return Err((
                format!("prctl(PR_SET_NO_NEW_PRIVS): {e}; system calls not filtered"),
                false,
            ));
        }
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `self.program`, alive for the call; the
        // kernel copies the program.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            let short = e.raw_os_error() == Some(libc::ENOMEM);
            return Err((format!("{}; system calls not filtered", why_not(&e)), short));
        }
        Ok(())
    }
}

/// Why a filter could not be installed, in words for the log.
fn why_not(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        // A kernel with seccomp but without CONFIG_SECCOMP_FILTER.
        Some(libc::EINVAL) => "no system-call filters in this kernel (EINVAL)".into(),
        Some(libc::ENOSYS) => "not in this kernel (ENOSYS)".into(),
        _ => format!("seccomp(2): {e}"),
    }
}

/// Runs `program` on a call as the kernel would: the return value.
#[cfg(test)]
pub fn run(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            NR_OFFSET => nr,
            ARCH_OFFSET => arch,
            o if o >= ARGS_OFFSET => {
                let a = args[((o - ARGS_OFFSET) / 8) as usize];
                if (o - ARGS_OFFSET).is_multiple_of(8) {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => panic!("load at {off}"),
        }
    };
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    loop {
        let i = program[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => a = word(i.k),
            LD_IMM => a = i.k,
            AND_K => a &= i.k,
            RSH_K => a >>= i.k,
            RSH_X => a >>= x,
            TAX => x = a,
            JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
            JA => pc += i.k as usize,
            JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
            JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
            RET_K => return i.k,
            other => panic!("opcode {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        let f = Filter::new().expect("filter");
        run(f.program(), AUDIT_ARCH.unwrap(), nr as u32, args)
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn every_listed_call_is_allowed_and_the_program_is_short() {
        let f = Filter::new().unwrap();
        // The kernel converts and JIT-compiles every instruction at each
        // connection: keep it short.
        assert!(f.program().len() <= 120, "{} instructions", f.program().len());
        for &nr in ALLOWED.iter().chain(ALLOWED_X86_64) {
            assert_eq!(verdict(nr, [0; 6]), RET_ALLOW, "call {nr}");
        }
    }

    #[test]
    fn every_number_gets_its_table_verdict() {
        let t = table();
        let f = Filter::new().unwrap();
        let arch = AUDIT_ARCH.unwrap();
        for nr in (0..1100).chain([0x4000_0000, 0x4000_0001, 0x4000_0000 + libc::SYS_read as u32, u32::MAX]) {
            let got = run(f.program(), arch, nr, [0; 6]);
            let want = match t.get(&nr) {
                None => EPERM,
                Some(Verdict::Allow) => RET_ALLOW,
                Some(Verdict::Errno(e)) => ret_errno(*e),
                Some(Verdict::Check(_)) => continue,
            };
            assert_eq!(got, want, "call {nr}");
        }
    }

    #[test]
    fn a_foreign_architecture_is_killed() {
        let f = Filter::new().unwrap();
        assert_eq!(run(f.program(), 0x4000_0003, libc::SYS_read as u32, [0; 6]), RET_KILL);
    }

    #[test]
    // The libc constants' types differ between targets.
    #[allow(clippy::unnecessary_cast)]
    fn arguments_decide_where_they_should() {
        let (r, w, x) = (libc::PROT_READ as u64, libc::PROT_WRITE as u64, libc::PROT_EXEC as u64);
        assert_eq!(verdict(libc::SYS_mmap, [0, 4096, r | w, 0, 0, 0]), RET_ALLOW);
        assert_eq!(verdict(libc::SYS_mmap, [0, 4096, r | x, 0, 0, 0]), RET_ALLOW);
        assert_eq!(verdict(libc::SYS_mmap, [0, 4096, r | w | x, 0, 0, 0]), EPERM);
        assert_eq!(verdict(libc::SYS_mprotect, [0, 4096, r, 0, 0, 0]), RET_ALLOW);
        assert_eq!(verdict(libc::SYS_mprotect, [0, 4096, r | x, 0, 0, 0]), EPERM);
        let sock = |d: i32, t: i32, p: i32| verdict(libc::SYS_socket, [d as u64, t as u64, p as u64, 0, 0, 0]);
        let nb = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM | nb, 0), RET_ALLOW);
        assert_eq!(sock(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP), RET_ALLOW);
        assert_eq!(sock(libc::AF_UNIX, libc::SOCK_DGRAM | nb, 0), RET_ALLOW);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP), EPERM);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP), EPERM);
        assert_eq!(sock(libc::AF_NETLINK, libc::SOCK_RAW, 0), EPERM);
        assert_eq!(sock(libc::AF_PACKET, libc::SOCK_RAW, 0), EPERM);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(verdict(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            verdict(libc::SYS_clone, [thread | libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(verdict(libc::SYS_clone3, [0; 6]), ret_errno(libc::ENOSYS as u16));
        assert_eq!(verdict(libc::SYS_prlimit64, [0, 4, 0, 0x1000, 0, 0]), RET_ALLOW);
        assert_eq!(verdict(libc::SYS_prlimit64, [0, 4, 0x1000, 0, 0, 0]), EPERM);
        assert_eq!(verdict(libc::SYS_prlimit64, [0, 4, 1 << 40, 0, 0, 0]), EPERM);
        assert_eq!(verdict(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(verdict(libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0]), EPERM);
        let ioctl = |req: u64| verdict(libc::SYS_ioctl, [1, req, 0, 0, 0, 0]);
        assert_eq!(ioctl(libc::FIONBIO as u64), RET_ALLOW);
        assert_eq!(ioctl(libc::TCGETS as u64), RET_ALLOW);
        assert_eq!(ioctl(libc::TIOCSTI as u64), EPERM);
        assert_eq!(ioctl(libc::TIOCLINUX as u64), EPERM);
        assert_eq!(ioctl((1 << 32) | libc::TIOCSTI as u64), EPERM);
        assert_eq!(ioctl(libc::FS_IOC_GETFLAGS as u64), RET_ALLOW);
        assert_eq!(ioctl(libc::FS_IOC_SETFLAGS as u64), EPERM);
        assert_eq!(ioctl(libc::FS_IOC32_SETFLAGS as u64), EPERM);
        assert_eq!(ioctl(FS_IOC_FSSETXATTR as u64), EPERM);
    }

    #[test]
    fn a_kernel_without_filters_is_named() {
        let err = |errno| std::io::Error::from_raw_os_error(errno);
        assert_eq!(
            why_not(&err(libc::EINVAL)),
            "no system-call filters in this kernel (EINVAL)"
        );
        assert_eq!(why_not(&err(libc::ENOSYS)), "not in this kernel (ENOSYS)");
        assert!(why_not(&err(libc::EFAULT)).starts_with("seccomp(2): "));
    }

    #[test]
    fn dangerous_calls_are_denied() {
        for nr in [
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_keyctl,
            libc::SYS_io_uring_setup,
            libc::SYS_setuid,
            libc::SYS_setgroups,
            libc::SYS_capset,
            libc::SYS_chroot,
            libc::SYS_init_module,
            libc::SYS_reboot,
            libc::SYS_clock_settime,
            libc::SYS_sethostname,
            libc::SYS_shmget,
            libc::SYS_mq_open,
            libc::SYS_setrlimit,
            libc::SYS_memfd_create,
            libc::SYS_userfaultfd,
            libc::SYS_pidfd_getfd,
            libc::SYS_syslog,
            // A file's metadata, in every form.
            libc::SYS_fchmod,
            libc::SYS_fchmodat,
            libc::SYS_fchmodat2,
            libc::SYS_fchown,
            libc::SYS_fchownat,
            libc::SYS_utimensat,
            libc::SYS_setxattr,
            libc::SYS_lsetxattr,
            libc::SYS_fsetxattr,
            libc::SYS_removexattr,
            libc::SYS_fremovexattr,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_chmod,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_chown,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_lchown,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_utime,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_utimes,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_futimesat,
        ] {
            assert_eq!(verdict(nr, [0; 6]), EPERM, "system call {nr}");
        }
    }
}
