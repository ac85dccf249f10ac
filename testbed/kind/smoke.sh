#!/usr/bin/env bash
# Proves the kind test bed end to end on this machine, and that it leaves the host's
# kernel settings alone:
#   1. build.sh (instant when cached);
#   2. records the host's machine-wide sysctls the node shadows (node/sysctl-shadow.conf)
#      and a snapshot of the rest of the host's /proc/sys;
#   3. kind create cluster devenv-testbed-smoke (one node, the docker wrapper first on
#      kind's PATH), waits for the node to be Ready;
#   4. checks the shadowing inside the node, runs a pod of a preloaded image to
#      completion, and one with a PVC (local-path), waits for CoreDNS and kube-proxy;
#   5. checks the node preloaded the Flux controller images (the host's image IDs), applies
#      flux/install/flux.yaml with the test bed's kubectl and waits until the three Flux
#      Deployments are Available (nothing is pulled: there is no registry);
#   6. kind load docker-image of the registry image, checks the node has it;
#   7. deletes the cluster (also on failure or interrupt), then fails if a shadowed host
#      sysctl changed (other /proc/sys differences are listed).
# Prints the time of each phase.
#
# Usage: smoke.sh [--keep]   (--keep: leave the cluster running; still checks sysctls)
# Environment: DEVENV_CACHE_DIR (as build.sh), DEVENV_KIND_SMOKE_TIMEOUT (seconds per
# wait, default 240).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
FLUX_MANIFEST=$(cd "$HERE/../.." && pwd -P)/flux/install/flux.yaml
CLUSTER=devenv-testbed-smoke
TIMEOUT=${DEVENV_KIND_SMOKE_TIMEOUT:-240}
keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

