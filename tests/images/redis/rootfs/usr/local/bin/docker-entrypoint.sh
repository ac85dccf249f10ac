#!/bin/sh
# Entrypoint of devenv's Redis test image.
#
# It is used the way the public `redis` (and `valkey/valkey`) image is: the
# command is `redis-server` with its arguments, or just the arguments when the
# first one is an option (`--requirepass …`) or a `.conf` file; the server
# runs as user redis in /data, the data directory. As in the public image,
# protected mode is off unless a configuration file or an argument turns it
# on, so the server answers through a published port.
set -e

case "$1" in
    -* | *.conf) set -- redis-server "$@" ;;
esac

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    # A data directory made on the host or by another image may belong to root.
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
    case "${2:-}" in
        *.conf) ;;
        *)
            shift
            set -- redis-server --protected-mode no "$@"
            ;;
    esac
fi

umask 0077
exec "$@"
