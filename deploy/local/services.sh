#!/usr/bin/env bash
# Start, stop and inspect the six mloop services and the web UI as local background processes.
#
#   deploy/local/services.sh start|stop|status [name...]
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck disable=SC2034  # not used here; same variables in every deploy/local script
CACHE=${MLOOP_CACHE:-$REPO/.cache}
RUN=${MLOOP_RUN:-$REPO/.run}

PYTHON=${MLOOP_PYTHON:-$REPO/.venv/bin/python}
START_TIMEOUT=${MLOOP_SERVICES_START_TIMEOUT:-90}
STOP_TIMEOUT=${MLOOP_SERVICES_STOP_TIMEOUT:-20}
LOGS=$RUN/logs
PIDS=$RUN/pids

# name:port, in start order
SERVICES=(ingest:8001 trainer:8002 validator:8003 registry:8004 serving:8005 drift:8006 ui:8007)

log() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat >&2 <<EOF
usage: $(basename "$0") {start|stop|status} [name...]

  start   start the services that are not running ($PYTHON -m mloop_<name>)
          and wait up to ${START_TIMEOUT}s until each answers GET /healthz with 200
  stop    SIGTERM, then SIGKILL after ${STOP_TIMEOUT}s
  status  table of name, pid, /healthz and /readyz; exit 0 when all are running, 3 otherwise

names: ${SERVICES[*]%%:*}  (default: all)
logs: $LOGS/<name>.log   pids: $PIDS/<name>.pid
environment: MLOOP_PYTHON MLOOP_RUN MLOOP_SERVICES_START_TIMEOUT MLOOP_SERVICES_STOP_TIMEOUT
EOF
    exit 2
}

port_of() {
    local entry
    for entry in "${SERVICES[@]}"; do
        [[ ${entry%%:*} == "$1" ]] && { echo "${entry##*:}"; return 0; }
    done
    return 1
}

pidfile() { echo "$PIDS/$1.pid"; }
logfile() { echo "$LOGS/$1.log"; }

# Exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# True when $2 is a live process running service $1 (guards against pid reuse).
is_service() {
    local name=$1 pid=$2
    [[ -n $pid ]] && alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-m mloop_$name"
}

running_pid() {
    local f pid
    f=$(pidfile "$1")
    [[ -f $f ]] || return 1
    pid=$(tr -cd '0-9' <"$f")
    is_service "$1" "$pid" && echo "$pid"
}

# Any live (non-zombie) process left in process group $1.
group_alive() {
    local p
    for p in $(pgrep -g "$1" 2>/dev/null); do alive "$p" && return 0; done
    return 1
}

http_code() {
    curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1$2" 2>/dev/null || true
}

file_size() { if [[ -f $1 ]]; then stat -c %s "$1"; else echo 0; fi; }

show_tail() {
    local name=$1 offset=${2:-0} f
    f=$(logfile "$name")
    echo "---- last lines of $f ----" >&2
    if [[ -f $f ]]; then tail -c +$((offset + 1)) "$f" | tail -n 40 >&2; fi
}

