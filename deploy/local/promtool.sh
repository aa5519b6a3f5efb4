#!/usr/bin/env bash
# Prints the path of a promtool, fetching Debian's `prometheus` package into the cache when none is on PATH.
# Only the .deb is downloaded and unpacked (no install, no daemon, no root needed once apt lists exist).
#
#   deploy/local/promtool.sh        # -> /path/to/promtool
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${MLOOP_CACHE:-$REPO/.cache}
DEST=$CACHE/prometheus
BIN=$DEST/usr/bin/promtool

die() { printf 'promtool: error: %s\n' "$*" >&2; exit 1; }

if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
if [[ ! -x $BIN ]]; then
    printf 'promtool: fetching Debian package prometheus into %s\n' "$DEST" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
        # A fresh machine may have no package lists yet.
        [[ $(id -u) -eq 0 ]] || die "apt-get download prometheus failed; as root run: apt-get update"
        apt-get update -q >/dev/null
        (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || die "apt-get download prometheus failed"
    fi
    rm -rf "$DEST.partial"
    dpkg-deb -x "$work"/prometheus_*.deb "$DEST.partial"
    rm -rf "$DEST"
    mv "$DEST.partial" "$DEST"
fi
[[ -x $BIN ]] || die "no promtool in the prometheus package"
echo "$BIN"
