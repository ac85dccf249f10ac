#!/bin/bash
# Starts S3Proxy from the environment, as the public andrewgaul/s3proxy image
# does (the same variables, with the image's defaults):
#
#   S3PROXY_ENDPOINT, S3PROXY_AUTHORIZATION, S3PROXY_IDENTITY,
#   S3PROXY_CREDENTIAL, S3PROXY_VIRTUALHOST, S3PROXY_CORS_ALLOW_ALL,
#   S3PROXY_IGNORE_UNKNOWN_HEADERS … (S3PROXY_X is the property s3proxy.x,
#   with `_` written as `-`), JCLOUDS_PROVIDER, JCLOUDS_IDENTITY,
#   JCLOUDS_CREDENTIAL, JCLOUDS_ENDPOINT, JCLOUDS_REGION,
#   JCLOUDS_FILESYSTEM_BASEDIR (jclouds.x, `_` as `.` for the last one);
#   S3PROXY_JAVA_OPTS  JVM options; LOG_LEVEL  the log level.
#
# A secret variable may come from a file named by X_FILE. The settings go to
# java in a properties file readable only by this process's user, so no
# credential shows on the command line.
set -euo pipefail

for var in S3PROXY_IDENTITY S3PROXY_CREDENTIAL JCLOUDS_IDENTITY JCLOUDS_CREDENTIAL; do
    file_var=${var}_FILE
    if [ -n "${!file_var:-}" ]; then
        export "$var=$(<"${!file_var}")"
    fi
done

mkdir -p "${JCLOUDS_FILESYSTEM_BASEDIR:-/data}"

properties=$(umask 077 && mktemp /tmp/s3proxy.XXXXXX.properties)
while IFS= read -r -d '' entry; do
    key=${entry%%=*}
    value=${entry#*=}
    [ -n "$value" ] || continue
    case "$key" in
        S3PROXY_JAVA_OPTS | *_FILE) continue ;;
        JCLOUDS_FILESYSTEM_BASEDIR) name=jclouds.filesystem.basedir ;;
        S3PROXY_VIRTUALHOST) name=s3proxy.virtual-host ;;
        S3PROXY_*) name=s3proxy.$(tr 'A-Z_' 'a-z-' <<<"${key#S3PROXY_}") ;;
        JCLOUDS_*) name=jclouds.$(tr 'A-Z_' 'a-z-' <<<"${key#JCLOUDS_}") ;;
        *) continue ;;
    esac
    # Properties syntax: backslashes and line breaks escaped.
    value=${value//\\/\\\\}
    value=${value//$'\n'/\\n}
    printf '%s=%s\n' "$name" "$value" >>"$properties"
done < <(env -0)

# shellcheck disable=SC2086 # S3PROXY_JAVA_OPTS is a list of options
exec java ${S3PROXY_JAVA_OPTS:-} -DLOG_LEVEL="${LOG_LEVEL:-info}" \
    -jar /opt/s3proxy/s3proxy --properties "$properties"
