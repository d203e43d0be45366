//! The benchmark still runs, at tiny sizes. No timing is asserted here:
//! figures come from `bench/run.sh` on a quiet machine.

mod common;

use std::process::Command;

use common::*;

#[test]
fn bench_runs_at_tiny_sizes_and_writes_its_table() {
    if !require("systemd-socket-activate") {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let built = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(format!("{root}/bench/Cargo.toml"))
        .status()
        .unwrap();
    assert!(built.success(), "bench does not build");
    let out = std::env::temp_dir().join(format!("socks4d-bench-smoke-{}.txt", std::process::id()));
    let run = Command::new(format!("{root}/bench/target/release/socks4d-bench"))
        .env("SOCKS4D", bin())
        .env("BENCH_BYTES", (4u64 << 20).to_string())
        .env("BENCH_ROUNDS", "1")
        .env("BENCH_LATENCY_N", "10")
        .env("BENCH_CONNS", "20")
        .env("BENCH_IDLE", "5")
        .env("BENCH_SCALE", "3")
        .env("BENCH_OUT", &out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let table = std::fs::read_to_string(&out).unwrap();
    assert!(table.contains("scale, socks4d inetd"), "no scale table:\n{table}");
    for row in [
        "upload (GB/s)",
        "download (GB/s)",
        "connect-to-reply p50",
        "conn/s, 32 clients",
        "PSS per held connection",
    ] {
        assert!(table.contains(row), "no {row} row:\n{table}");
    }
    for column in ["direct", "socks4d inetd", "socks4d listen", "exec floor"] {
        assert!(table.contains(column), "no {column} column:\n{table}");
    }
}
