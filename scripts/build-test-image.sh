#!/usr/bin/env bash
# Build the local test image NAME from the recipe in tests/images/NAME/ and
# print its reference (and nothing else) on stdout. Progress goes to stderr.
#
#   scripts/build-test-image.sh mariadb    # -> devenv-test/mariadb:0123456789ab
#
# No image registry is reachable from the machines this project is tested on,
# so test images are made from Debian packages: a Debian bookworm "minbase"
# root filesystem, the recipe's packages installed into it with apt-get in a
# chroot, the recipe's files copied over it, then `docker import`.
#
# The tag is the first 12 hex digits of a SHA-256 over the recipe's files
# (paths and contents) and this script, so an unchanged recipe is never built
# twice: when `docker image inspect` finds the tag, it is printed at once.
#
# Recipe layout (tests/images/NAME/):
#   packages   Debian packages to install, whitespace separated, '#' comments.
#   rootfs/    optional; copied over the root filesystem (modes kept, owned by root).
#   build.sh   optional; run with bash on the host after the packages and
#              rootfs/ are in place, with ROOTFS (the root filesystem),
#              RECIPE (the recipe directory), CACHE_DIR (a directory for
#              downloads kept between builds), MAVEN_REPO (the Maven
#              repository under CACHE_DIR, for `mvn -Dmaven.repo.local=`),
#              WORK (a scratch directory) and MIRROR in its environment.
#              It may use `chroot "$ROOTFS" …` (/proc is mounted there).
#   changes    Dockerfile instructions for `docker import --change`, one a line
#              (ENTRYPOINT, CMD, ENV, EXPOSE, VOLUME, USER, WORKDIR, LABEL).
#
# Caches (under ${DEVENV_CACHE_DIR:-$HOME/.cache/devenv}/images/):
#   base-<suite>-minbase-<key>.tar  the debootstrapped base, keyed by its
#                                   suite and package list;
#   packages-<suite>-<key>.tar      the base with a recipe's packages installed,
#                                   keyed by the base and the sorted package list
#                                   (recipes with the same packages share it);
#   debs/                           downloaded .deb files, shared by all builds;
#   m2/                             the Maven repository of build.sh downloads.
# Extracting the cached base and installing with apt-get is several times
# faster than a debootstrap with --include= for every image.
#
# Environment:
#   DEVENV_CACHE_DIR      cache root (default $HOME/.cache/devenv)
#   DEVENV_DEBIAN_MIRROR  Debian mirror URI (default: the one the host's apt uses)
#   DEVENV_KEEP_OLD_IMAGES=1  keep older tags of the same image (default: removed)
#
# Needs root (debootstrap, chroot) and a Docker engine; when either docker or
# debootstrap is missing it runs scripts/ensure-docker.sh first.
set -euo pipefail

SUITE=bookworm
# Extra packages of the shared base (part of its cache key).
BASE_PACKAGES=""
# Bump to rebuild the cached base when the way it is made changes.
BASE_FORMAT=1
# Bump to rebuild the cached package layers when the way they are made changes.
PACKAGES_FORMAT=1

name=${1:-}
if [ -z "$name" ] || [ "$#" -ne 1 ] || [[ "$name" == -* ]]; then
    echo "usage: $0 NAME   (builds tests/images/NAME/)" >&2
    exit 2
fi

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script_path")/.." && pwd)
recipe=$repo/tests/images/$name
repository=devenv-test/$name

