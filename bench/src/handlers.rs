//! `--handlers N`: each build started directly, one process per connection
//! as inetd starts it (the connection on its stdin and stdout, stderr on
//! /dev/null), with no launcher around it. Each handler serves one CONNECT
//! to the echo destination and one exchange; what it cost is read from
//! `wait4` when it is reaped: user+sys CPU (its own children included) and
//! minor page faults. The builds take turns, N handlers each, in a
//! different order each round; a figure is the median of each round's
//! median. With `--wrap "PROGRAM ARGS"` each handler runs under PROGRAM
//! (valgrind, strace), which writes figures of its own.

use std::ffi::{c_int, c_long};
use std::io::{self, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use crate::dests::{self, Dests, T};
use crate::measure;
use crate::options::Opts;
use crate::report::{self, Samples};

const CPU_HANDLER: &str = "CPU µs per handler";
const FAULTS_HANDLER: &str = "minor page faults per handler";

/// `struct rusage` of Linux.
#[repr(C)]
#[derive(Default)]
struct Rusage {
    utime: [c_long; 2],
    stime: [c_long; 2],
    maxrss: c_long,
    ixrss: c_long,
    idrss: c_long,
    isrss: c_long,
    minflt: c_long,
    rest: [c_long; 9],
}

extern "C" {
    fn wait4(pid: c_int, status: *mut c_int, options: c_int, rusage: *mut Rusage) -> c_int;
}

/// What one handler cost: CPU µs and minor page faults.
struct Cost {
    cpu_us: f64,
    faults: f64,
}

/// The builds measured: `--bin`, `--bin-static`, then each `--compare`.
fn builds(o: &Opts) -> Vec<&str> {
    let mut b = vec![o.bin.as_str()];
    b.extend(o.bin_static.as_deref());
    b.extend(o.compare.iter().map(String::as_str));
    b
}

/// The rounds and their report; false when a handler failed.
pub fn run(o: &Opts, d: &Dests) -> (String, bool) {
    let (started, load_before) = (report::utc_now(), report::load());
    let front = dests::listener();
    let builds = builds(o);
    let mut s = Samples::default();
    let mut failures = Vec::new();
    for round in 0..o.rounds {
        eprintln!("round {}/{}", round + 1, o.rounds);
        for k in 0..builds.len() {
            let bin = builds[(k + round) % builds.len()];
            match (0..o.handlers)
                .map(|_| one(o, d, &front, bin))
                .collect::<io::Result<Vec<_>>>()
            {
                Ok(costs) => {
                    let name: &'static str = Box::leak(bin.to_string().into_boxed_str());
                    s.add(CPU_HANDLER, name, median(costs.iter().map(|c| c.cpu_us)));
                    s.add(FAULTS_HANDLER, name, median(costs.iter().map(|c| c.faults)));
                }
                Err(e) => failures.push(format!("{bin}: {e}")),
            }
        }
    }
    let out = table(o, &s, &builds, &failures, &started, &load_before);
    (out, failures.is_empty())
}

/// The report: each build's CPU and page faults per handler, then the
/// failures ("build: error").
fn table(o: &Opts, s: &Samples, builds: &[&str], failures: &[String], started: &str, load_before: &str) -> String {
    let mut out = format!(
        "socks4d handlers: {} round(s), {} handlers per build and round, each one CONNECT and one exchange; \
         median of the rounds' medians [min–max]\n",
        o.rounds, o.handlers
    );
    out += &report::when(started, load_before);
    out += &format!("| build | {CPU_HANDLER} | {FAULTS_HANDLER} |\n|---|---|---|\n");
    for b in builds {
        out += &format!("| {b} | {} | {} |\n", s.cell(CPU_HANDLER, b), s.cell(FAULTS_HANDLER, b));
    }
    out + &report::failure_lines(failures)
}

fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One handler of `bin` for one connection, from its start to its reaping.
fn one(o: &Opts, d: &Dests, front: &TcpListener, bin: &str) -> io::Result<Cost> {
    let mut client = TcpStream::connect(front.local_addr()?)?;
    client.set_read_timeout(Some(T))?;
    let conn = OwnedFd::from(front.accept()?.0);
    let mut cmd = match o.wrap.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .args(&o.extra)
        .stdin(Stdio::from(conn.try_clone()?))
        .stdout(Stdio::from(conn))
        .stderr(Stdio::null())
        .spawn()?;
    let served = measure::socks_connect(&mut client, d.echo).and_then(|()| measure::echo(&mut client, 0));
    let _ = client.shutdown(Shutdown::Write);
    let _ = client.read_to_end(&mut Vec::new());
    let mut status = 0;
    let mut ru = Rusage::default();
    // SAFETY: `status` and `ru` are valid for the call; the child is ours
    // and not reaped yet (std's handle is dropped without waiting).
    let pid = unsafe { wait4(child.id() as c_int, &mut status, 0, &mut ru) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    served?;
    if status != 0 {
        return Err(io::Error::other(format!("wait status {status:#x}")));
    }
    let secs = |t: [c_long; 2]| t[0] as f64 * 1e6 + t[1] as f64;
    Ok(Cost {
        cpu_us: secs(ru.utime) + secs(ru.stime),
        faults: ru.minflt as f64,
    })
}
