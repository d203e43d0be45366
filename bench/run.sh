#!/bin/sh
# Runs the side-by-side benchmark: builds socks4d (the glibc build and,
# when the musl target is installed, the static one) and the bench client
# in release mode, installs what is missing, prints the table and writes it
# to bench/results.txt (or $BENCH_OUT).
#
#   bench/run.sh                      # full run: 1 GiB per transfer, 5 rounds
#   BENCH_ARGS="--bytes 1048576 --rounds 1" bench/run.sh   # a quick look
set -eu
cd "$(dirname "$0")/.."

# Extra arguments given to socks4d in both the inetd and --listen variants.
# No identd runs on a bench machine, hence --ident off; nor, often, a
# syslog daemon, and socks4d grants nothing it cannot log, hence
# --log-stderr (the bench sends socks4d's stderr to /dev/null). Run as
# root, socks4d drops to nobody at each start: given in numbers, resolved
# once here as an install step would, so that no connection asks the
# name service.
user=
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
    user="--user $(id -u nobody):$(id -g nobody)"
fi
SOCKS4D_ARGS="${SOCKS4D_ARGS:---ident off --log-stderr $user}"

need() { command -v "$1" >/dev/null 2>&1; }
install() {
    if need apt-get && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y --no-install-recommends "$@" >/dev/null
    else
        echo "run.sh: please install $*" >&2
    fi
}
need systemd-socket-activate || install systemd
need danted || install dante-server || echo "run.sh: dante-server not installed; Dante is left out" >&2

cargo build --release --quiet
cargo build --release --quiet --manifest-path bench/Cargo.toml
# The static build (README, "Which build") beside the glibc one, in the
# same run, when its target is installed.
triple=$(uname -m)-unknown-linux-musl
STATIC=
if cargo build --release --quiet --target "$triple"; then
    STATIC="--bin-static target/$triple/release/socks4d"
else
    echo "run.sh: no static build (rustup target add $triple); it is left out" >&2
fi

DANTE=
need danted || DANTE=--no-dante
# The least a relay per connection does, in C, for comparison.
CRELAY=
if need cc; then
    mkdir -p bench/target
    cc -O2 -o bench/target/c-relay bench/c-relay.c && CRELAY="--c-relay bench/target/c-relay"
fi
exec bench/target/release/socks4d-bench \
    --bin target/release/socks4d \
    --extra "$SOCKS4D_ARGS" \
    --out "${BENCH_OUT:-bench/results.txt}" \
    $STATIC $DANTE $CRELAY ${BENCH_ARGS:-}
