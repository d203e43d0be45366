#!/bin/sh
# The per-connection figures of each way systemd or inetd can start
# socks4d, measured under a booted systemd: systemd 252 as PID 1 in a
# systemd-nspawn container (the root of tests/container/mkroot.sh), socks4d
# installed there with install.sh, the bench client in the container's
# network. Variants, in one run, interleaved:
#
#   unit-accept-yes  the shipped socks4d.socket + socks4d@.service
#   unit-accept-no   the shipped socks4d-listen.socket + .service (a copy
#                    on another port, so that both can run at once)
#   inetd            openbsd-inetd with the line of examples/inetd.conf
#   listen           socks4d --listen (fork, no exec), started by systemd-run
#   unit-floor       a trivial Accept=yes unit: /bin/cat on the socket, the
#                    floor of systemd's own per-instance cost
#   unit-old         (with BENCH_OLD_UNIT=REV) socks4d@.service as it was at
#                    git revision REV, e.g. its fully sandboxed version
#   unit-no-...      (with BENCH_UNIT_SETTINGS=1) the shipped Accept=yes
#                    pair with one setting left out or changed at a time,
#                    unit-bare with none but ExecStart=, and
#                    unit-floor-user: the trivial unit with User=socks4d
#
# "CPU µs per conn" is all the container spent on a connection (its
# systemd, journald and the instances systemd reaped): the CPU of the
# container's process tree during each variant's sequential connections.
# socks4d is the build install.sh installs (the static one when its target
# is installed), or $SOCKS4D_BIN; the table's last line names it.
#
# Every socks4d runs with --ident off (no identd in the measurement) and a
# rules file permitting loopback. Needs root, debootstrap, systemd-container.
#
#   bench/container.sh                  # 3 rounds; writes bench/results-systemd.txt
#   BENCH_ARGS="--rounds 1 --latency 50 --conns 200" bench/container.sh
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
root=${SOCKS4D_CONTAINER_ROOT:-$top/target/container/bookworm}
out=${BENCH_OUT:-bench/results-systemd.txt}

cargo build --release --quiet
cargo build --release --quiet --manifest-path bench/Cargo.toml
triple=$(uname -m)-unknown-linux-musl
bin=${SOCKS4D_BIN:-$top/target/$triple/release/socks4d}
if [ -z "${SOCKS4D_BIN:-}" ] && ! cargo build --release --quiet --target "$triple"; then
	echo "container.sh: no static build (rustup target add $triple); the glibc one is measured" >&2
	bin=$top/target/release/socks4d
fi
tests/container/mkroot.sh "$root"

log=$(mktemp)
systemd-nspawn -q -b --private-network --register=no --keep-unit --volatile=overlay \
	--system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self" \
	--machine=socks4d-bench --console=pipe -D "$root" --bind-ro="$top" systemd.show_status=no </dev/null >"$log" 2>&1 &
nspawn=$!
stop() {
	kill $nspawn 2>/dev/null || return 0
	for _ in $(seq 100); do kill -0 $nspawn 2>/dev/null || break; sleep 0.2; done
	kill -9 $nspawn 2>/dev/null || true
	rm -f "$log"
}
trap stop EXIT INT TERM

# The container's init: the descendant of nspawn called systemd.
leader=
for _ in $(seq 100); do
	for p in $(pgrep -P $nspawn) $(pgrep -P "$(pgrep -P $nspawn | head -1)" 2>/dev/null); do
		[ "$(cat /proc/$p/comm 2>/dev/null)" = systemd ] && leader=$p
	done
	[ -n "$leader" ] && break
	sleep 0.2
done
[ -n "$leader" ] || { cat "$log" >&2; echo "container.sh: no systemd in the container" >&2; exit 1; }
inside() { nsenter -t "$leader" -a /bin/sh -c "$1"; }
state=
for _ in $(seq 300); do
	state=$(inside "systemctl is-system-running --wait" 2>/dev/null) || true
	case $state in running | degraded) break ;; esac
	sleep 0.2
done
case $state in running | degraded) ;; *) echo "container.sh: systemd did not come up ($state)" >&2; exit 1 ;; esac

inside "SOCKS4D_BIN=$bin $top/install.sh" >/dev/null
inside "echo 'permit 127.0.0.0/8' > /etc/socks4d.conf"

# The shipped Accept=yes pair, with --ident off.
inside "mkdir -p /etc/systemd/system/socks4d@.service.d && printf '[Service]\nExecStart=\nExecStart=/usr/sbin/socks4d --ident off\n' > /etc/systemd/system/socks4d@.service.d/bench.conf"

# The shipped Accept=no pair, copied to port 1081 with --ident off and, as
# every bench client comes from one address, --max-per-source 1000.
inside "sed -e 's/socks4d-listen\.socket/bench-accept-no.socket/g' -e 's/^ListenStream=1080/ListenStream=127.0.0.1:1081/' \
		-e '/^Conflicts=/d' /lib/systemd/system/socks4d-listen.socket > /etc/systemd/system/bench-accept-no.socket &&
	sed -e 's/socks4d-listen\.socket/bench-accept-no.socket/g' -e 's|^ExecStart=/usr/sbin/socks4d|ExecStart=/usr/sbin/socks4d --ident off --max-per-source 1000|' \
		/lib/systemd/system/socks4d-listen.service > /etc/systemd/system/bench-accept-no.service"

