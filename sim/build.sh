#!/usr/bin/env bash
# Builds the binaries of the `sim` provider from their Go modules at the versions
# pinned in versions.env, plus the Flux CRDs and the kwok stage configs, into
#
#   ${DEVENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devenv}/sim/<KEY>/
#       bin/         kube-apiserver kube-controller-manager kube-scheduler etcd kwok
#                    source-controller kustomize-controller helm-controller registry
#       crds/        Flux CRDs (config/crd/bases of the three controllers)
#       kwok-stages/ kwok Stage configs (kustomize/stage of the kwok module)
#       versions.env copy of the pins, build-info.json, logs/
#
# KEY is the first 12 hex characters of the sha256 of versions.env's exact bytes.
#
# The script is self-contained: it can be run from the repository or fed on stdin
# (`bash -s -- [ARGS]`). Pins come from, in order:
#   DEVENV_SIM_VERSIONS_TEXT  the content of versions.env
#   DEVENV_SIM_VERSIONS       the path of versions.env
#   versions.env next to this script
#
# Usage: build.sh [--print-dir] [--help]
#   --print-dir   print the output directory and exit
#
# Requires: bash, go (the version the pinned modules ask for; GOTOOLCHAIN=local),
# coreutils, awk, sed; flock (util-linux) is used when present.

set -euo pipefail

TAG="[sim build]"
say() { printf '%s %s\n' "$TAG" "$*"; }
die() { printf '%s error: %s\n' "$TAG" "$*" >&2; exit 1; }

usage() {
  cat <<'EOF_USAGE'
Usage: build.sh [--print-dir] [--help]

Builds the sim provider's binaries at the pins of versions.env into
${DEVENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devenv}/sim/<KEY>/ (bin/, crds/,
kwok-stages/, versions.env, build-info.json, logs/); instant when already built.

  --print-dir   print the output directory and exit

Pins: DEVENV_SIM_VERSIONS_TEXT (content), DEVENV_SIM_VERSIONS (path), or
versions.env next to this script.
EOF_USAGE
}

print_dir=0
for arg in "$@"; do
  case "$arg" in
    --print-dir) print_dir=1 ;;
    -h|--help)
      usage
      exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

# ---------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------
tmp_versions=""
cleanup_versions() { [[ -n "$tmp_versions" ]] && rm -f "$tmp_versions"; return 0; }
trap cleanup_versions EXIT

if [[ -n "${DEVENV_SIM_VERSIONS_TEXT:-}" ]]; then
  tmp_versions=$(mktemp)
  printf '%s' "$DEVENV_SIM_VERSIONS_TEXT" >"$tmp_versions"
  versions_file=$tmp_versions
elif [[ -n "${DEVENV_SIM_VERSIONS:-}" ]]; then
  versions_file=$DEVENV_SIM_VERSIONS
elif [[ -n "${BASH_SOURCE[0]:-}" && -f "${BASH_SOURCE[0]}" ]]; then
  versions_file="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/versions.env"
else
  die "no pins: set DEVENV_SIM_VERSIONS (path) or DEVENV_SIM_VERSIONS_TEXT (content)"
fi
[[ -r "$versions_file" ]] || die "cannot read versions file: $versions_file"

