#!/usr/bin/env bash
# Image-specific steps for the MariaDB test image (run by
# scripts/build-test-image.sh on the host with ROOTFS set).
set -euo pipefail
: "${ROOTFS:?}"

# The package's maintainer script initialised a data directory at install time.
# The entrypoint builds it on first start from the environment instead (and a
# named volume mounted at /var/lib/mysql starts as a copy of this, empty, dir).
rm -rf "$ROOTFS/var/lib/mysql"
mkdir -p "$ROOTFS/var/lib/mysql" "$ROOTFS/run/mysqld" "$ROOTFS/docker-entrypoint-initdb.d"
chroot "$ROOTFS" chown mysql:mysql /var/lib/mysql /run/mysqld
# Sticky and world-writable, so the server can also run under `docker run --user`.
chmod 1777 "$ROOTFS/run/mysqld"
chmod 755 "$ROOTFS/var/lib/mysql"
chmod 755 "$ROOTFS/usr/local/bin/docker-entrypoint.sh" "$ROOTFS/usr/local/bin/healthcheck.sh"
chmod 644 "$ROOTFS/etc/mysql/mariadb.conf.d/99-container.cnf"

# Sanity: the server and the tools the entrypoint needs are there.
for tool in mariadbd mariadb mariadb-admin mariadb-install-db setpriv base64; do
    chroot "$ROOTFS" sh -c "command -v $tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
chroot "$ROOTFS" mariadbd --version >&2
