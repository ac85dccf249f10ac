#!/bin/bash
# Entrypoint of devenv's OpenSearch test image.
#
# It accepts what a user passes to the public `opensearchproject/opensearch`
# (2.x) image, so a catalogue entry written for that image runs unchanged:
#
#   the command `opensearch` (the default), or just options for it;
#   every environment variable whose name looks like a setting
#   (`discovery.type`, `cluster.routing…`, or `processors`) becomes `-Ename=value`;
#   OPENSEARCH_JAVA_OPTS       JVM options (e.g. `-Xms512m -Xmx512m`);
#   DISABLE_SECURITY_PLUGIN, DISABLE_INSTALL_DEMO_CONFIG,
#   DISABLE_PERFORMANCE_ANALYZER_AGENT_CLI
#                              accepted; this image has neither plugin, which
#                              is the same as the security plugin disabled.
#
# The server runs as the image's user (opensearch, 1000), never as root.
set -eo pipefail

export OPENSEARCH_HOME=/usr/share/opensearch
export OPENSEARCH_PATH_CONF=$OPENSEARCH_HOME/config
# cgroup v2 inside a container: read the limits from the container's root.
export OPENSEARCH_JAVA_OPTS="-Dopensearch.cgroups.hierarchy.override=/ ${OPENSEARCH_JAVA_OPTS:-}"

if [ $# -eq 0 ] || [ "${1:0:1}" = '-' ]; then
    set -- opensearch "$@"
fi
[ "$1" = opensearch ] || exec "$@"

if [ "$(id -u)" = 0 ]; then
    echo "opensearch cannot run as root: start the container as user 1000 (the image's default)" >&2
    exit 1
fi
umask 0002

settings=()
while IFS= read -r -d '' entry; do
    key=${entry%%=*}
    value=${entry#*=}
    if [[ "$key" =~ ^[a-z0-9_]+\.[a-z0-9_]+ || "$key" == processors ]] && [ -n "$value" ]; then
        settings+=("-E$key=$value")
    fi
done < <(env -0)

for plugin in opensearch-security opensearch-performance-analyzer; do
    if [ -d "$OPENSEARCH_HOME/plugins/$plugin" ]; then
        echo "this image is not meant to carry $plugin" >&2
        exit 1
    fi
done

exec "$@" "${settings[@]}"