# Parse KEY=value lines without executing the file.
declare -A PIN=()
lineno=0
while IFS= read -r line || [[ -n "$line" ]]; do
  lineno=$((lineno + 1))
  line=${line%$'\r'}
  [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]] && continue
  if [[ "$line" =~ ^[[:space:]]*([A-Z][A-Z0-9_]*)=([A-Za-z0-9._+-]+)[[:space:]]*$ ]]; then
    PIN[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
  else
    die "$versions_file:$lineno: expected KEY=value, got: $line"
  fi
done <"$versions_file"

for k in KUBERNETES_VERSION ETCD_VERSION KWOK_VERSION SOURCE_CONTROLLER_VERSION \
         KUSTOMIZE_CONTROLLER_VERSION HELM_CONTROLLER_VERSION REGISTRY_VERSION; do
  [[ -n "${PIN[$k]:-}" ]] || die "$versions_file: missing $k"
done

K8S_VERSION=${PIN[KUBERNETES_VERSION]}
if [[ ! "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
  die "KUBERNETES_VERSION must look like v1.MINOR.PATCH, got $K8S_VERSION"
fi
K8S_MINOR=${BASH_REMATCH[1]}
K8S_STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"

KEY=$(sha256sum <"$versions_file" | cut -c1-12)
CACHE_ROOT=${DEVENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devenv}
SIM_ROOT="$CACHE_ROOT/sim"
OUT="$SIM_ROOT/$KEY"

if (( print_dir )); then
  printf '%s\n' "$OUT"
  exit 0
fi

BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok
          source-controller kustomize-controller helm-controller registry)

is_complete() {
  local dir=$1 b
  [[ -f "$dir/build-info.json" && -f "$dir/versions.env" ]] || return 1
  for b in "${BINARIES[@]}"; do [[ -x "$dir/bin/$b" ]] || return 1; done
  compgen -G "$dir/crds/*.yaml" >/dev/null || return 1
  return 0
}

if is_complete "$OUT"; then
  say "up to date: $OUT"
  exit 0
fi

# ---------------------------------------------------------------------------
# Lock, work directory
# ---------------------------------------------------------------------------
mkdir -p "$SIM_ROOT"
LOCK="$SIM_ROOT/.lock-$KEY"
lock_dir=""
if command -v flock >/dev/null 2>&1; then
  exec 9>"$LOCK"
  if ! flock -n 9; then
    say "another build of $KEY is running; waiting for it"
    waited=0
    until flock -w 30 9; do
      waited=$((waited + 30))
      say "      … still waiting for the other build (${waited}s)"
    done
  fi
else
  # Fallback without flock: an atomic mkdir, released on exit.
  lock_dir="$LOCK.d"
  waited=0
  until mkdir "$lock_dir" 2>/dev/null; do
    (( waited % 30 == 0 )) && say "another build of $KEY is running (lock $lock_dir); waiting (${waited}s)"
    sleep 10
    waited=$((waited + 10))
  done
fi

if is_complete "$OUT"; then
  say "up to date (built by another process): $OUT"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "Go is required on PATH to build the sim binaries"

# Leftovers of interrupted builds of this key (we hold its lock).
rm -rf "$SIM_ROOT/.build-$KEY".* 2>/dev/null || true
if [[ -e "$OUT" ]]; then
  say "removing incomplete $OUT"
  rm -rf "$OUT"
fi

WORK=$(mktemp -d "$SIM_ROOT/.build-$KEY.XXXXXX")
STAGE="$WORK/out"
LOGS="$STAGE/logs"
SRC="$WORK/src"
FAILED="$SIM_ROOT/failed-$KEY"
mkdir -p "$STAGE/bin" "$STAGE/crds" "$STAGE/kwok-stages" "$LOGS" "$SRC" "$WORK/tmp"

child=""
finished=0
on_exit() {
  local rc=$?
  if [[ -n "$child" ]] && kill -0 "$child" 2>/dev/null; then
    kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  if (( ! finished )) && [[ -d "$WORK" ]]; then
    rm -rf "$FAILED"
    mkdir -p "$FAILED"
    [[ -d "$LOGS" ]] && mv "$LOGS" "$FAILED/logs" 2>/dev/null || true
    [[ -d "$SRC" ]] && mv "$SRC" "$FAILED/src" 2>/dev/null || true
    rm -rf "$WORK" 2>/dev/null || true
    local what="build failed"
    (( rc == 130 || rc == 143 )) && what="build interrupted"
    printf '%s %s; logs and wrapper modules kept in %s\n' "$TAG" "$what" "$FAILED" >&2
  fi
  [[ -n "$lock_dir" ]] && rmdir "$lock_dir" 2>/dev/null
  cleanup_versions
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Go environment
# ---------------------------------------------------------------------------
export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOFLAGS="-trimpath -mod=mod -buildvcs=false"
export GOWORK=off
export GO111MODULE=on
export TMPDIR="$WORK/tmp"
unset GOOS GOARCH

GO_VERSION=$(go env GOVERSION)
GO_LINE=${GO_VERSION#go}
GO_LINE=${GO_LINE%%[!0-9.]*}
BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)

T0=$SECONDS
NSTEPS=9
STEP=0
declare -A STEP_SECONDS=()

say "building into $OUT"
say "pins from $versions_file (key $KEY), $GO_VERSION, GOMODCACHE=$(go env GOMODCACHE)"

# run_step NAME LABEL FUNCTION [ARGS...]
# Runs FUNCTION in the background with its output in logs/NAME.log, printing a
# heartbeat every 30 s, and the step's time when done.
run_step() {
  local name=$1 label=$2; shift 2
  local log="$LOGS/$name.log" start=$SECONDS last=$SECONDS rc=0
  STEP=$((STEP + 1))
  say "($STEP/$NSTEPS) $label …"
  # Own process group (set -m), so an interrupted build stops go and its compilers too.
  set -m
  ( set -euo pipefail; "$@" ) >"$log" 2>&1 &
  child=$!
  set +m
  while kill -0 "$child" 2>/dev/null; do
    sleep 1
    if (( SECONDS - last >= 30 )); then
      last=$SECONDS
      say "      … $label: $((SECONDS - start))s, $(wc -l <"$log" | tr -d ' ') log lines ($name.log)"
    fi
  done
  wait "$child" || rc=$?
  child=""
  STEP_SECONDS[$name]=$((SECONDS - start))
  if (( rc != 0 )); then
    printf '%s (%d/%d) %s FAILED after %ds (exit %d); last lines of the log:\n' \
      "$TAG" "$STEP" "$NSTEPS" "$label" "$((SECONDS - start))" "$rc" >&2
    tail -n 25 "$log" | sed 's/^/    /' >&2
    printf '%s full log: %s\n' "$TAG" "$FAILED/logs/$name.log" >&2
    exit 1
  fi
  say "($STEP/$NSTEPS) $label … $((SECONDS - start))s (total $((SECONDS - T0))s)"
}

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# mod_field MODULE@VERSION FIELD: downloads the module and prints a field (Dir, GoMod)
# of `go mod download -json`.
mod_field() {
  local json
  if ! json=$(cd "$WORK/tmp" && go mod download -json "$1" 2>&1); then
    printf '%s\n' "$json" >&2
    echo "cannot download $1" >&2
    return 1
  fi
  printf '%s\n' "$json" | sed -n "s/^[[:space:]]*\"$2\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" | head -n1
}

# gomod_replaces GOMOD: prints its replace directives, one per line, normalised to
# "OLD [OLDVER] => NEW [NEWVER]".
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

# Filters for gomod_replaces output: remote targets (module paths) or local paths.
remote_replaces() { awk '{ for (i = 1; i < NF; i++) if ($i == "=>") t = $(i + 1); if (t !~ /^(\.|\/)/) print }'; }
local_replaces()  { awk '{ for (i = 1; i < NF; i++) if ($i == "=>") t = $(i + 1); if (t ~ /^(\.|\/)/) print }'; }

# write_wrapper DIR MODULE VERSION [REPLACE-LINES]: a module of our own that requires
# MODULE@VERSION, so its packages (including main packages) can be built with
# replace directives applied.
write_wrapper() {
  local dir=$1 mod=$2 ver=$3 replaces=${4:-}
  mkdir -p "$dir"
  {
    printf 'module devenv.local/sim/%s\n\n' "$(basename "$dir")"
    printf 'go %s\n\n' "$GO_LINE"
    printf 'require %s %s\n' "$mod" "$ver"
    if [[ -n "$replaces" ]]; then
      printf '\nreplace (\n'
      printf '%s\n' "$replaces" | sed '/^$/d; s/^/\t/'
      printf ')\n'
    fi
  } >"$dir/go.mod"
  echo "== $dir/go.mod"
  cat "$dir/go.mod"
}

# go_build DIR OUTDIR LDFLAGS PKG...: builds the packages into OUTDIR/ from the
# wrapper module in DIR. -v lists packages as they compile (kept in the log).
go_build() {
  local dir=$1 outdir=$2 ldflags=$3; shift 3
  echo "== go build ($dir): $*"
  (cd "$dir" && go build -v -ldflags "$ldflags" -o "$outdir/" "$@")
}

# Builds MODULE@VERSION's main package PKG as binary NAME, copying the upstream
# go.mod's replace directives except local paths.
build_module_binary() {
  local name=$1 mod=$2 ver=$3 pkg=$4 ldflags=${5:--s -w}
  local gomod dir="$SRC/$name" outdir="$WORK/tmp/bin-$name"
  gomod=$(mod_field "$mod@$ver" GoMod)
  [[ -n "$gomod" && -f "$gomod" ]] || { echo "no go.mod for $mod@$ver"; return 1; }
  echo "== upstream replaces of $mod@$ver:"
  gomod_replaces "$gomod" | sed 's/^/   /'
  write_wrapper "$dir" "$mod" "$ver" "$(gomod_replaces "$gomod" | remote_replaces)"
  mkdir -p "$outdir"
  go_build "$dir" "$outdir" "$ldflags" "$pkg"
  # The file name go picks (e.g. "server" for .../server/v3) does not matter: the
  # directory holds exactly this one binary.
  local built
  built=$(find "$outdir" -maxdepth 1 -type f | head -n1)
  [[ -n "$built" && -x "$built" ]] || { echo "no binary produced for $pkg"; return 1; }
  mv -f "$built" "$STAGE/bin/$name"
  rmdir "$outdir" 2>/dev/null || true
}

# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------

step_fetch() {
  local m
  for m in \
    "k8s.io/kubernetes@$K8S_VERSION" \
    "go.etcd.io/etcd/server/v3@${PIN[ETCD_VERSION]}" \
    "sigs.k8s.io/kwok@${PIN[KWOK_VERSION]}" \
    "github.com/fluxcd/source-controller@${PIN[SOURCE_CONTROLLER_VERSION]}" \
    "github.com/fluxcd/kustomize-controller@${PIN[KUSTOMIZE_CONTROLLER_VERSION]}" \
    "github.com/fluxcd/helm-controller@${PIN[HELM_CONTROLLER_VERSION]}" \
    "github.com/distribution/distribution/v3@${PIN[REGISTRY_VERSION]}"; do
    echo "== go mod download $m"
    mod_field "$m" Dir
  done
}

step_kube() {
  local gomod dir="$SRC/kube" staging replaces ldflags p
  gomod=$(mod_field "k8s.io/kubernetes@$K8S_VERSION" GoMod)
  [[ -n "$gomod" && -f "$gomod" ]] || { echo "no go.mod for k8s.io/kubernetes@$K8S_VERSION"; return 1; }
  # k8s.io/kubernetes replaces its staging modules with ./staging/src/k8s.io/<m>;
  # point each at its published release instead.
  staging=$(gomod_replaces "$gomod" | local_replaces | awk '$1 ~ /^k8s\.io\// { print $1 }' | sort -u)
  [[ -n "$staging" ]] || { echo "no staging modules found in $gomod"; return 1; }
  echo "== staging modules ($(printf '%s\n' "$staging" | wc -l)) at $K8S_STAGING_VERSION"
  replaces=$(
    for p in $staging; do printf '%s => %s %s\n' "$p" "$p" "$K8S_STAGING_VERSION"; done
    gomod_replaces "$gomod" | remote_replaces
  )
  write_wrapper "$dir" k8s.io/kubernetes "$K8S_VERSION" "$replaces"
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
    # No commit is known for a module build; an empty one beats the "$Format:%H$" placeholder.
    ldflags+=" -X $p.gitCommit= -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE"
  done
  go_build "$dir" "$STAGE/bin" "$ldflags" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
}

step_etcd() {
  # In etcd v3.6 the server binary's main package is the root of go.etcd.io/etcd/server/v3.
  build_module_binary etcd go.etcd.io/etcd/server/v3 "${PIN[ETCD_VERSION]}" go.etcd.io/etcd/server/v3
}

step_kwok() {
  local v=${PIN[KWOK_VERSION]}
  build_module_binary kwok sigs.k8s.io/kwok "$v" sigs.k8s.io/kwok/cmd/kwok \
    "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${v#v}"
}

step_flux() {
  local name=$1 ver=$2
  build_module_binary "$name" "github.com/fluxcd/$name" "$ver" "github.com/fluxcd/$name"
}

step_registry() {
  local v=${PIN[REGISTRY_VERSION]} p=github.com/distribution/distribution/v3
  build_module_binary registry "$p" "$v" "$p/cmd/registry" \
    "-s -w -X $p/version.version=$v -X $p/version.mainpkg=$p"
}

step_assets() {
  local name ver dir f rel
  for name in source-controller kustomize-controller helm-controller; do
    case $name in
      source-controller) ver=${PIN[SOURCE_CONTROLLER_VERSION]} ;;
      kustomize-controller) ver=${PIN[KUSTOMIZE_CONTROLLER_VERSION]} ;;
      helm-controller) ver=${PIN[HELM_CONTROLLER_VERSION]} ;;
    esac
    dir=$(mod_field "github.com/fluxcd/$name@$ver" Dir)
    compgen -G "$dir/config/crd/bases/*.yaml" >/dev/null || { echo "no CRDs in $dir/config/crd/bases"; return 1; }
    for f in "$dir"/config/crd/bases/*.yaml; do
      echo "crd: $f"
      install -m 0644 "$f" "$STAGE/crds/"
    done
  done
  # kwok needs Stage configs (--config) to move nodes and pods through their
  # lifecycle; keep the upstream ones (kind: Stage only) next to the binary.
  dir=$(mod_field "sigs.k8s.io/kwok@${PIN[KWOK_VERSION]}" Dir)
  [[ -d "$dir/kustomize/stage" ]] || { echo "no kustomize/stage in $dir"; return 1; }
  while IFS= read -r f; do
    grep -q '^kind: Stage' "$f" || continue
    rel=${f#"$dir/kustomize/stage/"}
    echo "stage: $rel"
    mkdir -p "$STAGE/kwok-stages/$(dirname "$rel")"
    install -m 0644 "$f" "$STAGE/kwok-stages/$rel"
  done < <(find "$dir/kustomize/stage" -type f -name '*.yaml' ! -path '*/testdata/*' ! -name 'kustomization.yaml' | sort)
}

step_verify() {
  local b out
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    out=$(timeout 60 "$STAGE/bin/$b" --version 2>&1) || { echo "$b --version failed: $out"; return 1; }
    echo "$b: $out"
    [[ "$out" == *"$K8S_VERSION"* ]] || { echo "$b reports '$out', expected $K8S_VERSION"; return 1; }
  done
  out=$(timeout 60 "$STAGE/bin/etcd" --version 2>&1) || { echo "etcd --version failed: $out"; return 1; }
  echo "etcd: $out"
  [[ "$out" == *"${PIN[ETCD_VERSION]#v}"* ]] || { echo "etcd reports '$out', expected ${PIN[ETCD_VERSION]}"; return 1; }
  out=$(timeout 60 "$STAGE/bin/registry" --version 2>&1) || { echo "registry --version failed: $out"; return 1; }
  echo "registry: $out"
  for b in kwok source-controller kustomize-controller helm-controller; do
    out=$(timeout 60 "$STAGE/bin/$b" --help 2>&1) || { echo "$b --help failed: $out"; return 1; }
    echo "$b: --help ok ($(printf '%s\n' "$out" | wc -l) lines)"
  done
}

step_assets_and_verify() { step_assets; step_verify; }

# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------
run_step fetch "module sources (k8s.io/kubernetes $K8S_VERSION, etcd, kwok, flux, registry)" step_fetch
run_step etcd "etcd (go.etcd.io/etcd/server/v3 ${PIN[ETCD_VERSION]})" step_etcd
run_step kwok "kwok (sigs.k8s.io/kwok ${PIN[KWOK_VERSION]})" step_kwok
run_step source-controller "source-controller ${PIN[SOURCE_CONTROLLER_VERSION]}" step_flux source-controller "${PIN[SOURCE_CONTROLLER_VERSION]}"
run_step kustomize-controller "kustomize-controller ${PIN[KUSTOMIZE_CONTROLLER_VERSION]}" step_flux kustomize-controller "${PIN[KUSTOMIZE_CONTROLLER_VERSION]}"
run_step helm-controller "helm-controller ${PIN[HELM_CONTROLLER_VERSION]}" step_flux helm-controller "${PIN[HELM_CONTROLLER_VERSION]}"
run_step registry "registry (github.com/distribution/distribution/v3 ${PIN[REGISTRY_VERSION]})" step_registry
run_step kube "kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes $K8S_VERSION)" step_kube
run_step assets "Flux CRDs, kwok stages, binary checks" step_assets_and_verify

cp "$versions_file" "$STAGE/versions.env"
total=$((SECONDS - T0))
{
  printf '{\n'
  printf '  "key": "%s",\n' "$KEY"
  printf '  "go": "%s",\n' "$GO_VERSION"
  printf '  "built_at": "%s",\n' "$BUILD_DATE"
  printf '  "versions": {\n'
  first=1
  for k in $(printf '%s\n' "${!PIN[@]}" | sort); do
    (( first )) || printf ',\n'
    first=0
    printf '    "%s": "%s"' "$k" "${PIN[$k]}"
  done
  printf '\n  },\n'
  printf '  "binaries": [%s],\n' "$(printf '"%s",' "${BINARIES[@]}" | sed 's/,$//')"
  printf '  "build_seconds": {\n'
  for k in fetch kube etcd kwok source-controller kustomize-controller helm-controller registry assets; do
    printf '    "%s": %d,\n' "$k" "${STEP_SECONDS[$k]:-0}"
  done
  printf '    "total": %d\n' "$total"
  printf '  }\n}\n'
} >"$STAGE/build-info.json"

is_complete "$STAGE" || die "internal: staged output is incomplete"
mv -T "$STAGE" "$OUT"
finished=1
rm -rf "$WORK" "$FAILED"
say "done in ${total}s: $OUT"
