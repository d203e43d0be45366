#!/bin/sh
# Installs socks4d: the release binary, the man pages, the systemd units
# (socks4d.socket with socks4d@.service, socks4d-listen.socket with
# socks4d-listen.service), the sysusers.d entry for the socks4d user, the
# inetd, xinetd and rules examples under $PREFIX/share/doc/socks4d/examples,
# and an example /etc/socks4d.conf (never over an existing one); then it
# says what to do next.
#
#   ./install.sh                      # build if needed, install under /usr
#   PREFIX=/usr/local ./install.sh
#   DESTDIR=/tmp/stage ./install.sh   # stage for a package
#
# PREFIX (default /usr) holds sbin/ and share/man/; the units go to
# $PREFIX/lib/systemd/system, the user to $PREFIX/lib/sysusers.d and the
# rules file to /etc, all under DESTDIR. Without DESTDIR, on a host that
# runs systemd, it creates the user (systemd-sysusers) and reloads systemd.
# The binary is the static build (README, "Which build"; socks4d(8),
# IMPLEMENTATION NOTES), target/<arch>-unknown-linux-musl/release/socks4d,
# built with `cargo build --release --target <arch>-unknown-linux-musl` when
# it is missing; where that target is not installed, the glibc build,
# target/release/socks4d, and install.sh says so. SOCKS4D_BUILD=glibc
# installs the glibc build (for users or host names that only an NSS
# module knows); SOCKS4D_BIN installs another binary.
set -eu

PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
SYSTEMDUNITDIR=${SYSTEMDUNITDIR:-$PREFIX/lib/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-$PREFIX/lib/sysusers.d}
here=$(cd "$(dirname "$0")" && pwd)

say() { echo "install.sh: $*"; }

glibc=$here/target/release/socks4d
triple=$(uname -m)-unknown-linux-musl
static=$here/target/$triple/release/socks4d
build_glibc() {
	[ -x "$glibc" ] || (cd "$here" && cargo build --release --locked)
	bin=$glibc
}
if [ -n "${SOCKS4D_BIN:-}" ]; then
	bin=$SOCKS4D_BIN
	if [ ! -x "$bin" ]; then
		echo "install.sh: $bin is not an executable file" >&2
		exit 1
	fi
else
	case ${SOCKS4D_BUILD:-static} in
	static)
		bin=$static
		if [ ! -x "$bin" ] && ! (cd "$here" && cargo build --release --locked --target "$triple"); then
			say "no static build (rustup target add $triple); installing the glibc build"
			build_glibc
		fi
		;;
	glibc) build_glibc ;;
	*)
		echo "install.sh: SOCKS4D_BUILD is static or glibc, not ${SOCKS4D_BUILD}" >&2
		exit 1
		;;
	esac
fi

put() { # mode source target
	install -D -m "$1" "$2" "$DESTDIR$3"
	say "$DESTDIR$3"
}

put 0755 "$bin" "$PREFIX/sbin/socks4d"
put 0644 "$here/man/socks4d.8" "$PREFIX/share/man/man8/socks4d.8"
put 0644 "$here/man/socks4d.conf.5" "$PREFIX/share/man/man5/socks4d.conf.5"
put 0644 "$here/man/socks4d.chain.5" "$PREFIX/share/man/man5/socks4d.chain.5"

# The units name /usr/sbin/socks4d; point them at the installed binary.
for unit in socks4d.socket socks4d@.service socks4d-listen.socket socks4d-listen.service; do
	install -d "$DESTDIR$SYSTEMDUNITDIR"
	sed "s|^ExecStart=/usr/sbin/socks4d|ExecStart=$PREFIX/sbin/socks4d|" \
		"$here/systemd/$unit" >"$DESTDIR$SYSTEMDUNITDIR/$unit"
	chmod 0644 "$DESTDIR$SYSTEMDUNITDIR/$unit"
	say "$DESTDIR$SYSTEMDUNITDIR/$unit"
done

put 0644 "$here/systemd/socks4d.sysusers" "$SYSUSERSDIR/socks4d.conf"

examples=$PREFIX/share/doc/socks4d/examples
put 0644 "$here/examples/inetd.conf" "$examples/inetd.conf"
put 0644 "$here/examples/xinetd.d/socks4d" "$examples/xinetd.d/socks4d"
put 0644 "$here/examples/socks4d.conf" "$examples/socks4d.conf"

conf=$DESTDIR$SYSCONFDIR/socks4d.conf
if [ -e "$conf" ]; then
	say "$conf exists, left as it is; the example is $DESTDIR$examples/socks4d.conf"
	rules="$SYSCONFDIR/socks4d.conf was there before and is kept; check it"
else
	put 0644 "$here/examples/socks4d.conf" "$SYSCONFDIR/socks4d.conf"
	rules="$SYSCONFDIR/socks4d.conf denies every request, from loopback too, until
   you uncomment or write rules in it (socks4d.conf(5)); then check it"
fi

if [ -z "$DESTDIR" ] && command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers "$SYSUSERSDIR/socks4d.conf" && say "user socks4d is there"
fi
if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi

# What to do next, in the installed system's paths.
cat <<EOF

Next:
1. $rules:
       $PREFIX/sbin/socks4d --check-config -f $SYSCONFDIR/socks4d.conf
2. Start it one way (socks4d(8), DEPLOYMENT):
       systemctl enable --now socks4d-listen.socket   # one process, a handler per connection
       systemctl enable --now socks4d.socket          # or: one unit per connection
   or add the line of $examples/inetd.conf to /etc/inetd.conf,
   or copy $examples/xinetd.d/socks4d to /etc/xinetd.d/.
3. Read its audit lines: journalctl -t socks4d
EOF
