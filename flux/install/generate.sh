#!/usr/bin/env bash
# Generates flux/install/flux.yaml: the Flux install devenv applies to a cluster that has
# no Flux (source-controller, kustomize-controller and helm-controller in flux-system).
#
# Why generated, not copied from a Flux release: the controllers are pinned in
# sim/versions.env and the release assets are not reachable here, but each controller's
# Go module ships its own kustomize config (config/crd, config/rbac, config/manager). This
# script reads those from the modules at exactly the pinned versions and composes them the
# way the flux2 distribution does:
#   - one Namespace, flux-system, for all three (each module's config/default would make
#     its own *-system namespace, and kustomize-/helm-controller's config/default also pull
#     source-controller's release assets from GitHub: not used);
#   - one ServiceAccount per controller, named after it, bound by the module's own
#     ClusterRoles/ClusterRoleBindings and leader-election Role/RoleBinding (the modules
#     bind the namespace's `default` ServiceAccount);
#   - images ghcr.io/fluxcd/<controller>:<pin>, imagePullPolicy as the modules set it
#     (IfNotPresent);
#   - --watch-all-namespaces=true; source-controller keeps its module's
#     --storage-adv-addr=source-controller.$(RUNTIME_NAMESPACE).svc.cluster.local.;
#     no --events-addr (there is no notification-controller), no NetworkPolicies.
# The result is checked (one Namespace, no duplicate objects, the images, pull policy and
# arguments above) before flux.yaml is replaced.
#
# kustomize is built from its Go module at KUSTOMIZE_VERSION (below; the kustomize API
# kubectl v1.36 embeds) into ${DEVENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devenv}/tools/.
#
# Usage: generate.sh [--check] [--help]
#   --check   regenerate into a temporary file and fail if flux.yaml differs from it
# Needs: go (the Go module proxy or a module cache holding the pinned modules), awk, sed.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1
FLUX_NAMESPACE=flux-system

TAG="[flux install]"
say() { printf '%s %s\n' "$TAG" "$*" >&2; }
die() { printf '%s error: %s\n' "$TAG" "$*" >&2; exit 1; }

check=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
SIM_VERSIONS=$REPO/sim/versions.env
OUTPUT=$HERE/flux.yaml

