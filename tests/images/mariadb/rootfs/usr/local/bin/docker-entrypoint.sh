#!/bin/bash
# Entrypoint of devenv's MariaDB test image.
#
# It accepts the environment a user passes to the public `mariadb` image, so a
# catalogue entry written for that image runs unchanged against this one:
#
#   MARIADB_ROOT_PASSWORD | MARIADB_ROOT_PASSWORD_HASH
#     | MARIADB_ALLOW_EMPTY_ROOT_PASSWORD | MARIADB_RANDOM_ROOT_PASSWORD
#                                   one is required when the datadir is new
#   MARIADB_ROOT_HOST               host part of the extra root account ('%')
#   MARIADB_DATABASE                database to create
#   MARIADB_USER, MARIADB_PASSWORD | MARIADB_PASSWORD_HASH
#                                   account to create ('%' host), with all
#                                   privileges on MARIADB_DATABASE
#   MARIADB_MYSQL_LOCALHOST_USER, MARIADB_MYSQL_LOCALHOST_GRANTS
#   MARIADB_INITDB_SKIP_TZINFO
#
# Each MARIADB_X may also be given as MYSQL_X (MYSQL_ALLOW_EMPTY_PASSWORD for
# the empty root password), and each secret as X_FILE naming a file. Files in
# /docker-entrypoint-initdb.d (*.sh, *.sql, *.sql.gz, *.sql.xz, *.sql.zst) run
# once, after the accounts are made.
#
# First start (no mysql/ in the datadir): initialise the datadir, start a
# server on the socket only, create the accounts and database, stop it. Every
# start then replaces this shell with mariadbd running as user mysql, so the
# server is PID 1 and `docker stop` (SIGTERM) shuts it down cleanly.
set -eo pipefail
shopt -s nullglob

note() { printf '%s [Note] [Entrypoint]: %s\n' "$(date '+%F %T')" "$*"; }
warn() { printf '%s [Warn] [Entrypoint]: %s\n' "$(date '+%F %T')" "$*" >&2; }
fail() {
    printf '%s [ERROR] [Entrypoint]: %s\n' "$(date '+%F %T')" "$*" >&2
    exit 1
}

# setting NAME [MYSQL_ALIAS]: the value of MARIADB_NAME, else of its MYSQL_
# alias, else of the file named by either's _FILE variable.
setting() {
    local name=MARIADB_$1 alias=${2:-MYSQL_$1} v
    for v in "$name" "$alias"; do
        local file_var=${v}_FILE
        if [ -n "${!v:-}" ] && [ -n "${!file_var:-}" ]; then
            fail "both $v and $file_var are set; use one"
        fi
        if [ -n "${!v:-}" ]; then
            printf '%s' "${!v}"
            return
        fi
        if [ -n "${!file_var:-}" ]; then
            [ -r "${!file_var}" ] || fail "$file_var names ${!file_var}, which cannot be read"
            # Like $(cat): the trailing newline of a secret file is not part of it.
            printf '%s' "$(<"${!file_var}")"
            return
        fi
    done
}

# SQL string literal and identifier quoting.
sql_string() {
    local s=${1//\\/\\\\}
    s=${s//\'/\\\'}
    printf "'%s'" "$s"
}
# shellcheck disable=SC2016 # the backticks are SQL quoting
sql_ident() { printf '`%s`' "${1//\`/\`\`}"; }

# Ask the server (with the same arguments) for one of its settings.
server_setting() {
    local want=$1
    shift
    "$@" --verbose --help 2>/dev/null | awk -v k="$want" '$1 == k { print $2; exit }'
}

# --- which command --------------------------------------------------------------
if [ "${1:0:1}" = '-' ]; then
    set -- mariadbd "$@"
fi
case "$1" in
    mariadbd | mysqld) ;;
    *) exec "$@" ;;
esac
# Options after the server name that would only print something: no set-up.
for arg in "${@:2}"; do
    case "$arg" in
        -'?' | --help | --print-defaults | -V | --version) exec "$@" ;;
    esac
done

# --- as root: directories, then the rest of this script as user mysql ----------
if [ "$(id -u)" = 0 ]; then
    datadir=$(server_setting datadir "$@")
    datadir=${datadir:-/var/lib/mysql}
    mkdir -p "$datadir" /run/mysqld
    chown mysql:mysql /run/mysqld
    chmod 1777 /run/mysqld
    # A data directory made on the host or by another image may belong to root.
    find "$datadir" \! -user mysql -exec chown mysql:mysql '{}' +
    exec setpriv --reuid=mysql --regid=mysql --init-groups "${BASH_SOURCE[0]}" "$@"
