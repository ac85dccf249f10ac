#!/usr/bin/env bash
# Image-specific steps for the PostgreSQL test image (run by
# scripts/build-test-image.sh on the host with ROOTFS set).
set -euo pipefail
: "${ROOTFS:?}"

# The package's maintainer script made a cluster (15/main) with its own
# configuration; the entrypoint makes the data directory from the environment
# on first start instead.
rm -rf "$ROOTFS/var/lib/postgresql/15" "$ROOTFS/etc/postgresql/15"
mkdir -p "$ROOTFS/var/lib/postgresql/data" "$ROOTFS/var/run/postgresql" "$ROOTFS/docker-entrypoint-initdb.d"
chroot "$ROOTFS" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
chmod 2777 "$ROOTFS/var/run/postgresql"
chmod 700 "$ROOTFS/var/lib/postgresql/data"
chmod 755 "$ROOTFS/usr/local/bin/docker-entrypoint.sh"

for tool in initdb pg_ctl postgres; do
    [ -x "$ROOTFS/usr/lib/postgresql/15/bin/$tool" ] || { echo "missing $tool" >&2; exit 1; }
done
for tool in psql setpriv; do
    chroot "$ROOTFS" sh -c "command -v $tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
chroot "$ROOTFS" /usr/lib/postgresql/15/bin/postgres --version >&2
