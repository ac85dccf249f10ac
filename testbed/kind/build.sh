#!/usr/bin/env bash
# Builds the kind test bed of devenv, offline, from Debian packages and Go modules:
#
#   - a kind node image, devenv-test/kind-node:<KEY>, laid out as kind v0.33's node images
#     are (kind's own base files, read from the sigs.k8s.io/kind module): Debian bookworm
#     with systemd and containerd, kubelet/kubeadm/kubectl/kube-proxy of the sim's
#     Kubernetes pin, and preloaded images (imported into containerd by a unit before
#     kubelet): the control-plane images kubeadm asks for, local-path-provisioner, busybox
#     and the three Flux controllers, plus the test bed's own adaptations (node/: sysctl
#     shadowing, cgroups read-write, /dev/kmsg, a bridge CNI config);
#   - images of the Flux controllers and the registry made from the sim build's static
#     binaries, tagged with their upstream names (ghcr.io/fluxcd/<name>:<pin>, registry:3),
#     in the host's Docker (for `kind load docker-image`); the Flux ones are also those
#     the node preloads, so flux/install/flux.yaml starts without any registry;
#   - the kind CLI and a host kubectl.
#
# Output (progress on stderr; on stdout only KEY=value lines, for `eval "$(build.sh)"`):
#   DEVENV_KIND_NODE_IMAGE   devenv-test/kind-node:<KEY>
#   DEVENV_KIND_BIN          the kind binary
#   DEVENV_KIND_KUBECTL      a kubectl of the cluster's version
#   DEVENV_KIND_DOCKER_WRAPPER_DIR  the directory to put first on kind's PATH
#   DEVENV_KIND_CONFIG       the cluster config (testbed/kind/kind-config.yaml)
#   DEVENV_KIND_FLUX_IMAGES  the Flux controller images (space separated; preloaded in the node)
#   DEVENV_KIND_REGISTRY_IMAGE  registry:3
#   DEVENV_KIND_BUSYBOX_IMAGE   a busybox image preloaded in the node (for test pods)
#   DEVENV_KIND_KUBERNETES_VERSION, DEVENV_KIND_CACHE_DIR, DEVENV_KIND_KEY
#
# Everything lands in ${DEVENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devenv}/kind/<KEY>/
# (bin/, images/, logs/, build-info.json). KEY is the first 12 hex digits of a sha256 over
# this script, versions.env, node/ and sim/versions.env. Each step keeps its result, so an
# interrupted build resumes; a complete one is instant. The Debian root file systems go to
# kind/rootfs-<key of the suite and package lists>/, shared by builds of other KEYs.
#
# Usage: build.sh [--print-dir] [--help]
#
# Environment: DEVENV_CACHE_DIR (cache root), DEVENV_DEBIAN_MIRROR and
# DEVENV_DEBIAN_SECURITY_MIRROR (default: the host's apt sources), DEVENV_DOCKER_WAIT
# (seconds to wait for the engine, default 900), DEVENV_KEEP_OLD_IMAGES=1 (keep the node
# images and cache directories of older recipes; by default a successful build removes them).
#
# Needs root (debootstrap, chroot), a Docker engine that answers `docker info` (this
# script waits for one; it never starts or reconfigures dockerd), go, gcc (static libc),
# debootstrap, flock. The Kubernetes binaries reuse the sim build's module graph and Go
# caches (sim/build.sh is run first; it waits for a build of the same pins in progress).
set -euo pipefail

TAG="[kind testbed]"
say() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s error: %s\n' "$TAG" "$*" >&2; exit 1; }

print_dir=0
for arg in "$@"; do
  case "$arg" in
    --print-dir) print_dir=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
SIM_VERSIONS=$REPO/sim/versions.env
[[ -r "$SIM_VERSIONS" ]] || die "cannot read $SIM_VERSIONS"

# ---------------------------------------------------------------------------
# Pins (KEY=value lines, parsed, not executed)
# ---------------------------------------------------------------------------
declare -A PIN=()
read_pins() {
  local file=$1 line n=0
  while IFS= read -r line || [[ -n "$line" ]]; do
    n=$((n + 1))
    line=${line%$'\r'}
    [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]] && continue
    [[ "$line" =~ ^[[:space:]]*([A-Z][A-Z0-9_]*)=([A-Za-z0-9._+-]+)[[:space:]]*$ ]] \
      || die "$file:$n: expected KEY=value, got: $line"
    PIN[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
  done <"$file"
}
read_pins "$SIM_VERSIONS"
read_pins "$HERE/versions.env"
for k in KUBERNETES_VERSION ETCD_VERSION SOURCE_CONTROLLER_VERSION KUSTOMIZE_CONTROLLER_VERSION \
         HELM_CONTROLLER_VERSION REGISTRY_VERSION KIND_VERSION CRICTL_VERSION COREDNS_VERSION DEBIAN_SUITE \
         LOCAL_PATH_PROVISIONER_VERSION; do
  [[ -n "${PIN[$k]:-}" ]] || die "missing pin $k (sim/versions.env or testbed/kind/versions.env)"
done
K8S_VERSION=${PIN[KUBERNETES_VERSION]}
[[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "KUBERNETES_VERSION must look like v1.MINOR.PATCH"
K8S_MINOR=${BASH_REMATCH[1]}
K8S_STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
SUITE=${PIN[DEBIAN_SUITE]}

recipe_key() {
  {
    (cd "$HERE" && find build.sh versions.env node -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    printf 'sim/versions.env %s\n' "$(sha256sum <"$SIM_VERSIONS" | cut -d' ' -f1)"
  } | sha256sum | cut -c1-12
}
KEY=$(recipe_key)
CACHE_ROOT=${DEVENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devenv}
KROOT=$CACHE_ROOT/kind
OUT=$KROOT/$KEY
SIM_KEY=$(sha256sum <"$SIM_VERSIONS" | cut -c1-12)
SIM_BIN=$CACHE_ROOT/sim/$SIM_KEY/bin

if (( print_dir )); then printf '%s\n' "$OUT"; exit 0; fi

NODE_IMAGE=devenv-test/kind-node:$KEY
NODE_ROOTFS_IMAGE=devenv-test/kind-node-rootfs:$KEY
BUSYBOX_IMAGE=devenv-test/kind-busybox:$KEY
REGISTRY_IMAGE=registry:3
LOCAL_PATH_IMAGE=docker.io/rancher/local-path-provisioner:${PIN[LOCAL_PATH_PROVISIONER_VERSION]}
FLUX_NAMES=(source-controller kustomize-controller helm-controller)
flux_image() {
  case $1 in
    source-controller) echo "ghcr.io/fluxcd/source-controller:${PIN[SOURCE_CONTROLLER_VERSION]}" ;;
    kustomize-controller) echo "ghcr.io/fluxcd/kustomize-controller:${PIN[KUSTOMIZE_CONTROLLER_VERSION]}" ;;
    helm-controller) echo "ghcr.io/fluxcd/helm-controller:${PIN[HELM_CONTROLLER_VERSION]}" ;;
  esac
}
FLUX_IMAGES=$(for n in "${FLUX_NAMES[@]}"; do flux_image "$n"; done | tr '\n' ' ')
FLUX_IMAGES=${FLUX_IMAGES% }
LABEL_KEY=devenv.testbed.key

