#!/usr/bin/env bash
# Image-specific steps for the moto test image (run by
# scripts/build-test-image.sh on the host with ROOTFS set).
#
# moto's standalone server with only what Secrets Manager and SSM Parameter
# Store need (the `secretsmanager` and `ssm` extras, and Flask for the server),
# as wheels from PyPI for Debian bookworm's CPython 3.11, installed by the
# host's pip into the image's /usr/local (which Debian's python3 reads).
set -euo pipefail
: "${ROOTFS:?}" "${CACHE_DIR:?}" "${WORK:?}"

VERSION=5.2.5
site=$ROOTFS/usr/local/lib/python3.11/dist-packages

pip=(python3 -m pip)
if ! "${pip[@]}" --version >/dev/null 2>&1; then
    echo "installing pip on the host" >&2
    apt-get install -y -q --no-install-recommends python3-pip >/dev/null
fi
platforms=()
for p in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64; do
    platforms+=(--platform "$p")
done
echo "pip install moto[secretsmanager,ssm]==$VERSION into the image" >&2
"${pip[@]}" install --quiet --no-warn-script-location --disable-pip-version-check \
    --cache-dir "$CACHE_DIR/pip" --target "$site" --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
    "moto[secretsmanager,ssm]==$VERSION" flask flask-cors >&2
# Scripts pip wrote name the host's interpreter; the image has its own entrypoint.
rm -rf "$site/bin"
find "$site" -name '__pycache__' -type d -prune -exec rm -rf {} +
chroot "$ROOTFS" python3 -c 'import moto.server, moto.secretsmanager, moto.ssm, flask; print("moto", moto.__version__)' >&2
