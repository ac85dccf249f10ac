#!/usr/bin/env bash
# Image-specific steps for the Git server test image (run by
# scripts/build-test-image.sh on the host with ROOTFS set).
set -euo pipefail
: "${ROOTFS:?}"

mkdir -p "$ROOTFS/srv/cgi-bin"
# The CGI script serves every repository under /srv/repos (a volume the bench mounts).
cat >"$ROOTFS/srv/cgi-bin/git" <<'CGI'
#!/bin/sh
export GIT_PROJECT_ROOT=/srv/repos
export GIT_HTTP_EXPORT_ALL=1
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'
exec /usr/lib/git-core/git-http-backend
CGI
chmod 755 "$ROOTFS/srv/cgi-bin/git"
for tool in git python3; do
    chroot "$ROOTFS" sh -c "command -v $tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -x "$ROOTFS/usr/lib/git-core/git-http-backend" ] || { echo "missing git-http-backend" >&2; exit 1; }
python3_version=$(chroot "$ROOTFS" python3 -c 'import http.server; print(http.server.CGIHTTPRequestHandler.__name__)')
echo "python3 CGI handler: $python3_version" >&2
