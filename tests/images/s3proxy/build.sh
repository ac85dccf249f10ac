#!/usr/bin/env bash
# Image-specific steps for the S3Proxy test image (run by
# scripts/build-test-image.sh on the host with ROOTFS set).
#
# The server is S3Proxy's self-contained jar from Maven Central
# (org.gaul:s3proxy, classifier jar-with-dependencies), at the path the public
# image keeps it.
set -euo pipefail
: "${ROOTFS:?}" "${MAVEN_REPO:?}" "${WORK:?}"

VERSION=4.0.0
ARTIFACT=org.gaul:s3proxy:$VERSION:jar:jar-with-dependencies

if ! command -v mvn >/dev/null; then
    echo "installing maven on the host" >&2
    apt-get install -y -q --no-install-recommends maven >/dev/null
fi
mvn -B -q -Dmaven.repo.local="$MAVEN_REPO" dependency:copy \
    -Dartifact="$ARTIFACT" -DoutputDirectory="$WORK/s3proxy" >&2
cp "$WORK/s3proxy/s3proxy-$VERSION-jar-with-dependencies.jar" "$ROOTFS/opt/s3proxy/s3proxy"
chmod 644 "$ROOTFS/opt/s3proxy/s3proxy"
chmod 755 "$ROOTFS/opt/s3proxy/run-docker-container.sh"
mkdir -p "$ROOTFS/data"

chroot "$ROOTFS" java -version >&2