fi

datadir=$(server_setting datadir "$@")
datadir=${datadir:-/var/lib/mysql}
datadir=${datadir%/}
socket=$(server_setting socket "$@")
socket=${socket:-/run/mysqld/mysqld.sock}

if [ -d "$datadir/mysql" ]; then
    note "data directory $datadir is initialised; starting the server"
    exec "$@"
fi

# --- first start ------------------------------------------------------------------
root_password=$(setting ROOT_PASSWORD)
root_password_hash=$(setting ROOT_PASSWORD_HASH)
allow_empty=$(setting ALLOW_EMPTY_ROOT_PASSWORD MYSQL_ALLOW_EMPTY_PASSWORD)
random_root=$(setting RANDOM_ROOT_PASSWORD)
root_host=$(setting ROOT_HOST)
root_host=${root_host:-%}
database=$(setting DATABASE)
user=$(setting USER)
password=$(setting PASSWORD)
password_hash=$(setting PASSWORD_HASH)
localhost_user=$(setting MYSQL_LOCALHOST_USER MARIADB_MYSQL_LOCALHOST_USER)
localhost_grants=$(setting MYSQL_LOCALHOST_GRANTS MARIADB_MYSQL_LOCALHOST_GRANTS)
skip_tzinfo=$(setting INITDB_SKIP_TZINFO)

if [ -z "$root_password" ] && [ -z "$root_password_hash" ] && [ -z "$allow_empty" ] && [ -z "$random_root" ]; then
    fail "the data directory is empty and no root password option is set: set one of" \
        "MARIADB_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD_HASH, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD," \
        "MARIADB_RANDOM_ROOT_PASSWORD"
fi
[ -n "$root_password" ] && [ -n "$root_password_hash" ] \
    && fail "set MARIADB_ROOT_PASSWORD or MARIADB_ROOT_PASSWORD_HASH, not both"
[ -n "$password" ] && [ -n "$password_hash" ] \
    && fail "set MARIADB_PASSWORD or MARIADB_PASSWORD_HASH, not both"
if [ -n "$user" ]; then
    [ "$user" = root ] && fail "MARIADB_USER=root: root is made already; set MARIADB_ROOT_PASSWORD instead"
    [ -z "$password" ] && [ -z "$password_hash" ] \
        && fail "MARIADB_USER is set but neither MARIADB_PASSWORD nor MARIADB_PASSWORD_HASH is"
elif [ -n "$password" ] || [ -n "$password_hash" ]; then
    warn "MARIADB_PASSWORD is set without MARIADB_USER; no account is made for it"
fi
if [ -n "$random_root" ] && [ -z "$root_password" ] && [ -z "$root_password_hash" ]; then
    root_password=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
    note "GENERATED ROOT PASSWORD: $root_password"
fi

note "initialising the data directory $datadir"
install_log=$(mktemp)
if ! mariadb-install-db --datadir="$datadir" --rpm --skip-test-db \
    --auth-root-authentication-method=normal --skip-name-resolve \
    "${@:2}" >"$install_log" 2>&1; then
    cat "$install_log" >&2
    fail "mariadb-install-db failed"
fi
rm -f "$install_log"

note "starting a temporary server on $socket (no network)"
"$@" --skip-networking --socket="$socket" --skip-slave-start \
    --loose-innodb-buffer-pool-load-at-startup=0 --loose-innodb-buffer-pool-dump-at-shutdown=0 &
temp_pid=$!

client=(mariadb --no-defaults --protocol=socket --socket="$socket" -uroot -hlocalhost)
for ((i = 0; i < 300; i++)); do
    if "${client[@]}" --database=mysql -e 'SELECT 1' >/dev/null 2>&1; then
        break
    fi
    kill -0 "$temp_pid" 2>/dev/null || fail "the temporary server exited during start-up"
    sleep 0.1
done
[ "$i" -lt 300 ] || fail "the temporary server did not answer within 30 s"

if [ -z "$skip_tzinfo" ] && [ -d /usr/share/zoneinfo ] && command -v mariadb-tzinfo-to-sql >/dev/null; then
    note "loading time zone tables"
    {
        echo "SET @@SESSION.SQL_LOG_BIN=0;"
        mariadb-tzinfo-to-sql --skip-write-binlog /usr/share/zoneinfo 2>/dev/null
    } | "${client[@]}" --database=mysql
