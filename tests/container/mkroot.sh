#!/bin/sh
# Builds (once) the Debian bookworm root that the systemd tests and the
# container bench boot with systemd-nspawn -b:
#
#   tests/container/mkroot.sh DIR
#
# DIR is reused while DIR/.socks4d-root names the same package list; a
# half-built DIR is built again. The mirror is $SOCKS4D_DEBIAN_MIRROR, else
# deb.debian.org. Needs root, debootstrap and systemd-container.
set -eu
dir=${1:?usage: mkroot.sh DIR}
mirror=${SOCKS4D_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# systemd as PID 1; oidentd for ident; openbsd-inetd for the inetd path;
# procps (pgrep, ps); python3-minimal is not needed: clients run from the
# host inside the container's network namespace.
packages=systemd,systemd-sysv,dbus,oidentd,openbsd-inetd,procps,netbase
stamp="bookworm minbase $packages"

if [ -f "$dir/.socks4d-root" ] && [ "$(cat "$dir/.socks4d-root")" = "$stamp" ]; then
	exit 0
fi
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
tmp="$dir.tmp"
rm -rf "$tmp"
debootstrap --variant=minbase --include="$packages" bookworm "$tmp" "$mirror" >"$tmp.log" 2>&1 || {
	tail -20 "$tmp.log" >&2
	exit 1
}
# A machine id, so that journald keeps a journal; no getty on the console.
chroot "$tmp" systemd-machine-id-setup >/dev/null 2>&1 || true
chroot "$tmp" systemctl mask console-getty.service getty@.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
echo "$stamp" >"$tmp/.socks4d-root"
mv "$tmp" "$dir"
rm -f "$tmp.log"