print_env() {
  printf 'DEVENV_KIND_KEY=%q\n' "$KEY"
  printf 'DEVENV_KIND_CACHE_DIR=%q\n' "$OUT"
  printf 'DEVENV_KIND_NODE_IMAGE=%q\n' "$NODE_IMAGE"
  printf 'DEVENV_KIND_BIN=%q\n' "$OUT/bin/kind"
  printf 'DEVENV_KIND_KUBECTL=%q\n' "$OUT/bin/kubectl"
  printf 'DEVENV_KIND_DOCKER_WRAPPER_DIR=%q\n' "$HERE/docker-wrapper"
  printf 'DEVENV_KIND_CONFIG=%q\n' "$HERE/kind-config.yaml"
  printf 'DEVENV_KIND_KUBERNETES_VERSION=%q\n' "$K8S_VERSION"
  printf 'DEVENV_KIND_FLUX_IMAGES=%q\n' "$FLUX_IMAGES"
  printf 'DEVENV_KIND_REGISTRY_IMAGE=%q\n' "$REGISTRY_IMAGE"
  printf 'DEVENV_KIND_BUSYBOX_IMAGE=%q\n' "$BUSYBOX_IMAGE"
}

# An image of this build: present and labelled with this KEY.
image_ok() {
  [[ "$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$1" 2>/dev/null)" == "$KEY" ]]
}

is_complete() {
  [[ -f "$OUT/build-info.json" && -x "$OUT/bin/kind" && -x "$OUT/bin/kubectl" ]] || return 1
  local n
  image_ok "$NODE_IMAGE" && image_ok "$REGISTRY_IMAGE" || return 1
  for n in "${FLUX_NAMES[@]}"; do image_ok "$(flux_image "$n")" || return 1; done
}

# ---------------------------------------------------------------------------
# Docker: wait for an engine someone else starts; never start or configure one here.
# ---------------------------------------------------------------------------
command -v docker >/dev/null 2>&1 || die "docker is not installed (scripts/ensure-docker.sh installs and starts it)"
if ! docker info >/dev/null 2>&1; then
  say "waiting for the Docker engine to answer (this script does not start it; scripts/ensure-docker.sh does)"
  waited=0
  until docker info >/dev/null 2>&1; do
    (( waited >= ${DEVENV_DOCKER_WAIT:-900} )) && die "no Docker engine after ${waited}s"
    sleep 5
    waited=$((waited + 5))
    (( waited % 30 == 0 )) && say "      … still waiting for docker (${waited}s)"
  done
fi

if is_complete; then
  say "up to date: $NODE_IMAGE ($OUT)"
  print_env
  exit 0
fi

[[ "$(id -u)" == 0 ]] || die "building the node image needs root (debootstrap, chroot)"
for tool in go gcc debootstrap flock tar sha256sum chroot; do
  command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found"
done

# ---------------------------------------------------------------------------
# Lock
# ---------------------------------------------------------------------------
mkdir -p "$KROOT"
exec 9>"$KROOT/.lock-$KEY"
if ! flock -n 9; then
  say "another build of $KEY is running; waiting for it"
  waited=0
  until flock -w 30 9; do
    waited=$((waited + 30))
    say "      … still waiting for the other build (${waited}s)"
  done
fi
if is_complete; then
  say "up to date (built by another process): $NODE_IMAGE"
  print_env
  exit 0
fi

LOGS=$OUT/logs
STAMPS=$OUT/.stamps
mkdir -p "$OUT/bin" "$OUT/images" "$LOGS" "$STAMPS" "$OUT/tmp"
rm -rf "$OUT/tmp"/* 2>/dev/null || true
rm -f "$OUT/build-info.json"
WORK=$OUT/tmp

# ---------------------------------------------------------------------------
# Steps: each runs in the background (own process group) with its output in
# logs/NAME.log, a heartbeat every 30 s, and a stamp when it succeeds.
# ---------------------------------------------------------------------------
declare -A PIDS=() LABELS=() STARTS=() STEP_SECONDS=()
T0=$SECONDS
BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)

unmount_under() {
  local m
  for m in $(awk -v p="$1" '$2 ~ "^"p { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

on_exit() {
  local rc=$? name pid
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  unmount_under "$WORK/"
  if (( rc != 0 )); then
    local what="build failed"
    (( rc == 130 || rc == 143 )) && what="build interrupted"
    printf '%s %s after %ds; logs in %s (finished steps are kept: a rerun resumes)\n' \
      "$TAG" "$what" "$((SECONDS - T0))" "$LOGS" >&2
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_step() {
  local name=$1 label=$2; shift 2
  LABELS[$name]=$label
  if [[ -e "$STAMPS/$name" ]]; then
    say "$label … cached"
    return 0
  fi
  say "$label …"
  STARTS[$name]=$SECONDS
  set -m
  ( set -euo pipefail; "$@" ) >"$LOGS/$name.log" 2>&1 &
  PIDS[$name]=$!
  set +m
}

wait_step() {
  local name=$1 rc=0 last=$SECONDS
  [[ -n "${PIDS[$name]:-}" ]] || return 0
  local pid=${PIDS[$name]} label=${LABELS[$name]} start=${STARTS[$name]}
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS - last >= 30 )); then
      last=$SECONDS
      say "      … $label: $((SECONDS - start))s, $(wc -l <"$LOGS/$name.log" | tr -d ' ') log lines ($LOGS/$name.log)"
    fi
  done
  wait "$pid" || rc=$?
  unset "PIDS[$name]"
  STEP_SECONDS[$name]=$((SECONDS - start))
  if (( rc != 0 )); then
    printf '%s %s FAILED after %ds (exit %d); last lines of %s:\n' "$TAG" "$label" \
      "$((SECONDS - start))" "$rc" "$LOGS/$name.log" >&2
    tail -n 30 "$LOGS/$name.log" | sed 's/^/    /' >&2
    exit 1
  fi
  touch "$STAMPS/$name"
  say "$label … ${STEP_SECONDS[$name]}s (total $((SECONDS - T0))s)"
}

run_step() { start_step "$@"; wait_step "$1"; }

# ---------------------------------------------------------------------------
# Go helpers (the sim build's conventions: static, -trimpath, wrapper modules that
# carry the upstream remote replace directives)
# ---------------------------------------------------------------------------
export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on CGO_ENABLED=0
unset GOOS GOARCH
GO_VERSION=$(go env GOVERSION)
GO_LINE=${GO_VERSION#go}
GO_LINE=${GO_LINE%%[!0-9.]*}
GOFLAGS_BUILD="-trimpath -mod=mod -buildvcs=false"

mod_field() {
  local json
  json=$(cd "$WORK" && GOFLAGS=-mod=mod go mod download -json "$1" 2>&1) || { printf '%s\n' "$json" >&2; echo "cannot download $1" >&2; return 1; }
  printf '%s\n' "$json" | sed -n "s/^[[:space:]]*\"$2\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" | head -n1
}

gomod_replaces() {
  awk '
    function out(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); gsub(/[ \t]+/, " ", s); if (s ~ / => /) print s }
    { sub(/\/\/.*/, "") }
    /^[ \t]*replace[ \t]*\([ \t]*$/ { inblk = 1; next }
    inblk && /^[ \t]*\)/ { inblk = 0; next }
    inblk { out($0); next }
    /^[ \t]*replace[ \t]/ { sub(/^[ \t]*replace[ \t]+/, ""); out($0) }
  ' "$1"
}
remote_replaces() { awk '{ for (i = 1; i < NF; i++) if ($i == "=>") t = $(i + 1); if (t !~ /^(\.|\/)/) print }'; }
local_replaces()  { awk '{ for (i = 1; i < NF; i++) if ($i == "=>") t = $(i + 1); if (t ~ /^(\.|\/)/) print }'; }

