#!/usr/bin/env bash
# Image-specific steps for the ElasticMQ test image (run by
# scripts/build-test-image.sh on the host with ROOTFS set).
#
# The server is org.elasticmq:elasticmq-server_2.13 from Maven Central with
# its runtime classpath, resolved by Maven into /opt/elasticmq/lib.
set -euo pipefail
: "${ROOTFS:?}" "${MAVEN_REPO:?}" "${WORK:?}"

VERSION=1.6.16

if ! command -v mvn >/dev/null; then
    echo "installing maven on the host" >&2
    apt-get install -y -q --no-install-recommends maven >/dev/null
fi
mkdir -p "$WORK/elasticmq"
cat >"$WORK/elasticmq/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>devenv.test-images</groupId>
  <artifactId>elasticmq-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.elasticmq</groupId>
      <artifactId>elasticmq-server_2.13</artifactId>
      <version>$VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
mvn -B -q -f "$WORK/elasticmq/pom.xml" -Dmaven.repo.local="$MAVEN_REPO" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$ROOTFS/opt/elasticmq/lib" >&2
ls "$ROOTFS/opt/elasticmq/lib/elasticmq-server_2.13-$VERSION.jar" >/dev/null

chmod 644 "$ROOTFS"/opt/elasticmq/lib/*.jar "$ROOTFS/opt/elasticmq.conf" "$ROOTFS/opt/logback.xml"
chmod 755 "$ROOTFS/opt/elasticmq/bin/elasticmq-server"
mkdir -p "$ROOTFS/data"
chroot "$ROOTFS" java -version >&2
