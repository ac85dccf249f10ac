#!/bin/bash
# Health check of devenv's MariaDB test image, taking the same common options
# as the public image's healthcheck.sh, e.g.
#   healthcheck.sh --connect --innodb_initialized
#
#   --connect             the server accepts a TCP connection and answers
#   --innodb_initialized  InnoDB is up
#   --su-mysql            accepted (checks already run without root)
#   --defaults-file=F     client option file (default: the datadir's
#                         .my-healthcheck.cnf written on first start)
# With no check named, --connect is done. Exit 0 when every check passes.
set -eo pipefail

datadir=/var/lib/mysql
defaults=""
checks=()
for arg in "$@"; do
    case "$arg" in
        --connect | --innodb_initialized | --innodb-initialized) checks+=("${arg//-/_}") ;;
        --su-mysql | --su=*) ;;
        --defaults-file=*) defaults=${arg#*=} ;;
        --datadir=*) datadir=${arg#*=} ;;
        *) echo "healthcheck.sh: unsupported option $arg" >&2; exit 2 ;;
    esac
done
[ "${#checks[@]}" -gt 0 ] || checks=(__connect)
defaults=${defaults:-$datadir/.my-healthcheck.cnf}
[ -r "$defaults" ] || { echo "healthcheck.sh: cannot read $defaults" >&2; exit 1; }

query() {
    mariadb --defaults-extra-file="$defaults" --protocol=tcp --host=127.0.0.1 \
        --connect-timeout=2 --skip-column-names --batch -e "$1"
}

for check in "${checks[@]}"; do
    case "$check" in
        __connect)
            [ "$(query 'SELECT 1')" = 1 ] || exit 1
            ;;
        __innodb_initialized)
            [ "$(query "SELECT 1 FROM information_schema.ENGINES WHERE engine = 'InnoDB' AND support IN ('YES', 'DEFAULT')")" = 1 ] || exit 1
            ;;
    esac
done
exit 0