# write_wrapper DIR MODULE VERSION NAME [REPLACE-LINES]
write_wrapper() {
  local dir=$1 mod=$2 ver=$3 name=$4 replaces=${5:-}
  mkdir -p "$dir"
  {
    printf 'module devenv.local/%s\n\n' "$name"
    printf 'go %s\n\n' "$GO_LINE"
    printf 'require %s %s\n' "$mod" "$ver"
    if [[ -n "$replaces" ]]; then
      printf '\nreplace (\n'
      printf '%s\n' "$replaces" | sed '/^$/d; s/^/\t/'
      printf ')\n'
    fi
  } >"$dir/go.mod"
  echo "== $dir/go.mod"; cat "$dir/go.mod"
}

# go_build DIR OUTDIR LDFLAGS PKG...
go_build() {
  local dir=$1 outdir=$2 ldflags=$3; shift 3
  mkdir -p "$outdir"
  echo "== go build ($dir): $*"
  (cd "$dir" && GOFLAGS="$GOFLAGS_BUILD" nice -n 10 go build -v -ldflags "$ldflags" -o "$outdir/" "$@")
}

# build_module_binary NAME MODULE VERSION PKG [LDFLAGS]: into bin/NAME
build_module_binary() {
  local name=$1 mod=$2 ver=$3 pkg=$4 ldflags=${5:--s -w}
  local gomod dir="$WORK/src-$name" outdir="$WORK/bin-$name" built
  gomod=$(mod_field "$mod@$ver" GoMod)
  [[ -n "$gomod" && -f "$gomod" ]] || { echo "no go.mod for $mod@$ver"; return 1; }
  write_wrapper "$dir" "$mod" "$ver" "testbed/$name" "$(gomod_replaces "$gomod" | remote_replaces)"
  rm -rf "$outdir"
  go_build "$dir" "$outdir" "$ldflags" "$pkg"
  built=$(find "$outdir" -maxdepth 1 -type f | head -n1)
  [[ -n "$built" && -x "$built" ]] || { echo "no binary produced for $pkg"; return 1; }
  mv -f "$built" "$OUT/bin/$name"
  rm -rf "$outdir" "$dir"
}

is_static() { ! readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; }

