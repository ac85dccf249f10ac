#!/usr/bin/env bash
# Image-specific steps for the Redis test image (run by
# scripts/build-test-image.sh on the host with ROOTFS set).
set -euo pipefail
: "${ROOTFS:?}"

mkdir -p "$ROOTFS/data"
chroot "$ROOTFS" chown redis:redis /data
chmod 755 "$ROOTFS/data" "$ROOTFS/usr/local/bin/docker-entrypoint.sh"
# Debian's service configuration is not used: the server runs with the
# arguments it is given, as in the public image.
rm -rf "$ROOTFS/etc/redis"

for tool in redis-server redis-cli setpriv; do
    chroot "$ROOTFS" sh -c "command -v $tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
chroot "$ROOTFS" redis-server --version >&2