fi

# The root account(s) and the application account. (The block below runs in a
# subshell: it sets nothing for the rest of the script.)
hc_password=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
{
    echo "SET @@SESSION.SQL_LOG_BIN=0;"
    echo "SET @@SESSION.SQL_MODE=REPLACE(@@SESSION.SQL_MODE,'NO_BACKSLASH_ESCAPES','');"
    # Keep only root@localhost, mariadb.sys (and mysql@localhost when asked for).
    keep="(user = 'root' AND host = 'localhost') OR user = 'mariadb.sys'"
    [ -n "$localhost_user" ] && keep="$keep OR (user = 'mysql' AND host = 'localhost')"
    echo "DELIMITER //"
    echo "BEGIN NOT ATOMIC"
    echo "  FOR account IN (SELECT user, host FROM mysql.global_priv WHERE NOT ($keep)) DO"
    echo "    EXECUTE IMMEDIATE CONCAT('DROP USER ', QUOTE(account.user), '@', QUOTE(account.host));"
    echo "  END FOR;"
    echo "END //"
    echo "DELIMITER ;"

    if [ -n "$root_password_hash" ]; then
        root_auth="IDENTIFIED BY PASSWORD $(sql_string "$root_password_hash")"
    elif [ -n "$root_password" ]; then
        root_auth="IDENTIFIED BY $(sql_string "$root_password")"
    else
        root_auth=""
    fi
    [ -n "$root_auth" ] && echo "ALTER USER 'root'@'localhost' $root_auth;"
    if [ "$root_host" != localhost ]; then
        root_at="'root'@$(sql_string "$root_host")"
        echo "CREATE USER $root_at $root_auth;"
        echo "GRANT ALL ON *.* TO $root_at WITH GRANT OPTION;"
        echo "GRANT PROXY ON ''@'%' TO $root_at WITH GRANT OPTION;"
    fi
    if [ -n "$localhost_user" ]; then
        echo "ALTER USER 'mysql'@'localhost' IDENTIFIED VIA unix_socket;"
        if [ -n "$localhost_grants" ]; then
            echo "GRANT $localhost_grants ON *.* TO 'mysql'@'localhost';"
        fi
    fi

    # For healthcheck.sh: an account that can only connect.
    for hc_host in localhost 127.0.0.1 ::1; do
        echo "CREATE USER 'healthcheck'@'$hc_host' IDENTIFIED BY '$hc_password';"
    done

    if [ -n "$database" ]; then
        echo "CREATE DATABASE IF NOT EXISTS $(sql_ident "$database");"
    fi
    if [ -n "$user" ]; then
        user_at="$(sql_string "$user")@'%'"
        if [ -n "$password_hash" ]; then
            echo "CREATE USER $user_at IDENTIFIED BY PASSWORD $(sql_string "$password_hash");"
        else
            echo "CREATE USER $user_at IDENTIFIED BY $(sql_string "$password");"
        fi
        if [ -n "$database" ]; then
            echo "GRANT ALL ON $(sql_ident "${database//_/\\_}").* TO $user_at;"
        fi
    fi
} | "${client[@]}" --database=mysql || fail "creating the accounts failed"

umask_old=$(umask)
umask 077
cat >"$datadir/.my-healthcheck.cnf" <<EOF
[mariadb-client]
port=3306
socket=$socket
user=healthcheck
password=$hc_password
EOF
umask "$umask_old"

# From here on root needs its password (if it has one).
export MYSQL_PWD=$root_password
[ -n "$root_password_hash" ] && unset MYSQL_PWD
run_sql() { "${client[@]}" "$@"; }

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
        *.sql) note "running $f"; run_sql ${database:+--database="$database"} <"$f" ;;
        *.sql.gz) note "running $f"; gzip -dc "$f" | run_sql ${database:+--database="$database"} ;;
        *.sql.xz) note "running $f"; xz -dc "$f" | run_sql ${database:+--database="$database"} ;;
        *.sql.zst) note "running $f"; zstd -dc "$f" | run_sql ${database:+--database="$database"} ;;
        *) note "ignoring $f" ;;
    esac
done
unset MYSQL_PWD

note "stopping the temporary server"
kill -TERM "$temp_pid"
wait "$temp_pid" || fail "the temporary server did not stop cleanly"

note "initialisation done; starting the server"
exec "$@"