# ---------------------------------------------------------------------------
# Debian root file systems
# ---------------------------------------------------------------------------
detect_mirrors() {
  # Prints "MAIN_URI SECURITY_URI" from the host's apt configuration.
  local main=${DEVENV_DEBIAN_MIRROR:-} sec=${DEVENV_DEBIAN_SECURITY_MIRROR:-} uris
  uris=$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }'
            cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }'; } | sed 's:/*$::')
  [[ -n "$main" ]] || main=$(printf '%s\n' "$uris" | grep -v 'security' | head -n1)
  [[ -n "$sec" ]] || sec=$(printf '%s\n' "$uris" | grep 'debian-security' | head -n1)
  printf '%s %s\n' "${main:-http://deb.debian.org/debian}" "${sec:-http://deb.debian.org/debian-security}"
}
read -r MIRROR SECURITY_MIRROR < <(detect_mirrors)

# The Debian root file systems are kept apart from KEY, keyed by what goes into them, so
# an edit of the rest of the recipe does not debootstrap again.
ROOTFS_FORMAT=1
NODE_PACKAGES="systemd systemd-sysv dbus containerd runc containernetworking-plugins
  iptables nftables conntrack iproute2 ethtool util-linux mount kmod libseccomp2 pigz
  e2fsprogs bash ca-certificates curl jq procps socat ipset"
PROXY_PACKAGES="iptables nftables conntrack ipset kmod"
RFS_KEY=$(printf 'suite=%s format=%s node=%s proxy=%s\n' "$SUITE" "$ROOTFS_FORMAT" \
  "$(echo $NODE_PACKAGES)" "$(echo $PROXY_PACKAGES)" | sha256sum | cut -c1-12)
RFS=$KROOT/rootfs-$RFS_KEY

# prepare_apt ROOTFS: sources (main, updates, security), no recommends, no docs, no
# service starts; /proc mounted.
prepare_apt() {
  local r=$1
  cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
  printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
  chmod 755 "$r/usr/sbin/policy-rc.d"
  cat >"$r/etc/dpkg/dpkg.cfg.d/90-devenv-nodoc" <<'NODOC'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
NODOC
  echo force-unsafe-io >"$r/etc/dpkg/dpkg.cfg.d/90-devenv-unsafe-io"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Languages "none";\n' \
    >"$r/etc/apt/apt.conf.d/90-devenv"
  mountpoint -q "$r/proc" || mount -t proc proc "$r/proc"
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY_MIRROR" "$SUITE" >"$r/etc/apt/sources.list"
  if ! chroot "$r" apt-get update -q; then
    echo "apt-get update with updates/security failed; using $SUITE main only"
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$r/etc/apt/sources.list"
    chroot "$r" apt-get update -q
  fi
}

# finish_rootfs ROOTFS TAR: clean, unmount, archive.
finish_rootfs() {
  local r=$1 tar=$2
  umount "$r/proc" 2>/dev/null || umount -l "$r/proc" || true
  rm -f "$r/usr/sbin/policy-rc.d" "$r/etc/dpkg/dpkg.cfg.d/90-devenv-unsafe-io"
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
    "$r"/var/cache/apt/archives/partial/* "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old \
    "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/tmp/* "$r"/var/tmp/* "$r"/root/.cache
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$r/var/log" -type f -exec truncate -s 0 {} + 2>/dev/null || true
  mkdir -p "$r/var/lib/apt/lists/partial"
  : >"$r/etc/resolv.conf"
  tar -C "$r" --numeric-owner --xattrs -cf "$tar.tmp" .
  mv -f "$tar.tmp" "$tar"
}

step_rootfs() {
  local debs=$KROOT/debs base=$WORK/rootfs-minbase node=$WORK/rootfs-node proxy=$WORK/rootfs-proxy
  mkdir -p "$debs" "$RFS"
  rm -rf "$base" "$node" "$proxy"
  echo "== debootstrap --variant=minbase $SUITE from $MIRROR"
  nice -n 10 debootstrap --variant=minbase --cache-dir="$debs" "$SUITE" "$base" "$MIRROR"
  rm -rf "$base"/var/lib/apt/lists/* "$base"/var/cache/apt/archives/*.deb
  tar -C "$base" --numeric-owner --xattrs -cf "$RFS/minbase.tar" .

  echo "== node packages"
  mkdir -p "$node"
  tar -C "$node" --numeric-owner --xattrs -xf "$RFS/minbase.tar"
  prepare_apt "$node"
  # shellcheck disable=SC2086
  chroot "$node" env DEBIAN_FRONTEND=noninteractive LC_ALL=C nice -n 10 \
    apt-get install -y -q -o Dpkg::Use-Pty=0 $NODE_PACKAGES
  chroot "$node" sh -c 'cd /tmp && apt-get download -q busybox-static'
  mv -f "$node"/tmp/busybox-static_*.deb "$RFS/busybox-static.deb"
  chroot "$node" dpkg-query -W -f '${Package} ${Version}\n' >"$RFS/node-packages.txt"
  finish_rootfs "$node" "$RFS/node.tar"
  rm -rf --one-file-system "$node"

  echo "== kube-proxy image packages"
  mkdir -p "$proxy"
  tar -C "$proxy" --numeric-owner --xattrs -xf "$RFS/minbase.tar"
  prepare_apt "$proxy"
  # shellcheck disable=SC2086
  chroot "$proxy" env DEBIAN_FRONTEND=noninteractive LC_ALL=C nice -n 10 \
    apt-get install -y -q -o Dpkg::Use-Pty=0 $PROXY_PACKAGES
  finish_rootfs "$proxy" "$RFS/kube-proxy-base.tar"
  rm -rf --one-file-system "$proxy" "$base"
  ls -la "$RFS"
}

# ---------------------------------------------------------------------------
# Go steps
# ---------------------------------------------------------------------------
step_kind() {
  # `go install m@v` builds with the module's own go.mod (and no -mod flag).
  GOBIN="$OUT/bin" GOFLAGS="-trimpath -buildvcs=false" nice -n 10 go install -v "sigs.k8s.io/kind@${PIN[KIND_VERSION]}"
  "$OUT/bin/kind" version
}

step_crictl() {
  local v=${PIN[CRICTL_VERSION]} m=sigs.k8s.io/cri-tools
  build_module_binary crictl "$m" "$v" "$m/cmd/crictl" "-s -w -X $m/pkg/version.Version=$v"
  "$OUT/bin/crictl" --version
}

step_coredns() {
  # CoreDNS with the plugins of the Corefile kubeadm deploys and no others (the stock main
  # imports every plugin, cloud SDKs included, which triples the build): a main of our own,
  # the way CoreDNS documents compile-time plugin selection. Directives keep their order.
  local v=${PIN[COREDNS_VERSION]} m=github.com/coredns/coredns
  local gomod dir="$WORK/src-coredns" outdir="$WORK/bin-coredns" p
  gomod=$(mod_field "$m@$v" GoMod)
  [[ -n "$gomod" && -f "$gomod" ]] || { echo "no go.mod for $m@$v"; return 1; }
  write_wrapper "$dir" "$m" "$v" testbed/coredns "$(gomod_replaces "$gomod" | remote_replaces)"
  {
    printf 'package main\n\nimport (\n\t"%s/coremain"\n\n' "$m"
    for p in cache errors forward health kubernetes loadbalance log loop metrics ready reload; do
      printf '\t_ "%s/plugin/%s"\n' "$m" "$p"
    done
    printf ')\n\nfunc main() { coremain.Run() }\n'
  } >"$dir/main.go"
  rm -rf "$outdir"
  go_build "$dir" "$outdir" "-s -w" .
  mv -f "$outdir/coredns" "$OUT/bin/coredns"
  rm -rf "$outdir" "$dir"
  "$OUT/bin/coredns" -version
  "$OUT/bin/coredns" -plugins | grep -qw kubernetes || { echo "coredns lacks the kubernetes plugin"; return 1; }
}

step_local_path() {
  local v=${PIN[LOCAL_PATH_PROVISIONER_VERSION]} m=github.com/rancher/local-path-provisioner
  build_module_binary local-path-provisioner "$m" "$v" "$m" "-s -w -X main.VERSION=$v"
  "$OUT/bin/local-path-provisioner" --version
}

step_pause() {
  local dir
  dir=$(mod_field "k8s.io/kubernetes@$K8S_VERSION" Dir)
  [[ -f "$dir/build/pause/linux/pause.c" ]] || { echo "no build/pause/linux/pause.c in $dir"; return 1; }
  local ver
  ver=$(sed -n 's/^[[:space:]]*PauseVersion = "\(.*\)"/\1/p' "$dir/cmd/kubeadm/app/constants/constants.go")
  gcc -Os -Wall -Werror -static -DVERSION="v${ver:-unknown}-devenv" -o "$OUT/bin/pause" "$dir/build/pause/linux/pause.c"
  strip "$OUT/bin/pause" || true
  "$OUT/bin/pause" -v
}

step_sim() {
  # The sim build's binaries (kube-apiserver, controller-manager, scheduler, etcd, Flux,
  # registry); it waits for a build of the same pins already running, so the Kubernetes
  # build below reuses its module graph and compiled packages.
  bash "$REPO/sim/build.sh"
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler etcd source-controller \
           kustomize-controller helm-controller registry; do
    [[ -x "$SIM_BIN/$b" ]] || { echo "missing $SIM_BIN/$b"; return 1; }
    is_static "$SIM_BIN/$b" || { echo "$SIM_BIN/$b is not a static binary"; return 1; }
    echo "static: $SIM_BIN/$b"
  done
}

step_kube() {
  # The same wrapper module as sim/build.sh (require k8s.io/kubernetes, staging modules
  # at their published versions, the upstream remote replaces) and the same Go flags, so
  # the packages the sim build compiled come from the Go build cache.
  local gomod dir="$WORK/src-kube" staging replaces ldflags p
  gomod=$(mod_field "k8s.io/kubernetes@$K8S_VERSION" GoMod)
  [[ -n "$gomod" && -f "$gomod" ]] || { echo "no go.mod for k8s.io/kubernetes@$K8S_VERSION"; return 1; }
  staging=$(gomod_replaces "$gomod" | local_replaces | awk '$1 ~ /^k8s\.io\// { print $1 }' | sort -u)
  [[ -n "$staging" ]] || { echo "no staging modules in $gomod"; return 1; }
  replaces=$(
    for p in $staging; do printf '%s => %s %s\n' "$p" "$p" "$K8S_STAGING_VERSION"; done
    gomod_replaces "$gomod" | remote_replaces
  )
  write_wrapper "$dir" k8s.io/kubernetes "$K8S_VERSION" sim/kube "$replaces"
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
    ldflags+=" -X $p.gitCommit= -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE"
  done
  go_build "$dir" "$WORK/bin-kube" "$ldflags" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm \
    k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-proxy
  for p in kubelet kubeadm kubectl kube-proxy; do
    is_static "$WORK/bin-kube/$p" || { echo "$p is not static"; return 1; }
    mv -f "$WORK/bin-kube/$p" "$OUT/bin/$p"
  done
  rm -rf "$WORK/bin-kube" "$dir"
  "$OUT/bin/kubelet" --version
  "$OUT/bin/kubeadm" version -o short
}

# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------
CHANGE_PATH='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

# image_skeleton DIR: what a static binary's image needs (users, /tmp, CA bundle).
image_skeleton() {
  local d=$1
  mkdir -p "$d/etc/ssl/certs" "$d/tmp" "$d/usr/local/bin" "$d/var/run" "$d/root" "$d/home/nonroot"
  chmod 1777 "$d/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin\n' >"$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n' >"$d/etc/group"
  printf 'hosts: files dns\n' >"$d/etc/nsswitch.conf"
  chown 65532:65532 "$d/home/nonroot"
  tar -C "$d" -xf "$RFS/node.tar" ./etc/ssl/certs/ca-certificates.crt
}

# import_dir DIR NAME [--change ...]: docker import of DIR as NAME, labelled with KEY.
import_dir() {
  local d=$1 name=$2; shift 2
  tar -C "$d" --numeric-owner -cf - . \
    | docker import --change "$CHANGE_PATH" --change "LABEL $LABEL_KEY=$KEY" "$@" \
        --message "devenv kind test bed ($KEY)" - "$name" >/dev/null
  echo "imported $name ($(docker image inspect --format '{{.Size}}' "$name") bytes)"
}

# preload NAME FILE DIR [--change ...]: an image archive for the node's containerd.
preload() {
  local name=$1 file=$2 d=$3; shift 3
  import_dir "$d" "$name" "$@"
  docker save -o "$OUT/images/$file.tar.tmp" "$name"
  mv -f "$OUT/images/$file.tar.tmp" "$OUT/images/$file.tar"
  docker image rm "$name" >/dev/null 2>&1 || true
  rm -rf --one-file-system "$d"
}

step_images() {
  local list img repo d
  rm -f "$OUT/images"/*.tar "$OUT/images"/*.tmp
  list=$("$OUT/bin/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
  printf 'kubeadm config images list --kubernetes-version %s:\n%s\n' "$K8S_VERSION" "$list"
  printf '%s\n' "$list" >"$OUT/images/kubeadm-images.txt"
  for img in $list; do
    repo=${img%:*}
    repo=${repo##*/}
    d=$WORK/img-$repo
    rm -rf "$d"; mkdir -p "$d"
    echo "== $img"
    case $repo in
      kube-apiserver|kube-controller-manager|kube-scheduler)
        image_skeleton "$d"
        install -m 0755 "$SIM_BIN/$repo" "$d/usr/local/bin/$repo"
        preload "$img" "$repo" "$d" ;;
      kube-proxy)
        tar -C "$d" --numeric-owner --xattrs -xf "$RFS/kube-proxy-base.tar"
        install -m 0755 "$OUT/bin/kube-proxy" "$d/usr/local/bin/kube-proxy"
        install -m 0755 "$HERE/node/iptables-wrapper" "$d/usr/sbin/iptables-wrapper"
        local t
        for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
          ln -sfn iptables-wrapper "$d/usr/sbin/$t"
        done
        preload "$img" "$repo" "$d" ;;
      etcd)
        # The sim's etcd (sim/versions.env), under the tag kubeadm asks for.
        image_skeleton "$d"
        install -m 0755 "$SIM_BIN/etcd" "$d/usr/local/bin/etcd"
        mkdir -p "$d/var/lib/etcd"
        preload "$img" "$repo" "$d" ;;
      coredns)
        image_skeleton "$d"
        install -m 0755 "$OUT/bin/coredns" "$d/coredns"
        preload "$img" "$repo" "$d" --change 'ENTRYPOINT ["/coredns"]' --change 'EXPOSE 53 53/udp' ;;
      pause)
        install -m 0755 "$OUT/bin/pause" "$d/pause"
        preload "$img" "$repo" "$d" --change 'ENTRYPOINT ["/pause"]' --change 'USER 65535:65535' ;;
      *) echo "no recipe for the image $img that kubeadm asks for"; return 1 ;;
    esac
  done
  # local-path-provisioner, the node's default StorageClass (kind's default-storage.yaml).
  d=$WORK/img-local-path
  rm -rf "$d"; mkdir -p "$d"
  image_skeleton "$d"
  mkdir -p "$d/usr/bin"
  install -m 0755 "$OUT/bin/local-path-provisioner" "$d/usr/bin/local-path-provisioner"
  preload "$LOCAL_PATH_IMAGE" local-path-provisioner "$d"
  # busybox (Debian's busybox-static) for test pods and local-path's helper pods.
  d=$WORK/img-busybox
  rm -rf "$d"; mkdir -p "$d"
  image_skeleton "$d"
  dpkg-deb -x "$RFS/busybox-static.deb" "$d/.deb"
  mkdir -p "$d/bin"
  install -m 0755 "$d/.deb/bin/busybox" "$d/bin/busybox"
  rm -rf "$d/.deb"
  local a
  for a in $("$d/bin/busybox" --list); do
    [[ "$a" == busybox || -e "$d/bin/$a" ]] || ln -s busybox "$d/bin/$a"
  done
  preload "$BUSYBOX_IMAGE" busybox "$d" --change 'CMD ["sh"]'
  ls -la "$OUT/images"
}

