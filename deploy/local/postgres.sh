#!/usr/bin/env bash
# mloop's own PostgreSQL cluster (Debian packages, no systemd, no Docker).
# It never touches the Debian "main" cluster; it runs from $RUN/pg on 127.0.0.1.
#
#   deploy/local/postgres.sh install|start|stop [--immediate]|status|reset
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck disable=SC2034  # not used here; same variables in every deploy/local script
CACHE=${MLOOP_CACHE:-$REPO/.cache}
RUN=${MLOOP_RUN:-$REPO/.run}

PG_PORT=${MLOOP_PG_PORT:-55432}
PG_HOST=127.0.0.1
PGROOT=$RUN/pg
DATA=$PGROOT/data
SOCK=$PGROOT/socket
LOGS=$RUN/logs
LOGFILE=$LOGS/postgres.log
DB=mloop
ADMIN_ROLE=mloop
SERVICES=(ingest trainer validator registry serving drift)

log() { printf 'postgres: %s\n' "$*"; }
die() { printf 'postgres: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat >&2 <<EOF
usage: $(basename "$0") {install|start|stop [--immediate]|status|reset}

  install  apt-get install postgresql when no server binaries are present (root)
  start    install if needed, init and start our cluster in $DATA on $PG_HOST:$PG_PORT,
           then make sure database '$DB', role '$ADMIN_ROLE' and one role+schema per
           service (${SERVICES[*]}) exist
  stop     fast shutdown (sessions ended, then a checkpoint)
           --immediate: what a crash leaves (no checkpoint); the next start runs crash recovery
  status   exit 0 when running, 3 when stopped
  reset    stop and delete $PGROOT

services connect with postgresql+asyncpg://<svc>:<svc>@$PG_HOST:$PG_PORT/$DB
environment: MLOOP_PG_PORT MLOOP_PG_BINDIR MLOOP_RUN
EOF
    exit 2
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Newest Debian server binaries, unless MLOOP_PG_BINDIR points elsewhere.
find_bindir() {
    if [[ -n ${MLOOP_PG_BINDIR:-} ]]; then
        [[ -x $MLOOP_PG_BINDIR/postgres ]] && echo "$MLOOP_PG_BINDIR"
        return
    fi
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' -printf '%h\n' 2>/dev/null |
        sort -V | tail -n 1)
    [[ -n $dir ]] && echo "$dir"
}

# The OS user that owns and runs the cluster; also its superuser role name.
if is_root; then PG_OS_USER=postgres; else PG_OS_USER=$(id -un); fi

