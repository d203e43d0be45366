//! The benchmark still runs end to end: tiny sizes, one round, no timing
//! assertions. It builds the bench client (bench/, its own crate) and runs
//! it against this build of socks4d.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bench client, built.
fn bench_client() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(root.join("bench/Cargo.toml"))
        .status()
        .expect("run cargo");
    assert!(built.success(), "bench client does not build");
    root.join("bench/target/debug/socks4d-bench")
}

#[test]
fn bench_runs_and_writes_its_table() {
    if common::left_out(common::Slow::Bench) || !common::require("systemd-socket-activate") {
        return;
    }
    let out = std::env::temp_dir().join(format!("socks4d-bench-smoke-{}.txt", std::process::id()));
    let run = Command::new(bench_client())
        .arg("--bin")
        .arg(common::bin())
        // The same binary again as the static build: its columns and ratios.
        .arg("--bin-static")
        .arg(common::bin())
        .args(["--bytes", "1048576", "--rounds", "1", "--latency", "5", "--conns", "16"])
        .args(["--rules", "1,100"])
        .args([
            "--idle",
            "4",
            "--no-dante",
            "--extra",
            "--ident off --log-stderr",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let table = std::fs::read_to_string(&out).expect("table file");
    let _ = std::fs::remove_file(&out);
    assert_eq!(table, stdout);
    for variant in [
        "direct",
        "socks4d-inetd",
        "socks4d-listen",
        "static-inetd",
        "static-listen",
        "exec-floor",
    ] {
        assert!(table.contains(variant), "{variant} missing:\n{table}");
    }
    // Every variant measured every figure that applies to it.
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {name}")))
            .unwrap_or("")
    };
    for fig in [
        "upload MB/s",
        "download MB/s",
        "conn/s, 32 clients",
        "connect-to-reply p50 ms",
    ] {
        let cells: Vec<&str> = row(fig).split('|').map(str::trim).collect();
        // | fig | direct | inetd | listen | static inetd | static listen | floor |
        assert!(cells.len() >= 8, "{fig}: {cells:?}");
        for (i, c) in cells[2..8].iter().enumerate() {
            let applies = !(fig.contains("load") && i == 5);
            assert_eq!(c.parse::<f64>().is_ok(), applies, "{fig} column {i}: {c:?}\n{table}");
        }
    }
    // CPU per connection for every process-tree variant, not for direct.
    let cells: Vec<&str> = row("CPU µs per conn").split('|').map(str::trim).collect();
    assert!(cells.len() >= 8, "{cells:?}\n{table}");
    assert_eq!(cells[2], "-", "{table}");
    for c in &cells[3..8] {
        assert!(c.parse::<f64>().is_ok(), "CPU per conn {c:?}\n{table}");
    }
    // The two builds side by side, and when and under what load.
    assert!(table.contains("| p50, static inetd / floor (<= 1.10) |"), "{table}");
    assert!(table.contains("| upload, static inetd / inetd (>= 1.0) |"), "{table}");
    assert!(table.contains(" UTC, ") && table.contains("load average"), "{table}");
    // The scale table: one row per rules-file size, text and frozen.
    for n in [1, 100] {
        let cells: Vec<&str> = row(&n.to_string()).split('|').map(str::trim).collect();
        assert!(cells.len() >= 6, "rules row {n}: {cells:?}\n{table}");
        for c in &cells[2..6] {
            assert!(c.parse::<f64>().is_ok(), "rules row {n}: {c:?}\n{table}");
        }
    }
}

#[test]
fn handlers_mode_measures_each_build_started_alone() {
    if common::left_out(common::Slow::Bench) {
        return;
    }
    // A second name for the same build: a build compared with itself.
    let other = std::env::temp_dir().join(format!("socks4d-bench-other-{}", std::process::id()));
    let _ = std::fs::remove_file(&other);
    std::os::unix::fs::symlink(common::bin(), &other).unwrap();
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results.txt");
    let results_before = std::fs::read(&results).ok();
    let run = Command::new(bench_client())
        .args(["--handlers", "3", "--rounds", "2", "--bin"])
        .arg(common::bin())
        .arg("--compare")
        .arg(&other)
        .args(["--extra", "--ident off --log-stderr"])
        .output()
        .expect("run bench");
    let _ = std::fs::remove_file(&other);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench --handlers failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.starts_with("socks4d handlers: 2 round(s), 3 handlers per build and round"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| build | CPU µs per handler | minor page faults per handler |"),
        "{stdout}"
    );
    for build in [common::bin(), other] {
        let row = format!("| {} | ", build.display());
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("{row}\n{stdout}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | build | CPU | faults |: each a median with the rounds' range,
        // and a handler makes page faults.
        for c in &cells[2..4] {
            let median: f64 = c.split(' ').next().unwrap().parse().unwrap_or(-1.0);
            assert!(median >= 0.0 && c.contains('['), "{c:?} in {line}");
        }
        assert!(
            cells[3].split(' ').next().unwrap().parse::<f64>().unwrap() > 0.0,
            "{line}"
        );
    }
    // Without --out, this mode writes no file: the bench's results stay.
    assert_eq!(std::fs::read(&results).ok(), results_before);
}
