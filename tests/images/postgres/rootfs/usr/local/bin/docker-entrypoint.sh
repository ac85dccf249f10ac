#!/bin/bash
# Entrypoint of devenv's PostgreSQL test image.
#
# It accepts the environment a user passes to the public `postgres` image, so a
# catalogue entry written for that image runs unchanged against this one:
#
#   POSTGRES_PASSWORD          password of POSTGRES_USER; required when the
#                              data directory is new, unless
#                              POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_USER              the superuser to create (default postgres)
#   POSTGRES_DB                the database to create (default POSTGRES_USER)
#   POSTGRES_INITDB_ARGS       extra arguments to initdb
#   POSTGRES_INITDB_WALDIR     where initdb puts the WAL
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for network connections
#                              (default scram-sha-256)
#   PGDATA                     the data directory (default
#                              /var/lib/postgresql/data)
#
# Each of the first three may also be given as X_FILE naming a file. Files in
# /docker-entrypoint-initdb.d (*.sh, *.sql, *.sql.gz, *.sql.xz) run once,
# after the database is made.
#
# First start (no PG_VERSION in PGDATA): initdb, a temporary server on the
# socket only for the database and the init scripts, then stop it. Every start
# then runs the server as user postgres and turns `docker stop`'s SIGTERM into
# SIGINT, PostgreSQL's fast shutdown (the public image's stop signal), so the
# server stops cleanly within the grace period even with clients connected.
set -Eeo pipefail
shopt -s nullglob

note() { printf '%s [entrypoint] %s\n' "$(date '+%F %T')" "$*"; }
fail() {
    printf '%s [entrypoint] error: %s\n' "$(date '+%F %T')" "$*" >&2
    exit 1
}

# from_env NAME [DEFAULT]: NAME, else the contents of the file named by
# NAME_FILE, else DEFAULT; exported under NAME.
from_env() {
    local name=$1 default=${2:-} file_var=${1}_FILE value
    if [ -n "${!name:-}" ] && [ -n "${!file_var:-}" ]; then
        fail "both $name and $file_var are set; use one"
    fi
    value=$default
    if [ -n "${!name:-}" ]; then
        value=${!name}
    elif [ -n "${!file_var:-}" ]; then
        [ -r "${!file_var}" ] || fail "$file_var names ${!file_var}, which cannot be read"
        value=$(<"${!file_var}")
    fi
    export "$name=$value"
    unset "$file_var"
}

# --- which command ------------------------------------------------------------------
if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi
[ "$1" = postgres ] || exec "$@"
for arg in "${@:2}"; do
    case "$arg" in
        -'?' | --help | --describe-config | -C | -V | --version) exec "$@" ;;
    esac
done

export PGDATA=${PGDATA:-/var/lib/postgresql/data}

# --- as root: directories, then the rest of this script as user postgres ------------
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA" || :
    chown postgres:postgres /var/run/postgresql
    chmod 2777 /var/run/postgresql
    # A data directory made on the host or by another image may belong to root.
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres:postgres '{}' +
        chmod 700 "$POSTGRES_INITDB_WALDIR"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

# serve COMMAND…: the server in the foreground; SIGTERM and SIGINT stop it fast.
serve() {
    "$@" &
    local pid=$!
    trap 'kill -INT "$pid" 2>/dev/null' TERM INT
    local status=0
    # `wait` returns early when a trapped signal arrives; wait again until the
    # server has exited.
    while kill -0 "$pid" 2>/dev/null; do
        wait "$pid" && status=0 || status=$?
    done
    exit "$status"
}

if [ -s "$PGDATA/PG_VERSION" ]; then
    note "data directory $PGDATA is initialised; starting the server"
    serve "$@"
fi

# --- first start --------------------------------------------------------------------------
from_env POSTGRES_PASSWORD
from_env POSTGRES_USER postgres
from_env POSTGRES_DB "$POSTGRES_USER"
from_env POSTGRES_INITDB_ARGS
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
    fail "the data directory is empty and POSTGRES_PASSWORD is not set: set it (or" \
        "POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without one)"
fi

note "initialising the data directory $PGDATA"
initdb_args=(--username="$POSTGRES_USER")
pwfile=""
if [ -n "$POSTGRES_PASSWORD" ]; then
    pwfile=$(umask 077 && mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb_args+=(--pwfile="$pwfile")
fi
if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    initdb_args+=(--waldir="$POSTGRES_INITDB_WALDIR")
fi
# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of arguments
initdb "${initdb_args[@]}" $POSTGRES_INITDB_ARGS >/dev/null
[ -z "$pwfile" ] || rm -f "$pwfile"

{
    echo
    echo "# Connections from outside the container (added by the entrypoint)."
    echo "host all all all $auth"
} >>"$PGDATA/pg_hba.conf"
{
    echo
    echo "listen_addresses = '*'"
} >>"$PGDATA/postgresql.conf"

note "starting a temporary server on the socket only"
pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w -t 60 start >/dev/null

export PGPASSWORD=$POSTGRES_PASSWORD
psql_base=(psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --no-password)
if [ "$POSTGRES_DB" != postgres ]; then
    exists=$("${psql_base[@]}" --dbname postgres --tuples-only --no-align \
        -v db="$POSTGRES_DB" <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")
    if [ -z "$exists" ]; then
        note "creating database $POSTGRES_DB"
        "${psql_base[@]}" --dbname postgres -v db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
fi

for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
        *.sh)
            if [ -x "$f" ]; then
                note "running $f"
                "$f"
            else
                note "sourcing $f"
                # shellcheck disable=SC1090
                . "$f"
            fi
            ;;
        *.sql) note "running $f"; "${psql_base[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
        *.sql.gz) note "running $f"; gzip -dc "$f" | "${psql_base[@]}" --dbname "$POSTGRES_DB" ;;
        *.sql.xz) note "running $f"; xz -dc "$f" | "${psql_base[@]}" --dbname "$POSTGRES_DB" ;;
        *) note "ignoring $f" ;;
    esac
done
unset PGPASSWORD

note "stopping the temporary server"
pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null

note "initialisation done; starting the server"
serve "$@"
