#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info` on this machine, and that the
# tools the test-image builds need (debootstrap) are installed.
#
# Idempotent and non-interactive: when the engine already answers and the tools
# are present it only says so. Otherwise it installs Debian's `docker.io`
# and/or `debootstrap` with apt-get (running `apt-get update` at most once),
# starts `dockerd` detached from this script (so it outlives it) with its log in
# a file, and waits for it to answer.
#
# Environment:
#   DEVENV_DOCKERD_LOG      dockerd log file (default: $XDG_RUNTIME_DIR or /tmp,
#                           file devenv-dockerd.log)
#   DEVENV_DOCKER_TIMEOUT   seconds to wait for the engine (default 60)
#
# Exit status: 0 when the engine answers, 1 otherwise (with the log tail).
set -euo pipefail

timeout_s=${DEVENV_DOCKER_TIMEOUT:-60}
log_dir=${XDG_RUNTIME_DIR:-/tmp}
[ -d "$log_dir" ] && [ -w "$log_dir" ] || log_dir=/tmp
dockerd_log=${DEVENV_DOCKERD_LOG:-$log_dir/devenv-dockerd.log}

say() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Run a command as root: directly when we are root, through non-interactive
# sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run: $*"
    fi
}

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2 \
            || die "apt-get update failed"
        apt_updated=1
    fi
    say "apt-get install -y $*"
    # Do not let package scripts start services: this script starts dockerd
    # itself, and on machines without an init system invoke-rc.d would fail.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created_policy=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        --no-install-recommends "$@" </dev/null >&2 || rc=$?
    if [ "$created_policy" -eq 1 ]; then
        as_root rm -f "$policy"
    fi
    [ "$rc" -eq 0 ] || die "apt-get install $* failed (exit $rc)"
}

docker_ok() { docker info >/dev/null 2>&1; }
# A process that exists and has not exited (an exited child stays a zombie
# until this script ends, and kill -0 still finds zombies).
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }

# --- tools the image builds need ----------------------------------------------
need=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
# The images are made with `docker import`, so the engine's own tar handling is
# enough; the build script also uses these everywhere-present tools.
for tool in tar sha256sum flock setsid; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found"
done

if command -v docker >/dev/null 2>&1 && docker_ok; then
    if [ "${#need[@]}" -gt 0 ]; then
        apt_install "${need[@]}"
    fi
    say "docker engine is up ($(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo '?'))"
    exit 0
fi

# --- the engine -----------------------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    need+=(docker.io)
fi
# docker.io recommends these; dockerd needs iptables for the default bridge.
command -v iptables >/dev/null 2>&1 || need+=(iptables)
if [ "${#need[@]}" -gt 0 ]; then
    apt_install "${need[@]}"
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"

# A dockerd may already be starting (another run of this script, or an init
# system): do not start a second one over the same state directory.
running_pid=""
started_pid=""
if [ -r /var/run/docker.pid ]; then
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -n "$pid" ] && alive "$pid"; then
        running_pid=$pid
    fi
fi

# dockerd needs cgroups. Machines with an init system mount them; a bare VM or
# chroot may not: then mount one v1 hierarchy per enabled controller.
ensure_cgroups() {
    if grep -qE '^[^ ]+ [^ ]+ cgroup2? ' /proc/mounts 2>/dev/null; then
        return 0
    fi
    [ -r /proc/cgroups ] || { say "warning: no /proc/cgroups; dockerd may fail"; return 0; }
    say "no cgroup file system mounted; mounting cgroup v1 hierarchies on /sys/fs/cgroup"
    as_root mkdir -p /sys/fs/cgroup
    mountpoint -q /sys/fs/cgroup || as_root mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup /sys/fs/cgroup
    local ctrl
    # shellcheck disable=SC2013 # controller names are single words
    for ctrl in $(awk '!/^#/ && $4 == 1 { print $1 }' /proc/cgroups); do
        as_root mkdir -p "/sys/fs/cgroup/$ctrl"
        mountpoint -q "/sys/fs/cgroup/$ctrl" \
            || as_root mount -n -t cgroup -o "$ctrl" cgroup "/sys/fs/cgroup/$ctrl" \
            || say "warning: could not mount the $ctrl cgroup"
    done
}

if [ -n "$running_pid" ]; then
    say "dockerd already running (pid $running_pid); waiting for it to answer"
else
    ensure_cgroups
    say "starting dockerd (log: $dockerd_log)"
    mkdir -p "$(dirname "$dockerd_log")"
    # setsid + nohup: its own session, immune to the hangup of this shell, no
    # stdin, so it keeps running after this script (and its caller) exit.
    # It must not inherit the caller's other descriptors either (a lock file or
    # a pipe held open by a long-lived daemon would block whoever waits on it).
    (
        for fd_path in "/proc/$BASHPID"/fd/*; do
            fd=${fd_path##*/}
            if [ "$fd" -gt 2 ] 2>/dev/null; then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        # shellcheck disable=SC2086 # DEVENV_DOCKERD_ARGS is a list of arguments
        if [ "$(id -u)" -eq 0 ]; then
            exec setsid nohup dockerd ${DEVENV_DOCKERD_ARGS:-} </dev/null >>"$dockerd_log" 2>&1
        else
            exec sudo -n setsid nohup dockerd ${DEVENV_DOCKERD_ARGS:-} </dev/null >>"$dockerd_log" 2>&1
        fi
    ) &
    started_pid=$!
fi

start=$(date +%s)
next_note=5
while :; do
    if docker_ok; then
        say "docker engine is up after $(( $(date +%s) - start ))s ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}' 2>/dev/null || echo '?'))"
        exit 0
    fi
    elapsed=$(( $(date +%s) - start ))
    exited=0
    if [ -n "${started_pid:-}" ] && ! alive "$started_pid"; then
        exited=1
    fi
    if [ "$exited" -eq 1 ] || [ "$elapsed" -ge "$timeout_s" ]; then
        if [ "$exited" -eq 1 ]; then
            say "error: dockerd exited after ${elapsed}s"
        else
            say "error: docker engine did not answer within ${timeout_s}s"
        fi
        if [ -r "$dockerd_log" ]; then
            say "last lines of $dockerd_log:"
            tail -n 30 "$dockerd_log" >&2 || true
        fi
        say "last 'docker info' error:"
        docker info 2>&1 >/dev/null | tail -n 5 >&2 || true
        exit 1
    fi
    if [ "$elapsed" -ge "$next_note" ]; then
        say "waiting for dockerd (${elapsed}s)"
        next_note=$(( next_note + 5 ))
    fi
    sleep 0.5
done
