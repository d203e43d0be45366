//! The seccomp allow-list of a handler and its commands, written as data:
//! the system calls of a network service that reads files, runs commands
//! and talks TCP, UDP (name service) and local sockets. Everything else
//! fails with `EPERM`, among it: ptrace and reading other processes'
//! memory, mounts and namespaces, keyrings, BPF, perf, io_uring, kernel
//! modules, clocks, host names, swap, reboot, SysV IPC and POSIX message
//! queues, privilege changes (set*id, capset, chroot), scheduling and
//! resource changes, and sockets other than IPv4, IPv6 and Unix (no raw
//! sockets, no netlink, no packet sockets). Memory may not be writable and
//! executable at once, and no personality other than Linux's may be set.
//!
//! The filter kills the process on a foreign architecture's system call
//! numbers (as `SystemCallArchitectures=native`).

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};

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
    libc::SYS_ioctl,
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
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_utimensat,
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
    libc::SYS_chmod,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
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

const PROT_WX: u64 = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;
/// `socket(2)`'s type without SOCK_NONBLOCK and SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u64 = 0xf;

/// A built filter, ready to apply (in each `--listen` child, without
/// building it again).
pub struct Filter {
    allow: BpfProgram,
    /// `clone3` fails with ENOSYS, not EPERM, so that glibc falls back to
    /// `clone`, whose flags the main filter can see.
    clone3: BpfProgram,
}

impl Filter {
    /// Builds the filter for this architecture, or says why it cannot.
    pub fn new() -> Result<Filter, String> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|_| format!("no filter for architecture {}", std::env::consts::ARCH))?;
        let build = |rules, mismatch, matched| -> Result<BpfProgram, String> {
            SeccompFilter::new(rules, mismatch, matched, arch)
                .and_then(BpfProgram::try_from)
                .map_err(|e| format!("build filter: {e}"))
        };
        let allow = build(
            allowed_rules().map_err(|e| format!("build filter: {e}"))?,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
        )?;
        let clone3 = build(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
        )?;
        Ok(Filter { allow, clone3 })
    }

    /// Installs the filter on the calling thread (and so on every thread
    /// and process it starts from now on). Sets no_new_privs first.
    pub fn apply(&self) -> Result<(), String> {
        seccompiler::apply_filter(&self.allow).map_err(|e| e.to_string())?;
        // The later filter decides among equal actions: ENOSYS for clone3.
        seccompiler::apply_filter(&self.clone3).map_err(|e| e.to_string())
    }
}

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<Cond, seccompiler::BackendError> {
    Cond::new(arg, len, op, value)
}

/// Every allowed call with the conditions on its arguments; an empty
/// list means any arguments.
fn allowed_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_X86_64)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let rule = |conds: Vec<Cond>| SeccompRule::new(conds);

    // W^X: mmap never writable and executable at once; mprotect never
    // makes memory executable.
    let prot = |value| cond(2, Len::Dword, Op::MaskedEq(PROT_WX), value);
    rules.insert(
        libc::SYS_mmap,
        vec![
            rule(vec![prot(0)?])?,
            rule(vec![prot(libc::PROT_WRITE as u64)?])?,
            rule(vec![prot(libc::PROT_EXEC as u64)?])?,
        ],
    );
    let no_exec = || cond(2, Len::Dword, Op::MaskedEq(libc::PROT_EXEC as u64), 0);
    rules.insert(libc::SYS_mprotect, vec![rule(vec![no_exec()?])?]);
    rules.insert(libc::SYS_pkey_mprotect, vec![rule(vec![no_exec()?])?]);

    // Threads and processes, but no new namespaces.
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(0, Len::Qword, Op::MaskedEq(NAMESPACE_FLAGS), 0)?])?],
    );

    // Limits may be read, not changed.
    rules.insert(libc::SYS_getrlimit, Vec::new());
    rules.insert(libc::SYS_prlimit64, vec![rule(vec![cond(2, Len::Qword, Op::Eq, 0)?])?]);

    // Only the Linux personality (0), or asking for the current one.
    rules.insert(
        libc::SYS_personality,
        vec![
            rule(vec![cond(0, Len::Dword, Op::Eq, 0)?])?,
            rule(vec![cond(0, Len::Dword, Op::Eq, 0xffff_ffff)?])?,
        ],
    );

    // Sockets: Unix of any type; IPv4 and IPv6 streams (TCP) and
    // datagrams (UDP, for the name service), nothing raw.
    let mut socket = vec![rule(vec![cond(0, Len::Dword, Op::Eq, libc::AF_UNIX as u64)?])?];
    for family in [libc::AF_INET, libc::AF_INET6] {
        for (kind, protocols) in [
            (libc::SOCK_STREAM, [0, libc::IPPROTO_TCP]),
            (libc::SOCK_DGRAM, [0, libc::IPPROTO_UDP]),
        ] {
            for protocol in protocols {
                socket.push(rule(vec![
                    cond(0, Len::Dword, Op::Eq, family as u64)?,
                    cond(1, Len::Dword, Op::MaskedEq(SOCK_TYPE_MASK), kind as u64)?,
                    cond(2, Len::Dword, Op::Eq, protocol as u64)?,
                ])?);
            }
        }
    }
    rules.insert(libc::SYS_socket, socket);
    rules.insert(
        libc::SYS_socketpair,
        vec![rule(vec![cond(0, Len::Dword, Op::Eq, libc::AF_UNIX as u64)?])?],
    );
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_here() {
        let f = Filter::new().expect("filter");
        assert!(f.allow.len() > ALLOWED.len());
        assert!(!f.clone3.is_empty());
    }

    #[test]
    fn dangerous_calls_are_not_in_the_list() {
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
        ] {
            let rules = allowed_rules().unwrap();
            assert!(!rules.contains_key(&nr), "system call {nr} is allowed");
        }
    }
}