step_app_images() {
  local n d
  for n in "${FLUX_NAMES[@]}"; do
    d=$WORK/img-$n
    rm -rf "$d"; mkdir -p "$d"
    image_skeleton "$d"
    install -m 0755 "$SIM_BIN/$n" "$d/usr/local/bin/$n"
    mkdir -p "$d/data"; chown 65534:65534 "$d/data"
    import_dir "$d" "$(flux_image "$n")" --change "ENTRYPOINT [\"/usr/local/bin/$n\"]" --change 'USER 65534:65534'
    rm -rf --one-file-system "$d"
  done
  d=$WORK/img-registry
  rm -rf "$d"; mkdir -p "$d"
  image_skeleton "$d"
  install -m 0755 "$SIM_BIN/registry" "$d/usr/local/bin/registry"
  mkdir -p "$d/etc/distribution" "$d/var/lib/registry"
  cat >"$d/etc/distribution/config.yml" <<'REGCONF'
version: 0.1
log:
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
REGCONF
  import_dir "$d" "$REGISTRY_IMAGE" --change 'ENTRYPOINT ["registry"]' \
    --change 'CMD ["serve", "/etc/distribution/config.yml"]' --change 'VOLUME /var/lib/registry' \
    --change 'EXPOSE 5000'
  rm -rf --one-file-system "$d"
}