# Run a PostgreSQL program as the cluster owner (from / so it never lacks a cwd).
as_owner() {
    if is_root; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

cmd_install() {
    local bindir
    if bindir=$(find_bindir); then
        log "server binaries present ($bindir)"
        return 0
    fi
    is_root || die "PostgreSQL server binaries are missing; as root run: $0 install"
    log "installing PostgreSQL from Debian packages (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql
    bindir=$(find_bindir) || die "apt-get finished but no /usr/lib/postgresql/*/bin/postgres exists"
    # apt may have created (and started) the Debian "main" cluster on 5432; it is not ours.
    log "installed ($bindir)"
}

pg_running() {
    local bindir=$1
    [[ -f $DATA/PG_VERSION ]] || return 1
    as_owner "$bindir/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

# A process that exists and is not a zombie (an exited postmaster may linger
# unreaped when its adoptive parent is slow to wait for it).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/$PG_HOST/$1") 2>/dev/null; }

prepare_dirs() {
    mkdir -p "$PGROOT" "$SOCK" "$LOGS"
    touch "$LOGFILE"
    if is_root; then
        chown "$PG_OS_USER:" "$PGROOT" "$SOCK" "$LOGFILE"
        [[ -d $DATA ]] && chown -R "$PG_OS_USER:" "$DATA"
        if ! runuser -u "$PG_OS_USER" -- test -w "$PGROOT" -a -w "$LOGFILE"; then
            die "user '$PG_OS_USER' cannot reach $PGROOT; every directory above it must be
       traversable (o+x), e.g. chmod o+x on: $(namei -m "$PGROOT" | awk '$1 ~ /^d/ && $1 !~ /x$/ {print $2}' | tr '\n' ' ')
       or set MLOOP_RUN to a directory outside a private home"
        fi
    fi
    chmod 0755 "$SOCK"
    local sockfile=$SOCK/.s.PGSQL.$PG_PORT
    ((${#sockfile} <= 107)) || die "socket path $sockfile is longer than 107 bytes; use a shorter MLOOP_RUN"
}

init_cluster() {
    local bindir=$1
    [[ -f $DATA/PG_VERSION ]] && return 0
    log "initdb $DATA (superuser '$PG_OS_USER')"
    as_owner "$bindir/initdb" -D "$DATA" -U "$PG_OS_USER" --encoding=UTF8 --locale=C \
        --auth-local=peer --auth-host=scram-sha-256 >"$PGROOT/initdb.log" 2>&1 ||
        { tail -n 20 "$PGROOT/initdb.log" >&2; die "initdb failed"; }
}

write_config() {
    local conf=$DATA/mloop.conf sock_q=${SOCK//\'/\'\'}
    cat >"$conf" <<EOF
# Written by deploy/local/postgres.sh on every start; edit the script, not this file.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$sock_q'
max_connections = 200
shared_buffers = 128MB
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
log_connections = off
log_disconnections = off
EOF
    grep -q "^include_if_exists = 'mloop.conf'" "$DATA/postgresql.conf" ||
        printf "\n# mloop overrides (deploy/local/postgres.sh)\ninclude_if_exists = 'mloop.conf'\n" >>"$DATA/postgresql.conf"
    is_root && chown "$PG_OS_USER:" "$conf" "$DATA/postgresql.conf"
    return 0
}

# Idempotently create the database, the admin role and one role + schema per service.
ensure_objects() {
    local bindir=$1 svc roles_sql="" schemas_sql="" role_list
    role_list=$(printf "'%s'," "$ADMIN_ROLE" "${SERVICES[@]}")
    for svc in "${SERVICES[@]}"; do
        roles_sql+="ALTER ROLE $svc WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '$svc';
"
        schemas_sql+="CREATE SCHEMA IF NOT EXISTS $svc AUTHORIZATION $svc;
ALTER SCHEMA $svc OWNER TO $svc;
ALTER ROLE $svc IN DATABASE $DB SET search_path = $svc;
"
    done
    as_owner "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PG_PORT" -U "$PG_OS_USER" -d postgres <<SQL
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY[${role_list%,}]) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE $ADMIN_ROLE WITH LOGIN NOSUPERUSER CREATEDB CREATEROLE PASSWORD '$ADMIN_ROLE';
$roles_sql
SELECT 'CREATE DATABASE $DB OWNER $ADMIN_ROLE'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB') \gexec
ALTER DATABASE $DB OWNER TO $ADMIN_ROLE;
\connect $DB
SET client_min_messages = warning;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
$schemas_sql
SQL
}

cmd_start() {
    local bindir
    bindir=$(find_bindir) || { cmd_install; bindir=$(find_bindir); }
    prepare_dirs
    if pg_running "$bindir"; then
        log "already running ($PG_HOST:$PG_PORT, data $DATA)"
    else
        port_open "$PG_PORT" && die "port $PG_PORT is already in use by another process"
        init_cluster "$bindir"
        write_config
        log "starting PostgreSQL $(basename "$(dirname "$bindir")") on $PG_HOST:$PG_PORT"
        if ! as_owner "$bindir/pg_ctl" start -D "$DATA" -l "$LOGFILE" -w -t 60 -s; then
            echo "---- last lines of $LOGFILE ----" >&2
            tail -n 30 "$LOGFILE" >&2
            die "PostgreSQL did not start"
        fi
    fi
    ensure_objects "$bindir"
    log "ready: database '$DB'; roles $ADMIN_ROLE ${SERVICES[*]}; log $LOGFILE"
}

cmd_stop() {
    local mode=${1:-fast} bindir pid="" state
    if ! bindir=$(find_bindir) || ! pg_running "$bindir"; then
        log "not running"
        return 0
    fi
    [[ -f $DATA/postmaster.pid ]] && pid=$(head -n 1 "$DATA/postmaster.pid")
    log "stopping${pid:+ (pid $pid)}, $mode shutdown..."
    if [[ $mode == immediate ]]; then
        as_owner "$bindir/pg_ctl" stop -D "$DATA" -m immediate -w -t 30 -s
    elif ! as_owner "$bindir/pg_ctl" stop -D "$DATA" -m fast -w -t 30 -s; then
        log "fast shutdown did not finish in 30s; using immediate mode"
        as_owner "$bindir/pg_ctl" stop -D "$DATA" -m immediate -w -t 30 -s || true
    fi
    # The postmaster waits for its children, so none outlive it; double-check anyway.
    if [[ -n $pid ]] && alive "$pid"; then
        die "postmaster $pid is still alive"
    fi
    if [[ $mode == immediate ]]; then
        # The control file still says "in production": proof the next start replays WAL (crash recovery).
        state=$(as_owner "$bindir/pg_controldata" -D "$DATA" 2>/dev/null | sed -n 's/^Database cluster state: *//p') || true
        log "stopped without a checkpoint (cluster state: ${state:-unknown}; the next start runs crash recovery)"
        return 0
    fi
    log "stopped"
}

cmd_status() {
    local bindir
    if bindir=$(find_bindir) && pg_running "$bindir"; then
        echo "postgres: running ($PG_HOST:$PG_PORT, pid $(head -n 1 "$DATA/postmaster.pid"), data $DATA)"
        return 0
    fi
    echo "postgres: stopped"
    return 3
}

cmd_reset() {
    cmd_stop
    rm -rf "$PGROOT"
    log "deleted $PGROOT (a fresh cluster is created on the next start)"
}

case $# in
    1) ;;
    2) [[ $1 == stop && $2 == --immediate ]] || usage ;;
    *) usage ;;
esac
case $1 in
    install | start | status | reset) "cmd_$1" ;;
    stop) cmd_stop "$([[ ${2:-} == --immediate ]] && echo immediate || echo fast)" ;;
    *) usage ;;
esac
