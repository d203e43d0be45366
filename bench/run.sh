#!/usr/bin/env bash
# One command for the side-by-side benchmark:
#   bench/run.sh                 full run (1 GiB transfers, 5 rounds)
#   BENCH_BYTES=... BENCH_ROUNDS=... BENCH_LATENCY_N=... BENCH_CONNS=...
#   BENCH_IDLE=... bench/run.sh  other sizes
# Extra socks4d arguments: SOCKS4D_ARGS (default "--ident off").
# The table is printed and written to BENCH_OUT (default bench/results.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v danted >/dev/null || need+=(dante-server)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || true
fi
command -v systemd-socket-activate >/dev/null || { echo "bench: systemd-socket-activate is needed" >&2; exit 1; }
command -v danted >/dev/null || echo "bench: danted not installed; the Dante column is left out" >&2

cargo build --release --quiet
cargo build --release --quiet --manifest-path bench/Cargo.toml
SOCKS4D="${SOCKS4D:-$PWD/target/release/socks4d}" exec bench/target/release/socks4d-bench