# The Flux controller images of the host's Docker (step_app_images), saved for the node's
# preload: a cluster of the node image runs flux/install/flux.yaml with no registry.
flux_preload_file() { echo "$OUT/images/flux-$1.tar"; }
step_flux_preload() {
  local n img
  for n in "${FLUX_NAMES[@]}"; do
    img=$(flux_image "$n")
    image_ok "$img" || { echo "$img is not this build's image"; return 1; }
    docker save -o "$(flux_preload_file "$n").tmp" "$img"
    mv -f "$(flux_preload_file "$n").tmp" "$(flux_preload_file "$n")"
    echo "saved $img ($(docker image inspect --format '{{.Id}}' "$img"))"
  done
}

# kind's default-storage.yaml, from the local-path-provisioner module's own manifest: the
# preloaded images, volumes under /var (the node's volume), and its StorageClass named
# "standard" and default, as in kind's node images.
storage_manifest() {
  local dir
  dir=$(mod_field "github.com/rancher/local-path-provisioner@${PIN[LOCAL_PATH_PROVISIONER_VERSION]}" Dir)
  [[ -f "$dir/deploy/local-path-storage.yaml" ]] || { echo "no deploy/local-path-storage.yaml in $dir" >&2; return 1; }
  awk -v img="$LOCAL_PATH_IMAGE" -v helper="$BUSYBOX_IMAGE" '
    /^---/ { sc = 0 }
    /^kind: StorageClass/ { sc = 1 }
    sc && /^  name: local-path$/ {
      print "  name: standard"
      print "  annotations:"
      print "    storageclass.kubernetes.io/is-default-class: \"true\""
      next
    }
    /^ *image: rancher\/local-path-provisioner:/ { sub(/image: .*/, "image: " img) }
    /^ *image: busybox$/ { sub(/image: .*/, "image: " helper) }
    { gsub(/\/opt\/local-path-provisioner/, "/var/local-path-provisioner"); print }
  ' "$dir/deploy/local-path-storage.yaml"
}