T0=$SECONDS
phase_start=$SECONDS
phase_name=""
declare -a TIMINGS=()
say() { printf '[kind smoke %3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
phase() {
  end_phase
  phase_name=$1
  phase_start=$SECONDS
  say "== $1"
}
end_phase() {
  if [[ -n "$phase_name" ]]; then
    TIMINGS+=("$(printf '%-44s %4ds' "$phase_name" "$((SECONDS - phase_start))")")
    phase_name=""
  fi
}
fail() { say "FAILED: $*"; exit 1; }

# ---------------------------------------------------------------------------
phase "build (build.sh)"
env_lines=$(bash "$HERE/build.sh") || fail "build.sh failed"
eval "$env_lines"
KIND=$DEVENV_KIND_BIN
KUBECTL=$DEVENV_KIND_KUBECTL
say "node image $DEVENV_KIND_NODE_IMAGE, kind $KIND"

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/devenv-kind-smoke.XXXXXX")
KUBECONFIG_FILE=$WORKDIR/kubeconfig
export DEVENV_DOCKER_WRAPPER_LOG=$WORKDIR/docker-wrapper.log
kind_() { PATH="$DEVENV_KIND_DOCKER_WRAPPER_DIR:$PATH" "$KIND" "$@"; }
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# ---------------------------------------------------------------------------
# Host sysctls
# ---------------------------------------------------------------------------
SHADOWED=$(awk '!/^[[:space:]]*#/ && NF { print $1 }' "$HERE/node/sysctl-shadow.conf")
read_shadowed() {
  local k
  for k in $SHADOWED; do printf '%s=%s\n' "$k" "$(cat "/proc/sys/${k//.//}" 2>/dev/null || echo '?')"; done
}
# Everything readable under the host's /proc/sys but per-interface network entries and
# counters that move on their own.
snapshot_proc_sys() {
  { grep -r -s --binary-files=text -H . /proc/sys 2>/dev/null || true; } \
    | grep -v -E '^/proc/sys/net/(ipv4|ipv6)/(conf|neigh)/|^/proc/sys/net/netfilter/nf_conntrack_count|^/proc/sys/kernel/random/|^/proc/sys/kernel/(ns_last_pid|pty/nr|tainted)|^/proc/sys/fs/(dentry-state|inode-nr|inode-state|file-nr|aio-nr|quota/)|^/proc/sys/fs/binfmt_misc/' \
    | LC_ALL=C sort || true
}

phase "record host sysctls"
read_shadowed >"$WORKDIR/sysctl-before"
snapshot_proc_sys >"$WORKDIR/proc-sys-before"
sed 's/^/    host /' "$WORKDIR/sysctl-before" >&2

sysctl_checked=0
check_host_sysctls() {
  (( sysctl_checked )) && return 0
  sysctl_checked=1
  read_shadowed >"$WORKDIR/sysctl-after"
  snapshot_proc_sys >"$WORKDIR/proc-sys-after"
  local rc=0
  if ! diff -u "$WORKDIR/sysctl-before" "$WORKDIR/sysctl-after" >"$WORKDIR/sysctl-diff"; then
    say "HOST SYSCTLS CHANGED:"
    sed 's/^/    /' "$WORKDIR/sysctl-diff" >&2
    rc=1
  else
    say "host sysctls unchanged: $(tr '\n' ' ' <"$WORKDIR/sysctl-after")"
  fi
  if ! diff "$WORKDIR/proc-sys-before" "$WORKDIR/proc-sys-after" >"$WORKDIR/proc-sys-diff"; then
    say "note: other host /proc/sys entries differ (not shadowed; check whether the test bed or something else changed them):"
    sed 's/^/    /' "$WORKDIR/proc-sys-diff" | head -n 40 >&2
  else
    say "the rest of the host's /proc/sys is unchanged too"
  fi
  return "$rc"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  end_phase
  if (( ! keep )) || (( rc != 0 )); then
    if (( rc != 0 )) && [[ -n "${KIND:-}" ]]; then
      say "failure: node state for diagnosis"
      docker exec "$CLUSTER-control-plane" sh -c 'systemctl --no-pager --failed; journalctl --no-pager -u kubelet | tail -n 30; crictl ps -a' 2>&1 | sed 's/^/    /' | tail -n 60 >&2 || true
    fi
    local s=$SECONDS
    if [[ -n "${KIND:-}" ]] && kind_ get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
      say "deleting the cluster $CLUSTER"
      kind_ delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >&2 || rc=1
    fi
    TIMINGS+=("$(printf '%-44s %4ds' "delete cluster" "$((SECONDS - s))")")
  fi
  if [[ -f "${WORKDIR:-/nonexistent}/sysctl-before" ]]; then
    check_host_sysctls || rc=1
  fi
  [[ -s "${DEVENV_DOCKER_WRAPPER_LOG:-/nonexistent}" ]] && say "docker calls rewritten by the wrapper: $(wc -l <"$DEVENV_DOCKER_WRAPPER_LOG")"
  printf '\n[kind smoke] timings:\n' >&2
  printf '    %s\n' "${TIMINGS[@]}" >&2
  printf '    %-44s %4ds\n' total "$((SECONDS - T0))" >&2
  if (( rc == 0 )); then
    printf '[kind smoke] PASSED\n' >&2
  else
    printf '[kind smoke] FAILED (exit %d)\n' "$rc" >&2
  fi
  [[ -n "${WORKDIR:-}" ]] && rm -rf "$WORKDIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
phase "create cluster"
if kind_ get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "a cluster $CLUSTER is left from an earlier run; deleting it"
  kind_ delete cluster --name "$CLUSTER" >&2
fi
kind_ create cluster --name "$CLUSTER" --image "$DEVENV_KIND_NODE_IMAGE" \
  --config "$DEVENV_KIND_CONFIG" --kubeconfig "$KUBECONFIG_FILE" --retain >&2 \
  || fail "kind create cluster failed"
NODE=$CLUSTER-control-plane

phase "node Ready"
kc wait --for=condition=Ready node --all --timeout="${TIMEOUT}s" >&2 || fail "the node did not become Ready"
kc get nodes -o wide >&2
# Pods need their namespace's default ServiceAccount, which the controller-manager creates
# a moment after the node can be Ready ("serviceaccount "default" not found").
waited=0
until kc -n default get serviceaccount default >/dev/null 2>&1; do
  (( waited >= TIMEOUT )) && fail "no default ServiceAccount in the default namespace after ${TIMEOUT}s"
  sleep 1
  waited=$((waited + 1))
done

phase "sysctl shadowing inside the node"
docker exec "$NODE" sh -c '
  set -e
  while read -r key value _; do
    case "$key" in ""|\#*) continue ;; esac
    path=/proc/sys/$(echo "$key" | tr . /)
    [ -e "$path" ] || continue
    findmnt -rn --target "$path" -o TARGET | grep -qx "$path" || { echo "$key is NOT shadowed"; exit 1; }
    echo "shadowed: $key = $(cat "$path")"
  done </kind/devenv/sysctl-shadow.conf' >&2 || fail "sysctl shadowing is not in place in the node"

phase "pod from a preloaded image, to completion"
kc apply -f - >&2 <<POD
apiVersion: v1
kind: Pod
metadata:
  name: smoke
  namespace: default
spec:
  restartPolicy: Never
  containers:
    - name: smoke
      image: $DEVENV_KIND_BUSYBOX_IMAGE
      imagePullPolicy: Never
      command: ["sh", "-c", "echo smoke-ok from \$(hostname) on \$(ip -4 -o addr show eth0 | awk '{print \$4}')"]
POD
kc wait --for=jsonpath='{.status.phase}'=Succeeded pod/smoke --timeout="${TIMEOUT}s" >&2 \
  || { kc describe pod smoke >&2 || true; fail "the pod did not complete"; }
logs=$(kc logs smoke)
say "pod output: $logs"
[[ "$logs" == smoke-ok* ]] || fail "unexpected pod output"

phase "PVC on the default StorageClass (local-path)"
kc apply -f - >&2 <<PVC
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: smoke
  namespace: default
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 16Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: smoke-pvc
  namespace: default
spec:
  restartPolicy: Never
  containers:
    - name: smoke
      image: $DEVENV_KIND_BUSYBOX_IMAGE
      imagePullPolicy: Never
      command: ["sh", "-c", "echo persisted >/data/f && cat /data/f"]
      volumeMounts:
        - { name: data, mountPath: /data }
  volumes:
    - name: data
      persistentVolumeClaim: { claimName: smoke }
PVC
kc wait --for=jsonpath='{.status.phase}'=Succeeded pod/smoke-pvc --timeout="${TIMEOUT}s" >&2 \
  || { kc describe pvc smoke >&2 || true; kc describe pod smoke-pvc >&2 || true; fail "the pod with a PVC did not complete"; }
[[ "$(kc get pvc smoke -o jsonpath='{.status.phase}')" == Bound ]] || fail "the PVC is not Bound"
say "PVC bound ($(kc get pvc smoke -o jsonpath='{.spec.storageClassName}')), pod output: $(kc logs smoke-pvc)"

phase "CoreDNS and kube-proxy Ready"
kc -n kube-system rollout status deployment/coredns --timeout="${TIMEOUT}s" >&2 || fail "CoreDNS did not become Ready"
kc -n kube-system rollout status daemonset/kube-proxy --timeout="${TIMEOUT}s" >&2 || fail "kube-proxy did not become Ready"
kc -n kube-system get pods -o wide >&2

phase "Flux images preloaded in the node"
for img in $DEVENV_KIND_FLUX_IMAGES; do
  want=$(docker image inspect --format '{{.Id}}' "$img") || fail "$img is not in the host's Docker"
  got=$(docker exec "$NODE" crictl inspecti -o go-template --template '{{.status.id}}' "$img") \
    || fail "$img is not preloaded in the node"
  [[ "$got" == "$want" ]] || fail "$img in the node is $got, the host's is $want"
  say "preloaded: $img ($got)"
done

phase "Flux install: Deployments Available"
[[ -f "$FLUX_MANIFEST" ]] || fail "no $FLUX_MANIFEST"
kc apply --server-side -f "$FLUX_MANIFEST" >&2 || fail "applying $FLUX_MANIFEST failed"
flux_deployments=$(kc -n flux-system get deployments -o name)
[[ $(wc -w <<<"$flux_deployments") == 3 ]] || fail "expected three Flux Deployments, got: $flux_deployments"
# shellcheck disable=SC2086
if ! kc -n flux-system wait --for=condition=Available $flux_deployments --timeout="${TIMEOUT}s" >&2; then
  kc -n flux-system get pods -o wide >&2 || true
  kc -n flux-system describe pods >&2 || true
  for d in $flux_deployments; do kc -n flux-system logs "$d" --tail=20 >&2 || true; done
  fail "the Flux Deployments did not become Available"
fi
kc -n flux-system get deployments,pods -o wide >&2
if kc -n flux-system get events --field-selector reason=Pulling -o name | grep -q .; then
  fail "a Flux image was pulled rather than taken from the node's preload"
fi

phase "kind load docker-image (the registry image)"
kind_ load docker-image "$DEVENV_KIND_REGISTRY_IMAGE" --name "$CLUSTER" >&2 || fail "kind load docker-image failed"
docker exec "$NODE" crictl inspecti "$DEVENV_KIND_REGISTRY_IMAGE" >/dev/null \
  || fail "$DEVENV_KIND_REGISTRY_IMAGE is not in the node after kind load"
say "$DEVENV_KIND_REGISTRY_IMAGE is in the node"

end_phase
say "all checks passed"
