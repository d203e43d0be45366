//! The samples and the tables made of them: every figure of every variant
//! as median [min–max], the ratios of medians behind the targets, the
//! rules-file scale table and the failures.

use std::collections::BTreeMap;
use std::thread;

use crate::options::Opts;
use crate::rounds::Measured;

/// Memory per held connection; the figure's name says how many were held.
pub const PSS_HELD: &str = "PSS KiB per held conn";
pub const RSS_HELD: &str = "RSS KiB per held conn";

/// The figures the ratios and the scale table use.
pub const UP: &str = "upload MB/s";
pub const DOWN: &str = "download MB/s";
pub const CPU_GIB: &str = "CPU ms per GiB";
pub const CPU_GIB_UP: &str = "CPU ms per GiB, up";
pub const CPU_GIB_DOWN: &str = "CPU ms per GiB, down";
pub const P50: &str = "connect-to-reply p50 ms";
pub const CPU_CONN: &str = "CPU µs per conn";
pub const CONNS_8: &str = "conn/s, 8 clients";
pub const CONNS_32: &str = "conn/s, 32 clients";

/// The main table's rows, in order.
const FIGURES: &[&str] = &[
    UP,
    DOWN,
    CPU_GIB,
    CPU_GIB_UP,
    CPU_GIB_DOWN,
    P50,
    "connect-to-reply p99 ms",
    CPU_CONN,
    CONNS_8,
    CONNS_32,
    "handler PSS KiB (relaying)",
    "handler RSS KiB (relaying)",
    "handler PSS KiB (idle)",
    "handler RSS KiB (idle)",
    PSS_HELD,
    RSS_HELD,
];

/// What a ratio's line calls a figure.
fn short(fig: &str) -> &str {
    match fig {
        UP => "upload",
        DOWN => "download",
        CPU_GIB => "CPU per GiB",
        CPU_GIB_UP => "CPU per GiB up",
        CPU_GIB_DOWN => "CPU per GiB down",
        P50 => "p50",
        CPU_CONN => "CPU per conn",
        CONNS_8 => "conn/s 8",
        CONNS_32 => "conn/s 32",
        PSS_HELD => "PSS per held conn",
        other => other,
    }
}

/// A variant's name and what the ratios call it.
type Side = (&'static str, &'static str);
/// A figure and the ratio's target.
type Row = (&'static str, &'static str);

const INETD: Side = ("socks4d-inetd", "inetd");
const STATIC: Side = ("static-inetd", "static inetd");
const FLOOR: Side = ("exec-floor", "floor");
const DANTE: Side = ("dante", "dante");
const C_RELAY: Side = ("c-relay", "c-relay");

/// A ratio shown without a target.
const NO: &str = "no target";
const AGAINST_FLOOR: &[Row] = &[
    (P50, "<= 1.10"),
    (CONNS_8, ">= 0.90"),
    (CONNS_32, ">= 0.90"),
    (CPU_CONN, "<= 1.2"),
];
/// Relaying, against the C relay, in both directions.
const RELAY: &[Row] = &[
    (UP, ">= 1.0"),
    (DOWN, ">= 1.0"),
    (CPU_GIB_UP, "<= 1.0"),
    (CPU_GIB_DOWN, "<= 1.0"),
];

/// The ratios of medians, `a / b`, in the table's order: a line
/// `what, a / b (target)` for each row, where both variants ran.
#[rustfmt::skip]
const RATIOS: &[(Side, Side, &[Row])] = &[
    (INETD, ("direct", "direct"), &[(UP, ">= 0.70"), (DOWN, ">= 0.70")]),
    (INETD, DANTE, &[(UP, ">= 1.6"), (DOWN, ">= 1.6"), (CPU_GIB, "<= 0.25")]),
    (INETD, FLOOR, AGAINST_FLOOR),
    (INETD, C_RELAY, &[(P50, NO), (CPU_CONN, NO), (CONNS_8, NO), (PSS_HELD, NO)]),
    (("socks4d-listen", "listen"), DANTE, &[(P50, "<= 1.00")]),
    (INETD, FLOOR, &[(PSS_HELD, "<= 1.0")]),
    // Under a booted systemd (bench/container.sh).
    (("unit-accept-yes", "accept-yes unit"), ("unit-floor", "trivial accept-yes unit"),
        &[(P50, "<= 1.50"), (CONNS_8, ">= 0.67"), (CONNS_32, ">= 0.67"), (CPU_CONN, NO)]),
    (("unit-accept-no", "accept-no unit"), ("listen", "--listen"),
        &[(P50, "<= 1.20"), (CONNS_8, ">= 0.80"), (CONNS_32, ">= 0.80")]),
    // Each build's relay against the C relay's; the static build against
    // the floor and against the glibc build.
    (INETD, C_RELAY, RELAY),
    (STATIC, C_RELAY, RELAY),
    (STATIC, FLOOR, AGAINST_FLOOR),
    (STATIC, FLOOR, &[(PSS_HELD, "<= 1.0")]),
    (STATIC, INETD, &[(UP, ">= 1.0"), (DOWN, ">= 1.0"), (CPU_GIB, NO), (P50, NO), (CPU_CONN, NO), (CONNS_8, NO)]),
    (STATIC, INETD, &[(PSS_HELD, NO)]),
    (("static-listen", "static --listen"), ("socks4d-listen", "--listen"),
        &[(P50, NO), (CPU_CONN, NO), (CONNS_8, NO)]),
];