step_node() {
  local r=$WORK/rootfs-node-image kind_dir files f
  rm -rf "$r"; mkdir -p "$r"
  kind_dir=$(mod_field "sigs.k8s.io/kind@${PIN[KIND_VERSION]}" Dir)
  files=$kind_dir/images/base/files
  [[ -f "$files/usr/local/bin/entrypoint" ]] || { echo "no kind base files in $files"; return 1; }
  tar -C "$r" --numeric-owner --xattrs -xf "$RFS/node.tar"

  # kind's base image (images/base/Dockerfile of the kind module), on Debian's packages.
  echo "== kind base files from $files"
  cp -R "$files/." "$r/"
  chmod -R u+w,go-w "$r/kind" "$r/etc/containerd" "$r/etc/systemd/system" "$r/etc/sysctl.d" \
    "$r/etc/default" "$r/usr/local/bin" "$r/LICENSES"
  find "$r/kind" "$r/etc/containerd" "$r/etc/systemd/system" "$r/etc/sysctl.d" "$r/etc/default" \
    "$r/LICENSES" "$r/etc/crictl.yaml" -type f -exec chmod 0644 {} +
  find "$r/kind" "$r/LICENSES" "$r/etc/systemd/system" -type d -exec chmod 0755 {} +
  chmod 0755 "$r"/usr/local/bin/* "$r"/kind/bin/*
  find "$r/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$r"/lib/systemd/system/multi-user.target.wants/* "$r"/etc/systemd/system/*.wants/* \
    "$r"/lib/systemd/system/local-fs.target.wants/* "$r"/lib/systemd/system/sockets.target.wants/*udev* \
    "$r"/lib/systemd/system/sockets.target.wants/*initctl* "$r"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$r/etc/systemd/journald.conf"
  ln -sfn /usr/lib/systemd/systemd "$r/sbin/init"
  mkdir -p "$r/etc/kubernetes/manifests"

  # containerd and runc from Debian, where kind's units look for them.
  ln -sfn /usr/bin/containerd "$r/usr/local/bin/containerd"
  ln -sfn /usr/bin/ctr "$r/usr/local/bin/ctr"
  echo "== cri-base.json (ctr oci spec, with kind's mount hook)"
  chroot "$r" ctr oci spec \
    | jq '.hooks.createContainer[.hooks.createContainer|length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' >"$r/etc/containerd/cri-base.json"
  jq -e '.hooks.createContainer[0].path == "/kind/bin/mount-product-files.sh"' "$r/etc/containerd/cri-base.json" >/dev/null
  local pause_image
  pause_image=$(grep '/pause:' "$OUT/images/kubeadm-images.txt")
  sed -i -e "s|sandbox_image = \".*\"|sandbox_image = \"$pause_image\"|" \
    -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$r/etc/containerd/config.toml"
  grep -q "sandbox_image = \"$pause_image\"" "$r/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$r/etc/containerd/config.toml"

  # CNI plugins from Debian, where containerd looks for them.
  rm -rf "$r/opt/cni/bin"; mkdir -p "$r/opt/cni"
  ln -sfn /usr/lib/cni "$r/opt/cni/bin"
  # Debian's sysctl defaults include machine-wide settings (kernel.pid_max, ...): the node
  # must not apply them to the host kernel. kind's own /etc/sysctl.d files are per netns.
  rm -rf "$r"/usr/lib/sysctl.d/* "$r"/etc/sysctl.d/99-sysctl.conf

  # Kubernetes.
  for f in kubelet kubeadm kubectl; do install -m 0755 "$OUT/bin/$f" "$r/usr/bin/$f"; done
  install -m 0755 "$OUT/bin/crictl" "$r/usr/local/bin/crictl"
  printf '%s\n' "$K8S_VERSION" >"$r/kind/version"
  mkdir -p "$r/kind/images" "$r/kind/devenv" "$r/kind/manifests"
  cp "$OUT"/images/*.tar "$r/kind/images/"
  printf '%s\n' "$KEY" >"$r/kind/devenv/image-key"
  storage_manifest >"$r/kind/manifests/default-storage.yaml"

  # The test bed's own pieces (node/).
  install -m 0755 "$HERE/node/devenv-pre-entrypoint" "$r/usr/local/bin/devenv-pre-entrypoint"
  install -m 0644 "$HERE/node/sysctl-shadow.conf" "$r/kind/devenv/sysctl-shadow.conf"
  install -m 0755 "$HERE/node/devenv-preload-images.sh" "$r/kind/bin/devenv-preload-images.sh"
  install -m 0644 "$HERE/node/devenv-preload-images.service" "$r/etc/systemd/system/devenv-preload-images.service"
  install -m 0644 "$HERE/node/kubelet-preload.conf" "$r/etc/systemd/system/kubelet.service.d/20-devenv-preload.conf"

  chroot "$r" systemctl enable kubelet.service containerd.service undo-mount-hacks.service devenv-preload-images.service
  chroot "$r" systemctl mask systemd-binfmt.service
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
  echo "node root file system: $(du -xsh "$r" | cut -f1)"

  echo "== docker import $NODE_ROOTFS_IMAGE"
  tar -C "$r" --numeric-owner --xattrs -cf - . \
    | docker import --message "devenv kind node root file system ($KEY)" - "$NODE_ROOTFS_IMAGE" >/dev/null
  rm -rf --one-file-system "$r"
  # docker import refuses STOPSIGNAL; a one-line Dockerfile sets it with the rest.
  local ctx=$WORK/node-image-context
  rm -rf "$ctx"; mkdir -p "$ctx"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $NODE_ROOTFS_IMAGE
ENV container=docker PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/devenv-pre-entrypoint", "/usr/local/bin/entrypoint", "/sbin/init"]
LABEL $LABEL_KEY=$KEY org.opencontainers.image.title=devenv-kind-node io.x-k8s.kind.kubernetes-version=$K8S_VERSION
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q -t "$NODE_IMAGE" "$ctx"
  rm -rf "$ctx"
  docker image rm "$NODE_ROOTFS_IMAGE" >/dev/null 2>&1 || true
}

step_verify() {
  local out want img
  out=$(docker image inspect --format '{{.Config.StopSignal}} {{json .Config.Entrypoint}}' "$NODE_IMAGE")
  echo "node image: $out"
  [[ "$out" == 'SIGRTMIN+3 ["/usr/local/bin/devenv-pre-entrypoint","/usr/local/bin/entrypoint","/sbin/init"]' ]]
  # Plain (unprivileged) containers of the image, for its files only.
  out=$(docker run --rm --network none --entrypoint /bin/sh "$NODE_IMAGE" -c '
    set -e
    kubelet --version; kubeadm version -o short; containerd --version; runc --version | head -n1
    crictl --version; cat /kind/version; ls /kind/images
    test -x /opt/cni/bin/bridge && test -x /opt/cni/bin/host-local && test -x /opt/cni/bin/loopback
    test -s /kind/devenv/sysctl-shadow.conf && test -x /usr/local/bin/devenv-pre-entrypoint
    test -z "$(ls /usr/lib/sysctl.d)"
    grep -E "sandbox_image|restrict_oom_score_adj" /etc/containerd/config.toml
    systemctl is-enabled kubelet containerd devenv-preload-images undo-mount-hacks')
  printf '%s\n' "$out"
  grep -q "Kubernetes $K8S_VERSION" <<<"$out" || { echo "kubelet is not $K8S_VERSION"; return 1; }
  for img in $(cat "$OUT/images/kubeadm-images.txt"); do
    want=${img%:*}; want=${want##*/}
    grep -qx "$want.tar" <<<"$out" || { echo "no preloaded archive for $img"; return 1; }
  done
  for img in "${FLUX_NAMES[@]}"; do
    grep -qx "$(basename "$(flux_preload_file "$img")")" <<<"$out" \
      || { echo "no preloaded archive for $(flux_image "$img")"; return 1; }
  done
  for img in "${FLUX_NAMES[@]}"; do
    docker run --rm --network none "$(flux_image "$img")" --help >/dev/null 2>&1 \
      || { echo "$(flux_image "$img") --help failed"; return 1; }
    echo "$(flux_image "$img"): runs"
  done
  docker run --rm --network none "$REGISTRY_IMAGE" --version
  "$OUT/bin/kubectl" version --client
}

# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------
say "building the kind test bed into $OUT (key $KEY; Kubernetes $K8S_VERSION, kind ${PIN[KIND_VERSION]}, $GO_VERSION)"
say "Debian $SUITE from $MIRROR (security: $SECURITY_MIRROR)"

if [[ -f "$RFS/node.tar" && -f "$RFS/kube-proxy-base.tar" && -f "$RFS/busybox-static.deb" ]]; then
  touch "$STAMPS/rootfs"
fi
start_step rootfs "(bg) Debian root file systems (debootstrap $SUITE, node and kube-proxy packages)" step_rootfs
run_step kind "kind ${PIN[KIND_VERSION]} (go install)" step_kind
run_step crictl "crictl ${PIN[CRICTL_VERSION]}" step_crictl
run_step coredns "coredns ${PIN[COREDNS_VERSION]}" step_coredns
run_step local-path "local-path-provisioner ${PIN[LOCAL_PATH_PROVISIONER_VERSION]}" step_local_path
run_step pause "pause (static, from k8s.io/kubernetes $K8S_VERSION build/pause)" step_pause
rm -f "$STAMPS/sim"   # sim/build.sh is instant when up to date; its cache may have been removed
run_step sim "sim binaries (sim/build.sh: control plane, etcd, Flux, registry)" step_sim
run_step kube "kubelet, kubeadm, kubectl, kube-proxy (k8s.io/kubernetes $K8S_VERSION)" step_kube
wait_step rootfs
run_step images "images preloaded in the node (kubeadm's list, busybox)" step_images
rm -f "$STAMPS/app-images"   # images live in Docker, not in the cache: always checked
app_images_ok() {
  local n
  image_ok "$REGISTRY_IMAGE" || return 1
  for n in "${FLUX_NAMES[@]}"; do image_ok "$(flux_image "$n")" || return 1; done
}
if app_images_ok; then
  say "Flux and registry images … present"
else
  run_step app-images "Flux controller and registry images ($FLUX_IMAGES $REGISTRY_IMAGE)" step_app_images
fi
# The node's copies of the Flux images: kept in the cache while the archives are there
# (step_images empties images/ when it runs again).
for n in "${FLUX_NAMES[@]}"; do
  [[ -s "$(flux_preload_file "$n")" ]] || { rm -f "$STAMPS/flux-preload"; break; }
done
if image_ok "$NODE_IMAGE"; then
  say "Flux images for the node's preload … not needed (node image present)"
else
  run_step flux-preload "Flux images for the node's preload" step_flux_preload
fi
if image_ok "$NODE_IMAGE"; then
  say "node image $NODE_IMAGE … present"
else
  rm -f "$STAMPS/node"
  run_step node "node image $NODE_IMAGE" step_node
fi
rm -f "$STAMPS/verify"
run_step verify "verification" step_verify

total=$((SECONDS - T0))
node_size=$(docker image inspect --format '{{.Size}}' "$NODE_IMAGE")
{
  printf '{\n  "key": "%s",\n  "go": "%s",\n  "built_at": "%s",\n' "$KEY" "$GO_VERSION" "$BUILD_DATE"
  printf '  "node_image": "%s",\n  "node_image_bytes": %s,\n' "$NODE_IMAGE" "$node_size"
  printf '  "kubernetes": "%s",\n  "kind": "%s",\n' "$K8S_VERSION" "${PIN[KIND_VERSION]}"
  printf '  "preloaded": [%s],\n' "$( { cat "$OUT/images/kubeadm-images.txt"; echo "$LOCAL_PATH_IMAGE"; echo "$BUSYBOX_IMAGE"
    for n in "${FLUX_NAMES[@]}"; do flux_image "$n"; done; } | sed 's/.*/"&"/' | paste -sd, -)"
  printf '  "etcd_note": "the preloaded etcd image is etcd %s (sim/versions.env) under the tag kubeadm asks for",\n' "${PIN[ETCD_VERSION]}"
  printf '  "step_seconds": {'
  first=1
  for k in "${!STEP_SECONDS[@]}"; do
    (( first )) || printf ','
    first=0
    printf '\n    "%s": %d' "$k" "${STEP_SECONDS[$k]}"
  done
  printf '\n  },\n  "total_seconds": %d\n}\n' "$total"
} >"$OUT/build-info.json"
rm -rf "$WORK"

# Older builds of the test bed (other KEYs): their node images and cache directories,
# unless DEVENV_KEEP_OLD_IMAGES=1 or another build holds their lock.
if [[ "${DEVENV_KEEP_OLD_IMAGES:-0}" != 1 ]]; then
  docker image ls devenv-test/kind-node --format '{{.Repository}}:{{.Tag}}' \
    | grep -vxF "$NODE_IMAGE" | xargs -r docker image rm >/dev/null 2>&1 || true
  for old in "$KROOT"/*; do
    [[ -d "$old" && "$(basename "$old")" =~ ^[0-9a-f]{12}$ && "$old" != "$OUT" ]] || continue
    (
      exec 8>"$KROOT/.lock-$(basename "$old")"
      flock -n 8 || exit 0
      rm -rf --one-file-system "$old"
      rm -f "$KROOT/.lock-$(basename "$old")"
    ) || true
  done
fi
say "done in ${total}s: $NODE_IMAGE ($((node_size / 1024 / 1024)) MB)"
print_env