# ---------------------------------------------------------------------------
# Pins: KEY=value lines of sim/versions.env, parsed, not executed.
# ---------------------------------------------------------------------------
declare -A PIN=()
[[ -r "$SIM_VERSIONS" ]] || die "cannot read $SIM_VERSIONS"
while IFS= read -r line || [[ -n "$line" ]]; do
  line=${line%$'\r'}
  [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]] && continue
  [[ "$line" =~ ^[[:space:]]*([A-Z][A-Z0-9_]*)=([A-Za-z0-9._+-]+)[[:space:]]*$ ]] \
    || die "$SIM_VERSIONS: expected KEY=value, got: $line"
  PIN[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done <"$SIM_VERSIONS"

CONTROLLERS=(source-controller kustomize-controller helm-controller)
declare -A VERSION=(
  [source-controller]=${PIN[SOURCE_CONTROLLER_VERSION]:-}
  [kustomize-controller]=${PIN[KUSTOMIZE_CONTROLLER_VERSION]:-}
  [helm-controller]=${PIN[HELM_CONTROLLER_VERSION]:-}
)
for c in "${CONTROLLERS[@]}"; do
  [[ "${VERSION[$c]}" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "no usable pin for $c in $SIM_VERSIONS: '${VERSION[$c]}'"
done

# ---------------------------------------------------------------------------
# Go: the module proxy (or the module cache) gives the modules and kustomize.
# ---------------------------------------------------------------------------
command -v go >/dev/null 2>&1 || die "go is not installed"
export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on CGO_ENABLED=0

WORK=$(mktemp -d "${TMPDIR:-/tmp}/devenv-flux-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# module_dir MODULE@VERSION: the module's extracted source (read-only, in the module cache).
module_dir() {
  local json dir
  json=$(cd "$WORK" && go mod download -json "$1" 2>&1) || { printf '%s\n' "$json" >&2; die "cannot download $1"; }
  dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
  [[ -n "$dir" && -d "$dir" ]] || { printf '%s\n' "$json" >&2; die "no source directory for $1"; }
  printf '%s\n' "$dir"
}

TOOLS=${DEVENV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devenv}/tools
KUSTOMIZE=$TOOLS/kustomize-$KUSTOMIZE_VERSION/kustomize
if [[ ! -x "$KUSTOMIZE" ]]; then
  say "building kustomize $KUSTOMIZE_VERSION into $(dirname "$KUSTOMIZE")"
  mkdir -p "$(dirname "$KUSTOMIZE")"
  # `go install m@v` builds with the module's own go.mod; into a temporary GOBIN, then
  # moved, so an interrupted build leaves nothing that looks finished.
  GOBIN="$WORK/gobin" GOFLAGS="-trimpath -buildvcs=false" nice -n 10 \
    go install -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" \
    || die "building kustomize $KUSTOMIZE_VERSION failed"
  mv -f "$WORK/gobin/kustomize" "$KUSTOMIZE"
fi

# ---------------------------------------------------------------------------
# The kustomization: one directory per controller holding a copy of its module's
# config/{crd,rbac,manager}, plus what the flux2 distribution adds on top.
# ---------------------------------------------------------------------------
K=$WORK/kustomize
mkdir -p "$K"
cat >"$K/namespace.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $FLUX_NAMESPACE
EOF
cat >"$K/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $FLUX_NAMESPACE
resources:
  - namespace.yaml
$(for c in "${CONTROLLERS[@]}"; do printf '  - %s\n' "$c"; done)
labels:
  - pairs:
      app.kubernetes.io/part-of: flux
      app.kubernetes.io/instance: $FLUX_NAMESPACE
EOF

for c in "${CONTROLLERS[@]}"; do
  v=${VERSION[$c]}
  src=$(module_dir "github.com/fluxcd/$c@$v")
  say "$c $v: $src/config"
  d=$K/$c
  mkdir -p "$d"
  for part in crd rbac manager; do
    [[ -f "$src/config/$part/kustomization.yaml" ]] || die "$c $v has no config/$part/kustomization.yaml"
    cp -R "$src/config/$part" "$d/$part"
  done
  chmod -R u+w "$d"
  # The module's own image tag must be the pin: a mismatch means the module is not the
  # release it claims to be.
  grep -Eq "newTag:[[:space:]]*$v[[:space:]]*\$" "$d/manager/kustomization.yaml" \
    || die "$c $v: config/manager/kustomization.yaml does not tag the image $v"
  cat >"$d/account.yaml" <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: $c
EOF
  cat >"$d/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - crd
  - rbac
  - manager
  - account.yaml
images:
  - name: fluxcd/$c
    newName: ghcr.io/fluxcd/$c
    newTag: $v
labels:
  - pairs:
      app.kubernetes.io/component: $c
      app.kubernetes.io/version: $v
patches:
  # The module binds the namespace's "default" ServiceAccount; bind the controller's own.
  - target:
      kind: (RoleBinding|ClusterRoleBinding)
    patch: |-
      - op: test
        path: /subjects/0/kind
        value: ServiceAccount
      - op: replace
        path: /subjects/0/name
        value: $c
      - op: add
        path: /subjects/0/namespace
        value: $FLUX_NAMESPACE
  # flux2's install: the controller's ServiceAccount, and --watch-all-namespaces=true
  # (the module's first argument is the bare flag; the test fails loudly if that moves).
  - target:
      group: apps
      kind: Deployment
      name: $c
    patch: |-
      - op: add
        path: /spec/template/spec/serviceAccountName
        value: $c
      - op: test
        path: /spec/template/spec/containers/0/args/0
        value: --watch-all-namespaces
      - op: replace
        path: /spec/template/spec/containers/0/args/0
        value: --watch-all-namespaces=true
EOF
  # helm-controller's config/rbac brings its own ClusterRole granting every verb on every
  # resource and URL: a second cluster-admin. Bind cluster-admin instead, as
  # kustomize-controller's config and the flux2 distribution do, and drop the copy. (No
  # JSON patch test on the roleRef here: kustomize fixes name references after patches. If
  # the names move upstream, the checks below find the '*' role or a dangling roleRef.)
  if [[ $c == helm-controller ]]; then
    cat >>"$d/kustomization.yaml" <<'EOF'
  - target:
      kind: ClusterRoleBinding
      name: helm-reconciler-rolebinding
    patch: |-
      - op: replace
        path: /roleRef/name
        value: cluster-admin
  - target:
      kind: ClusterRole
      name: helm-reconciler-role
    patch: |-
      $patch: delete
      apiVersion: rbac.authorization.k8s.io/v1
      kind: ClusterRole
      metadata:
        name: helm-reconciler-role
EOF
  fi
done

built=$WORK/built.yaml
"$KUSTOMIZE" build "$K" >"$built" || die "kustomize build failed"

# ---------------------------------------------------------------------------
# Checks of the result.
# ---------------------------------------------------------------------------
# kind/namespace/name of every document, one per line.
objects=$(awk '
  function flush() { if (kind != "") print kind "/" (ns == "" ? "-" : ns) "/" name; kind = ""; ns = ""; name = ""; inmeta = 0 }
  /^---/ { flush(); next }
  /^kind: / { kind = $2 }
  /^metadata:/ { inmeta = 1; next }
  /^[^ ]/ { inmeta = 0 }
  inmeta && /^  name: / { name = $2 }
  inmeta && /^  namespace: / { ns = $2 }
  END { flush() }
' "$built")
count() { grep -c -- "$1" <<<"$objects" || true; }
dups=$(sort <<<"$objects" | uniq -d)
[[ -z "$dups" ]] || die "duplicate objects: $dups"
[[ "$(count '^Namespace/')" == 1 ]] || die "expected exactly one Namespace"
[[ "$(count "^Namespace/-/$FLUX_NAMESPACE\$")" == 1 ]] || die "the Namespace is not $FLUX_NAMESPACE"
[[ "$(count '^NetworkPolicy/')" == 0 ]] || die "NetworkPolicies in the output"
[[ "$(count '^CustomResourceDefinition/')" -ge 8 ]] || die "fewer CRDs than expected"
[[ -z "$(grep -E '^[A-Za-z]+/[^-]' <<<"$objects" | grep -v "^[A-Za-z]*/$FLUX_NAMESPACE/")" ]] \
  || die "namespaced objects outside $FLUX_NAMESPACE: $(grep -E '^[A-Za-z]+/[^-]' <<<"$objects" | grep -v "/$FLUX_NAMESPACE/")"
for c in "${CONTROLLERS[@]}"; do
  [[ "$(count "^Deployment/$FLUX_NAMESPACE/$c\$")" == 1 ]] || die "no Deployment $c"
  [[ "$(count "^ServiceAccount/$FLUX_NAMESPACE/$c\$")" == 1 ]] || die "no ServiceAccount $c"
  [[ "$(grep -c "^ *image: ghcr.io/fluxcd/$c:${VERSION[$c]}\$" "$built")" == 1 ]] \
    || die "$c does not run ghcr.io/fluxcd/$c:${VERSION[$c]}"
done
[[ "$(grep -c '^ *image: ' "$built")" == 3 ]] || die "expected three images: $(grep '^ *image: ' "$built")"
[[ "$(grep -c '^ *imagePullPolicy: IfNotPresent$' "$built")" == 3 ]] \
  || die "expected imagePullPolicy IfNotPresent on the three containers: $(grep 'imagePullPolicy' "$built")"
[[ "$(count '^Service/')" == 1 && "$(count "^Service/$FLUX_NAMESPACE/source-controller\$")" == 1 ]] \
  || die "expected the one Service source-controller"
[[ "$(grep -c -- '- --watch-all-namespaces=true$' "$built")" == 3 ]] || die "--watch-all-namespaces=true is not on the three controllers"
grep -q -- '- --watch-all-namespaces$' "$built" && die "a bare --watch-all-namespaces is left"
grep -q -- '--events-addr' "$built" && die "--events-addr in the output (there is no notification-controller)"
grep -qF -- '- --storage-adv-addr=source-controller.$(RUNTIME_NAMESPACE).svc.cluster.local.' "$built" \
  || die "source-controller has no --storage-adv-addr=source-controller.\$(RUNTIME_NAMESPACE).svc.cluster.local."
[[ "$(grep -c '^  *name: default$' "$built")" == 0 ]] || die "a binding still names the default ServiceAccount"
# Every binding refers to a role of the output, or to cluster-admin; no role grants '*'.
while read -r ref; do
  [[ "$ref" == ClusterRole/cluster-admin ]] && continue
  case $ref in
    ClusterRole/*) [[ "$(count "^ClusterRole/-/${ref#*/}\$")" == 1 ]] ;;
    Role/*) [[ "$(count "^Role/$FLUX_NAMESPACE/${ref#*/}\$")" == 1 ]] ;;
    *) false ;;
  esac || die "a binding refers to $ref, which is not in the output"