/// A figure's name as sampled and shown: the held-connection figures
/// with the number held.
pub fn fig_name(fig: &str, idle: usize) -> String {
    if fig == PSS_HELD || fig == RSS_HELD {
        format!("{fig} ({idle})")
    } else {
        fig.to_string()
    }
}

/// Every sample, by figure and variant.
#[derive(Default)]
pub struct Samples(BTreeMap<(String, &'static str), Vec<f64>>);

impl Samples {
    pub fn add(&mut self, fig: &str, var: &'static str, x: f64) {
        self.0.entry((fig.to_string(), var)).or_default().push(x);
    }

    fn get(&self, fig: &str, var: &str) -> Option<&Vec<f64>> {
        self.0.iter().find(|((f, n), _)| f == fig && *n == var).map(|x| x.1)
    }

    fn med(&self, fig: &str, var: &str) -> Option<f64> {
        let mut s = self.get(fig, var)?.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Some(if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        })
    }

    /// "median [min–max]", the median alone for one sample, "-" for none.
    pub fn cell(&self, fig: &str, var: &str) -> String {
        let Some(v) = self.get(fig, var) else {
            return "-".into();
        };
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let m = self.med(fig, var).unwrap();
        if v.len() == 1 {
            fmt(m)
        } else {
            format!("{} [{}–{}]", fmt(m), fmt(min), fmt(max))
        }
    }

    /// The ratio of the medians, two decimals, or "-".
    fn ratio(&self, fig: &str, a: &str, b: &str) -> String {
        match (self.med(fig, a), self.med(fig, b)) {
            (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
            _ => "-".into(),
        }
    }
}

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The time now, UTC, as `YYYY-MM-DD HH:MM`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

/// The load averages over 1, 5 and 15 minutes, as /proc/loadavg has them.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The header's line on when the run was and under what load, and a blank
/// line; `started` and `load_before` were taken before the rounds.
pub fn when(started: &str, load_before: &str) -> String {
    format!(
        "run {started} to {} UTC, {} CPUs; load average (1, 5, 15 min) {load_before} at the start, {} at the end\n\n",
        utc_now(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    )
}

/// The whole report: the header (what was run, when, under what load),
/// the figures of the variants `names`, the ratios, the scale table and
/// the failures. `started` and `load_before` were taken before the rounds.
pub fn write(o: &Opts, m: &Measured, names: &[&str], started: &str, load_before: &str) -> String {
    let s = &m.samples;
    let mut out = String::new();
    out += &format!(
        "socks4d bench: {} round(s), {:.2} GiB per bulk run, {} sequential connections, {} per conn/s run, {} held; median [min–max]\n",
        o.rounds,
        o.bytes as f64 / (1u64 << 30) as f64,
        o.latency,
        o.conns,
        o.idle
    );
    out += &when(started, load_before);
    out += &format!("| {:<28} |", "figure");
    for n in names {
        out += &format!(" {n:<24} |");
    }
    out += "\n|";
    out += &"-".repeat(30);
    out += "|";
    for _ in names {
        out += &"-".repeat(26);
        out += "|";
    }
    out += "\n";
    for f in FIGURES.iter().map(|f| fig_name(f, o.idle)) {
        out += &format!("| {f:<28} |");
        for n in names {
            out += &format!(" {:<24} |", s.cell(&f, n));
        }
        out += "\n";
    }

    out += "\n| ratio (target) | value |\n|---|---|\n";
    for ((a, a_label), (b, b_label), rows) in RATIOS {
        for (fig, target) in *rows {
            let value = s.ratio(&fig_name(fig, o.idle), a, b);
            if value != "-" {
                let what = short(fig);
                out += &format!("| {what}, {a_label} / {b_label} ({target}) | {value} |\n");
            }
        }
    }
    if !o.rules.is_empty() {
        out += &rules_table(s, &o.rules);
    }
    out + &failure_lines(&m.failures)
}

/// The failures, if any, after a blank line.
pub fn failure_lines(failures: &[String]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let mut out = "\nfailures:\n".to_string();
    for f in failures {
        out += &format!("  {f}\n");
    }
    out
}

/// The scale table: per-connection cost by rules-file size, as text and
/// frozen, each against the one-line text file.
fn rules_table(s: &Samples, counts: &[usize]) -> String {
    let mut out = String::from(
        "\n| rules lines | text: p50 ms | text: CPU µs/conn | frozen: p50 ms | frozen: CPU µs/conn | frozen / 1-line text: p50, CPU (target) |\n|---|---|---|---|---|---|\n",
    );
    for &n in counts {
        let (t, f) = (format!("rules-{n}"), format!("frozen-{n}"));
        let target = match n {
            1000 => " (<= 1.2)",
            20_000 => " (<= 2)",
            _ => "",
        };
        out += &format!(
            "| {n} | {} | {} | {} | {} | {}, {}{target} |\n",
            s.cell(P50, &t),
            s.cell(CPU_CONN, &t),
            s.cell(P50, &f),
            s.cell(CPU_CONN, &f),
            s.ratio(P50, &f, "rules-1"),
            s.ratio(CPU_CONN, &f, "rules-1")
        );
    }
    out
}