log() { printf '[%3ds] build-test-image %s: %s\n' "$SECONDS" "$name" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$name" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die "invalid image name '$name'"
[ -d "$recipe" ] || die "no recipe directory $recipe"
[ -f "$recipe/packages" ] || [ -d "$recipe/rootfs" ] || [ -f "$recipe/build.sh" ] \
    || die "$recipe has none of packages, rootfs/, build.sh"

# --- content key: recipe files (relative paths + contents) and this script ----
recipe_key() {
    {
        (cd "$recipe" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
        printf 'script %s\n' "$(sha256sum <"$script_path" | cut -d' ' -f1)"
    } | sha256sum | cut -c1-12
}
key=$(recipe_key)
tag=$repository:$key

if docker image inspect "$tag" >/dev/null 2>&1; then
    printf '%s\n' "$tag"
    exit 0
fi

# --- prerequisites ---------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=DEVENV_CACHE_DIR,DEVENV_DEBIAN_MIRROR,DEVENV_KEEP_OLD_IMAGES \
            env "DEVENV_CACHE_DIR=${DEVENV_CACHE_DIR:-${HOME:-/root}/.cache/devenv}" "$script_path" "$name"
    fi
    die "building test images needs root (debootstrap, chroot)"
fi
if ! command -v debootstrap >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    log "docker or debootstrap missing; running scripts/ensure-docker.sh"
    "$repo/scripts/ensure-docker.sh" </dev/null >&2 || die "scripts/ensure-docker.sh failed"
fi

cache_root=${DEVENV_CACHE_DIR:-${HOME:-/root}/.cache/devenv}/images
deb_cache=$cache_root/debs
mkdir -p "$cache_root" "$deb_cache"
cache_root=$(readlink -f "$cache_root")
deb_cache=$(readlink -f "$deb_cache")

# One build per image at a time; a concurrent caller waits, then finds the tag.
exec 8>"$cache_root/$name.lock"
if ! flock -n 8; then
    log "another build of $name is running; waiting for it"
    flock 8
fi
if docker image inspect "$tag" >/dev/null 2>&1; then
    printf '%s\n' "$tag"
    exit 0
fi
log "building $tag"

# Work directories left by a build that was killed (the lock says none runs).
for stale in "$cache_root/build-$name".*; do
    [ -d "$stale" ] || continue
    if mountpoint -q "$stale/rootfs/proc" 2>/dev/null; then
        umount "$stale/rootfs/proc" 2>/dev/null || umount -l "$stale/rootfs/proc" || true
    fi
    (setsid rm -rf --one-file-system "$stale" </dev/null >/dev/null 2>&1 &)
done

# --- Debian mirror: the one the host's apt is set up with ----------------------
detect_mirror() {
    if [ -n "${DEVENV_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "$DEVENV_DEBIAN_MIRROR"
        return
    fi
    local f uri=""
    # deb822 .sources files: the URIs of a stanza whose Suites has "$SUITE".
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") && uris != "" && found == "")
                    found = uris
                types = ""; suites = ""; uris = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"  { $1 = ""; types = $0 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            tolower($1) == "uris:"   { uris = $2 }
            END { flush(); if (found != "") print found }
        ' "$f")
        [ -n "$uri" ] && break
    done
    # One-line format: deb [options] URI SUITE COMPONENTS…
    if [ -z "$uri" ]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }')
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}
mirror=$(detect_mirror)
mirror=${mirror%/}

# --- work area and cleanup -----------------------------------------------------------
work=$(mktemp -d "$cache_root/build-$name.XXXXXX")
rootfs=$work/rootfs
cleanup() {
    local rc=$?
    exec 7>&- 8>&- 9>&- # let a waiting build go on while this one removes its tree
    if [ -n "${rootfs:-}" ] && mountpoint -q "$rootfs/proc" 2>/dev/null; then
        umount "$rootfs/proc" 2>/dev/null || umount -l "$rootfs/proc" || true
    fi
    # --one-file-system: never descend into anything still mounted. Deleting
    # a few hundred MB can take many seconds on a disk mounted with `discard`,
    # so it runs detached and the caller gets the image reference at once
    # (a tree left behind by an interrupted removal is swept by the next build).
    if [ -n "${work:-}" ] && [ -d "$work" ]; then
        (setsid rm -rf --one-file-system "$work" </dev/null >/dev/null 2>&1 &)
    fi
    if [ "$rc" -ne 0 ]; then
        log "failed (exit $rc)"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- base root filesystem, cached -------------------------------------------------
base_key=$(printf 'suite=%s variant=minbase include=%s format=%s\n' \
    "$SUITE" "$BASE_PACKAGES" "$BASE_FORMAT" | sha256sum | cut -c1-12)
base_tar=$cache_root/base-$SUITE-minbase-$base_key.tar

build_base() {
    local dir=$work/base
    log "debootstrap $SUITE (minbase) from $mirror"
    local include=()
    [ -n "$BASE_PACKAGES" ] && include=(--include="${BASE_PACKAGES// /,}")
    if ! debootstrap --variant=minbase "${include[@]}" --cache-dir="$deb_cache" \
        "$SUITE" "$dir" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        [ -f "$dir/debootstrap/debootstrap.log" ] && tail -n 30 "$dir/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    # Nothing of the build host belongs in the cached base.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
    mkdir -p "$dir/var/lib/apt/lists/partial"
    : >"$dir/etc/resolv.conf"
    tar -C "$dir" --numeric-owner --xattrs -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
    rm -rf --one-file-system "$dir"
    log "cached base $(basename "$base_tar")"
}

if [ ! -f "$base_tar" ]; then
    exec 9>"$cache_root/base.lock"
    flock 9
    [ -f "$base_tar" ] || build_base
    flock -u 9
fi

# --- the image's root filesystem -------------------------------------------------------
# The recipe's packages on top of the base are cached as a tar of their own, keyed
# by the base and the sorted package list, so recipes that install the same
# packages (the Java servers all need only a JRE) run apt-get once between them.
packages=""
if [ -f "$recipe/packages" ]; then
    packages=$(sed -e 's/#.*//' "$recipe/packages" | tr -s ' \t\n' '\n' | sed -e '/^$/d' | LC_ALL=C sort -u | tr '\n' ' ')
    packages=${packages% }
fi
packages_key=$(printf 'base=%s packages=%s format=%s\n' "$base_key" "$packages" "$PACKAGES_FORMAT" \
    | sha256sum | cut -c1-12)
packages_tar=$cache_root/packages-$SUITE-$packages_key.tar

# Hand .deb files from one directory to another: hard links when possible.
link_debs() {
    find "$1" -maxdepth 1 -name '*.deb' -exec cp -l -n -t "$2/" {} + 2>/dev/null \
        || find "$1" -maxdepth 1 -name '*.deb' -exec cp -n -t "$2/" {} + 2>/dev/null || true
}

# The base, made ready for apt-get, with the packages installed.
build_packages_layer() {
    mkdir -p "$rootfs"
    tar -C "$rootfs" --numeric-owner --xattrs -xf "$base_tar"
    log "extracted base"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf" 2>/dev/null || true
    printf 'deb %s %s main\n' "$mirror" "$SUITE" >"$rootfs/etc/apt/sources.list"
    # Package scripts must not start services inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    # Leave documentation out of the image as dpkg unpacks (smaller, faster).
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90-devenv-nodoc" <<'NODOC'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/linda/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
NODOC
    # No fsync while unpacking: the tree is thrown away if the build fails.
    echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/90-devenv-unsafe-io"
    cat >"$rootfs/etc/apt/apt.conf.d/90-devenv" <<'APTCONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APTCONF
    [ -n "$packages" ] || return 0
    mount -t proc proc "$rootfs/proc"
    # Hard links (same file system) hand the shared .deb cache to apt and back.
    link_debs "$deb_cache" "$rootfs/var/cache/apt/archives"
    log "apt-get update"
    chroot "$rootfs" apt-get update -qq >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get update failed"; }
    log "apt-get install $packages"
    # shellcheck disable=SC2086 # word splitting of the package list is wanted
    if ! chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
        apt-get install -y -q -o Dpkg::Use-Pty=0 $packages >>"$work/apt.log" 2>&1; then
        tail -n 40 "$work/apt.log" >&2
        die "apt-get install failed"
    fi
    link_debs "$rootfs/var/cache/apt/archives" "$deb_cache"
    umount "$rootfs/proc"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    mkdir -p "$rootfs/var/lib/apt/lists/partial"
    tar -C "$rootfs" --numeric-owner --xattrs -cf "$packages_tar.tmp" .
    mv "$packages_tar.tmp" "$packages_tar"
    log "cached the packages as $(basename "$packages_tar")"
}

exec 7>"$cache_root/packages-$packages_key.lock"
flock 7
if [ -n "$packages" ] && [ -f "$packages_tar" ]; then
    flock -u 7
    mkdir -p "$rootfs"
    tar -C "$rootfs" --numeric-owner --xattrs -xf "$packages_tar"
    log "extracted the cached packages ($packages)"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf" 2>/dev/null || true
else
    build_packages_layer
    flock -u 7
fi
exec 7>&-
mount -t proc proc "$rootfs/proc"

if [ -d "$recipe/rootfs" ]; then
    cp -R --preserve=mode,timestamps "$recipe/rootfs/." "$rootfs/"
fi
if [ -f "$recipe/build.sh" ]; then
    log "running build.sh"
    ROOTFS=$rootfs RECIPE=$recipe CACHE_DIR=$cache_root MIRROR=$mirror WORK=$work \
        MAVEN_REPO=$cache_root/m2 bash "$recipe/build.sh" >&2 || die "build.sh failed"
fi

umount "$rootfs/proc"

# --- trim ---------------------------------------------------------------------------------
rm -f "$rootfs/usr/sbin/policy-rc.d" "$rootfs/etc/dpkg/dpkg.cfg.d/90-devenv-unsafe-io"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/archives/partial/* \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian \
    "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.cache
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
find "$rootfs/var/log" -type f -exec truncate -s 0 {} +
: >"$rootfs/etc/resolv.conf"
mkdir -p "$rootfs/var/lib/apt/lists/partial"
log "root filesystem ready ($(du -xsh "$rootfs" | cut -f1))"

# --- import -------------------------------------------------------------------------------
changes=()
if [ -f "$recipe/changes" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line#"${line%%[![:space:]]*}"}
        [ -z "$line" ] || [[ "$line" == \#* ]] && continue
        changes+=(--change "$line")
    done <"$recipe/changes"
fi
changes+=(--change "LABEL org.opencontainers.image.title=$repository devenv.test-image.key=$key")

log "docker import"
tar -C "$rootfs" --numeric-owner --xattrs -cf - . \
    | docker import "${changes[@]}" --message "devenv test image $name ($key)" - "$tag" >/dev/null \
    || die "docker import failed"

if [ "${DEVENV_KEEP_OLD_IMAGES:-0}" != 1 ]; then
    docker image ls "$repository" --format '{{.Repository}}:{{.Tag}}' \
        | grep -vxF "$tag" | xargs -r docker image rm >/dev/null 2>&1 || true
fi

log "built $tag"
printf '%s\n' "$tag"