done < <(awk '/^---/ { r = 0 } /^roleRef:/ { r = 1; next } /^[^ ]/ { r = 0 }
  r && /^  kind: / { k = $2 } r && /^  name: / { print k "/" $2 }' "$built")
grep -q "^  - '\*'$" "$built" && die "a role grants '*' (a copy of cluster-admin)"

# ---------------------------------------------------------------------------
# Output: the header (generator, versions; the version lines are read by tests), then
# kustomize's documents.
# ---------------------------------------------------------------------------
result=$WORK/flux.yaml
{
  printf '# Flux for clusters without it: source-controller, kustomize-controller and helm-controller\n'
  printf '# in the %s namespace. Generated by flux/install/generate.sh (kustomize %s) from the\n' "$FLUX_NAMESPACE" "$KUSTOMIZE_VERSION"
  printf "# controllers' Go modules at the pins of sim/versions.env; do not edit, regenerate.\n"
  for c in "${CONTROLLERS[@]}"; do printf '# %s: %s\n' "$c" "${VERSION[$c]}"; done
  cat "$built"
} >"$result"

if (( check )); then
  if ! diff -u "$OUTPUT" "$result" >"$WORK/diff"; then
    head -n 60 "$WORK/diff" >&2
    die "$OUTPUT is not what generate.sh makes of the pins; run flux/install/generate.sh"
  fi
  say "$OUTPUT is up to date"
  exit 0
fi
mv -f "$result" "$OUTPUT"
say "wrote $OUTPUT: $(cut -d/ -f1 <<<"$objects" | sort | uniq -c | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')"
