#!/usr/bin/env bash
# Image-specific steps for the OpenSearch test image (run by
# scripts/build-test-image.sh on the host with ROOTFS set).
#
# The server is OpenSearch's minimal distribution as published on Maven
# Central (org.opensearch.distribution.integ-test-zip:opensearch, a zip): the
# server, its libraries and modules (the netty4 transport among them), no
# bundled JDK and no plugins. It runs on the image's Java 17.
set -euo pipefail
: "${ROOTFS:?}" "${MAVEN_REPO:?}" "${WORK:?}"

VERSION=2.19.1
ARTIFACT=org.opensearch.distribution.integ-test-zip:opensearch:$VERSION:zip
HOME_DIR=/usr/share/opensearch

for tool in mvn unzip; do
    if ! command -v "$tool" >/dev/null; then
        echo "installing ${tool/mvn/maven} on the host" >&2
        apt-get install -y -q --no-install-recommends "${tool/mvn/maven}" >/dev/null
    fi
done

mvn -B -q -Dmaven.repo.local="$MAVEN_REPO" dependency:copy \
    -Dartifact="$ARTIFACT" -DoutputDirectory="$WORK/opensearch-dist" >&2
mkdir -p "$WORK/opensearch-unzip"
unzip -q "$WORK/opensearch-dist/opensearch-$VERSION.zip" -d "$WORK/opensearch-unzip"

# The recipe's rootfs/ put the entrypoint and config/opensearch.yml in place;
# the distribution goes around them.
cp -R --no-clobber "$WORK/opensearch-unzip/opensearch-$VERSION/." "$ROOTFS$HOME_DIR/"
mkdir -p "$ROOTFS$HOME_DIR/data" "$ROOTFS$HOME_DIR/logs" "$ROOTFS$HOME_DIR/plugins"

# The server refuses to run as root: it runs as opensearch (1000:1000), the
# user of the public image, which owns its home (and so a fresh named volume
# on the data directory, which starts as a copy of it).
chroot "$ROOTFS" groupadd --gid 1000 opensearch
chroot "$ROOTFS" useradd --uid 1000 --gid 1000 --home-dir "$HOME_DIR" --no-create-home \
    --shell /bin/bash opensearch
chroot "$ROOTFS" chown -R 1000:1000 "$HOME_DIR"
chmod 755 "$ROOTFS$HOME_DIR/opensearch-docker-entrypoint.sh"

# A fixed path for the JRE, whatever the architecture's directory name.
java_dir=$(cd "$ROOTFS/usr/lib/jvm" && ls -d java-17-openjdk-* | head -n1)
ln -sfn "/usr/lib/jvm/$java_dir" "$ROOTFS/opt/java"

chroot "$ROOTFS" /opt/java/bin/java -version >&2
[ -x "$ROOTFS$HOME_DIR/bin/opensearch" ] || { echo "missing bin/opensearch" >&2; exit 1; }
ls "$ROOTFS$HOME_DIR/modules" | grep -q transport-netty4 || { echo "missing transport-netty4" >&2; exit 1; }
