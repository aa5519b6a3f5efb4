#!/usr/bin/env bash
# Debian's Chromium for the web UI's browser tests (tests/ui): installed from Debian packages when missing.
# Playwright drives it as it is; no browser is downloaded from anywhere else.
#
#   deploy/local/chromium.sh install   install if missing (root), then print the browser's path
#   deploy/local/chromium.sh path      print the browser's path, exit 1 when there is none
set -euo pipefail

BROWSER=${MLOOP_CHROMIUM:-/usr/bin/chromium}

log() { printf 'chromium: %s\n' "$*" >&2; }
die() { printf 'chromium: error: %s\n' "$*" >&2; exit 1; }

cmd_path() {
    [[ -x $BROWSER ]] || die "no browser at $BROWSER (run: $0 install)"
    echo "$BROWSER"
}

cmd_install() {
    if [[ ! -x $BROWSER ]]; then
        [[ $(id -u) == 0 ]] || die "Chromium is missing; as root run: $0 install (or apt-get install chromium)"
        log "installing Chromium from Debian packages (apt-get)..."
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    fi
    cmd_path
}

case ${1:-} in
    install) cmd_install ;;
    path) cmd_path ;;
    *) echo "usage: $(basename "$0") {install|path}" >&2; exit 2 ;;
esac