# The trivial Accept=yes unit.
inside "printf '[Socket]\nListenStream=127.0.0.1:1084\nAccept=yes\nMaxConnections=256\nTriggerLimitIntervalSec=0\n' > /etc/systemd/system/bench-floor.socket &&
	printf '[Service]\nExecStart=/bin/cat\nStandardInput=socket\nStandardOutput=socket\n' > /etc/systemd/system/bench-floor@.service"

extra=
if [ -n "${BENCH_OLD_UNIT:-}" ]; then
	git show "$BENCH_OLD_UNIT:systemd/socks4d@.service" |
		sed 's|^ExecStart=/usr/sbin/socks4d|ExecStart=/usr/sbin/socks4d --ident off|' >"$root.old-unit"
	inside "cp $root.old-unit /etc/systemd/system/bench-old@.service &&
		printf '[Socket]\nListenStream=127.0.0.1:1085\nAccept=yes\nMaxConnections=256\nTriggerLimitIntervalSec=0\n' > /etc/systemd/system/bench-old.socket"
	rm -f "$root.old-unit"
	extra="--external unit-old=127.0.0.1:1085"
fi

# inetd with the example line on 127.0.0.1:1082.
line=$(grep -v '^#' examples/inetd.conf | grep . | head -1 | sed 's/^socks/127.0.0.1:1082/')
inside "echo '$line --ident off' > /etc/inetd.conf"

inside "systemctl daemon-reload && systemctl restart inetd.service &&
	systemctl start socks4d.socket bench-accept-no.socket bench-floor.socket &&
	{ [ -z '$extra' ] || systemctl start bench-old.socket; } &&
	systemd-run -q --unit=bench-listen /usr/sbin/socks4d --listen 127.0.0.1:1083 --ident off --max-per-source 1000"

if [ -n "${BENCH_UNIT_SETTINGS:-}" ]; then
	# unit NAME SED-SCRIPT: the shipped pair, the service edited, on a port
	# of its own.
	port=1100
	unit() {
		port=$((port + 1))
		inside "sed -e 's/^ListenStream=.*/ListenStream=127.0.0.1:$port/' -e '/^Conflicts=/d' -e '/^\[Install\]/,\$d' \
				/lib/systemd/system/socks4d.socket > /etc/systemd/system/unit-$1.socket &&
			sed -e 's|^ExecStart=/usr/sbin/socks4d|ExecStart=/usr/sbin/socks4d --ident off|' -e '$2' \
				/lib/systemd/system/socks4d@.service > /etc/systemd/system/unit-$1@.service"
		extra="$extra --external unit-$1=127.0.0.1:$port"
	}
	# Without User=, socks4d starts as root and drops to the numbers itself.
	unit no-user '/^User=/d; /^Group=/d; /^CapabilityBoundingSet=/d; /^SecureBits=/d; s|^ExecStart=.*|& --user 65534:65534|'
	unit no-exittype '/^ExitType=/d'
	unit no-tasksmax '/^TasksMax=/d'
	unit no-caps '/^CapabilityBoundingSet=/d; /^AmbientCapabilities=/d; /^NoNewPrivileges=/d; /^SecureBits=/d; /^UMask=/d'
	unit journal '/^StandardOutput=/d; /^StandardError=/d'
	unit type-exec '/^\[Service\]/a Type=exec'
	unit bare '/^\[Service\]/,$c [Service]\nExecStart=/usr/sbin/socks4d --ident off --user 65534:65534'
	inside "sed 's/127.0.0.1:1084/127.0.0.1:1099/' /etc/systemd/system/bench-floor.socket > /etc/systemd/system/unit-floor-user.socket &&
		{ cat /etc/systemd/system/bench-floor@.service; echo User=socks4d; } > /etc/systemd/system/unit-floor-user@.service"
	extra="$extra --external-floor unit-floor-user=127.0.0.1:1099"
	inside "systemctl daemon-reload && for s in /etc/systemd/system/unit-*.socket; do systemctl start \$(basename \$s); done"
fi

nsenter -t "$leader" -n bench/target/release/socks4d-bench --only-external --account-tree "$leader" \
	--external unit-accept-yes=127.0.0.1:1080 \
	--external unit-accept-no=127.0.0.1:1081 \
	--external inetd=127.0.0.1:1082 \
	--external listen=127.0.0.1:1083 \
	--external-floor unit-floor=127.0.0.1:1084 \
	$extra \
	--bytes 1048576 --rounds 3 --latency 200 --conns 2000 --rules none \
	--out "$out" ${BENCH_ARGS:-}

echo "socks4d: $bin" >>"$out"

failed=$(inside "systemctl --failed --no-legend --plain")
[ -z "$failed" ] || { echo "container.sh: failed units after the run: $failed" >&2; exit 1; }