# --- commands ------------------------------------------------------------------------
cmd_start() {
    [[ -x $PYTHON ]] || die "$PYTHON not found; create the virtualenv first (make setup)"
    mkdir -p "$LOGS" "$PIDS"
    local name pid port pending=() failed=()
    declare -A offset=()
    for name in "$@"; do
        if pid=$(running_pid "$name"); then
            log "$name already running (pid $pid)"
            continue
        fi
        port=$(port_of "$name")
        if [[ $(http_code "$port" /healthz) != 000 ]]; then
            die "port $port (for $name) is already answering, but not from a process this script started"
        fi
        offset[$name]=$(file_size "$(logfile "$name")")
        printf '==== %s starting %s (port %s) ====\n' "$(date -u +%FT%TZ)" "$name" "$port" >>"$(logfile "$name")"
        # setsid: own session and process group, so stop can reach worker processes too.
        # shellcheck disable=SC2016  # $$ expands in the child bash, which then execs python
        (cd "$REPO" && exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$(pidfile "$name")" \
            "$PYTHON" -m "mloop_$name" </dev/null >>"$(logfile "$name")" 2>&1) &
        pending+=("$name")
    done
    ((${#pending[@]})) || return 0
    log "started ${pending[*]}; waiting up to ${START_TIMEOUT}s for /healthz"

    local deadline=$((SECONDS + START_TIMEOUT)) still=()
    while ((${#pending[@]})); do
        sleep 0.5
        still=()
        for name in "${pending[@]}"; do
            port=$(port_of "$name")
            pid=$(tr -cd '0-9' <"$(pidfile "$name")" 2>/dev/null || true)
            if [[ -n $pid ]] && ! is_service "$name" "$pid"; then
                log "$name exited during startup" >&2
                show_tail "$name" "${offset[$name]}"
                rm -f "$(pidfile "$name")"
                failed+=("$name")
            elif [[ -n $pid && $(http_code "$port" /healthz) == 200 ]]; then
                log "$name healthy on http://127.0.0.1:$port (pid $pid)"
            else
                still+=("$name")
            fi
        done
        pending=("${still[@]}")
        if ((${#pending[@]})) && ((SECONDS >= deadline)); then
            for name in "${pending[@]}"; do
                log "$name did not answer /healthz with 200 within ${START_TIMEOUT}s; stopping it" >&2
                show_tail "$name" "${offset[$name]}"
                stop_one "$name" >&2
                failed+=("$name")
            done
            pending=()
        fi
    done
    ((${#failed[@]} == 0)) || die "failed to start: ${failed[*]} (logs in $LOGS)"
}

# Send SIGTERM to every selected service, wait for all of them together, then SIGKILL.
cmd_stop() {
    local name pid victims=()
    declare -A pids=()
    for name in "$@"; do
        if pid=$(running_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids[$name]=$pid
            victims+=("$name")
            log "stopping $name (pid $pid)"
        else
            rm -f "$(pidfile "$name")"
        fi
    done
    local deadline=$((SECONDS + STOP_TIMEOUT)) left
    while :; do
        left=0
        for name in "${victims[@]}"; do group_alive "${pids[$name]}" && left=1; done
        ((left && SECONDS < deadline)) || break
        sleep 0.3
    done
    for name in "${victims[@]}"; do
        pid=${pids[$name]}
        if group_alive "$pid"; then
            log "$name (or a child process) still running after ${STOP_TIMEOUT}s; sending SIGKILL to its process group"
            kill -KILL -- "-$pid" 2>/dev/null || true
            while group_alive "$pid"; do sleep 0.2; done
        fi
        rm -f "$(pidfile "$name")"
        log "$name stopped"
    done
    ((${#victims[@]})) || log "nothing running (${*})"
}

stop_one() { cmd_stop "$1"; }

cmd_status() {
    local name pid port rc=0 health ready
    printf '%-10s %-6s %-8s %-8s %s\n' NAME PORT PID HEALTHZ READYZ
    for name in "$@"; do
        port=$(port_of "$name")
        if pid=$(running_pid "$name"); then
            health=$(http_code "$port" /healthz)
            ready=$(http_code "$port" /readyz)
            [[ $health == 000 ]] && health=down
            [[ $ready == 000 ]] && ready=down
        else
            pid=- health=stopped ready=-
            rc=3
        fi
        printf '%-10s %-6s %-8s %-8s %s\n' "$name" "$port" "$pid" "$health" "$ready"
    done
    return "$rc"
}

(($# >= 1)) || usage
command=$1
shift
case $command in
    start | stop | status) ;;
    *) usage ;;
esac
names=("$@")
if ((${#names[@]} == 0)); then
    names=("${SERVICES[@]%%:*}")
fi
for n in "${names[@]}"; do
    port_of "$n" >/dev/null || { echo "services: unknown service '$n'" >&2; usage; }
done
command -v curl >/dev/null || die "curl is required"
"cmd_$command" "${names[@]}"
