//! The rounds: every variant measured in turn, in a different order each
//! round, each figure added to the samples.

use std::io;
use std::thread;
use std::time::Duration;

use crate::account;
use crate::dests::Dests;
use crate::measure;
use crate::options::Opts;
use crate::report::{
    fig_name, Samples, CONNS_32, CONNS_8, CPU_CONN, CPU_GIB, CPU_GIB_DOWN, CPU_GIB_UP, DOWN, P50, PSS_HELD, RSS_HELD,
    UP,
};
use crate::variants::{Kind, Variant};

const GIB: f64 = (1u64 << 30) as f64;

/// What the rounds measured, and what failed ("variant what: error").
#[derive(Default)]
pub struct Measured {
    pub samples: Samples,
    pub failures: Vec<String>,
}

pub fn run(o: &Opts, d: &Dests, vars: &[Variant]) -> Measured {
    let mut m = Measured::default();
    for round in 0..o.rounds {
        eprintln!("round {}/{}", round + 1, o.rounds);
        // Each round runs the variants in a different order.
        let n = vars.len();
        for k in 0..n {
            let v = &vars[(k + round) % n];
            let per_connection_only = matches!(v.kind, Kind::Floor | Kind::Rules) || v.kind.external();
            if !per_connection_only {
                m.bulk(o, d, v);
            }
            m.latency(o, d, v);
            if v.kind == Kind::Rules {
                continue;
            }
            for (c, fig) in [(8, CONNS_8), (32, CONNS_32)] {
                let r = measure::conns_per_sec(v, d, c, o.conns).map(|r| m.samples.add(fig, v.name, r));
                m.check(v, fig, r);
            }
            if !(v.kind == Kind::Direct || v.kind.external()) {
                m.idle(o, d, v);
            }
        }
    }
    m
}

impl Measured {
    fn check(&mut self, v: &Variant, what: &str, r: io::Result<()>) {
        if let Err(e) = r {
            self.failures.push(format!("{} {what}: {e}", v.name));
        }
    }

    /// Upload and download: rates, the handler's memory mid-transfer and
    /// the CPU of the variant's tree per GiB.
    fn bulk(&mut self, o: &Opts, d: &Dests, v: &Variant) {
        let gib = o.bytes as f64 / GIB;
        let root = v.pid();
        let c0 = root.map(account::cpu);
        let r = measure::upload(v, d, o.bytes).map(|r| self.samples.add(UP, v.name, r / 1e6));
        self.check(v, "upload", r);
        // The handler's end is reaped before the next reading.
        let c_up = root.map(|root| {
            thread::sleep(Duration::from_millis(200));
            account::cpu(root)
        });
        let r = measure::download_sampled(v, d, o.bytes).map(|(r, m)| {
            self.samples.add(DOWN, v.name, r / 1e6);
            if let Some((pss, rss)) = m {
                self.samples.add("handler PSS KiB (relaying)", v.name, pss);
                self.samples.add("handler RSS KiB (relaying)", v.name, rss);
            }
        });
        self.check(v, "download", r);
        if let (Some(root), Some(c0), Some(c_up)) = (root, c0, c_up) {
            thread::sleep(Duration::from_millis(200));
            let c_end = account::cpu(root);
            let s = &mut self.samples;
            s.add(CPU_GIB, v.name, (c_end - c0) * 1e3 / (2.0 * gib));
            s.add(CPU_GIB_UP, v.name, (c_up - c0) * 1e3 / gib);
            s.add(CPU_GIB_DOWN, v.name, (c_end - c_up) * 1e3 / gib);
        }
    }

    /// Sequential connections: connect-to-reply p50 and p99, and the CPU
    /// per connection of the variant's tree (or of `--account-tree`).
    fn latency(&mut self, o: &Opts, d: &Dests, v: &Variant) {
        let external = v.kind.external();
        let root = if external { o.account_tree } else { v.pid() };
        if external && root.is_some() {
            // What the previous variant left running ends first.
            thread::sleep(Duration::from_millis(500));
        }
        let c0 = root.map(account::cpu);
        let r = measure::latency(v, d, o.latency).map(|(p50, p99)| {
            self.samples.add(P50, v.name, p50);
            self.samples.add("connect-to-reply p99 ms", v.name, p99);
        });
        self.check(v, "latency", r);
        if let (Some(root), Some(c0)) = (root, c0) {
            // Let the launcher reap the last handlers first.
            thread::sleep(Duration::from_millis(300));
            let per_conn = (account::cpu(root) - c0) * 1e6 / o.latency as f64;
            self.samples.add(CPU_CONN, v.name, per_conn);
        }
    }

    /// Held connections: memory per connection of the tree, and of one
    /// handler.
    fn idle(&mut self, o: &Opts, d: &Dests, v: &Variant) {
        let r = measure::idle_cost(v, d, o.idle).map(|((pss, rss), one)| {
            self.samples.add(&fig_name(PSS_HELD, o.idle), v.name, pss);
            self.samples.add(&fig_name(RSS_HELD, o.idle), v.name, rss);
            if let (Some((p, r)), true) = (one, v.kind != Kind::Dante) {
                self.samples.add("handler PSS KiB (idle)", v.name, p);
                self.samples.add("handler RSS KiB (idle)", v.name, r);
            }
        });
        self.check(v, "idle", r);
    }
}
