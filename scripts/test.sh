#!/usr/bin/env bash
# Runs every test tier of devenv on this machine, installing and starting what the tiers
# need first: the Docker engine, the test images, the sim cluster's binaries.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -- NAME    # extra arguments go to `cargo test`
#
# Under CI=true a tier that cannot run fails the run instead of being skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
phase_start=$start
phase() {
    local now
    now=$(date +%s)
    printf '\n[test] %s (%ss so far)\n' "$*" "$((now - start))" >&2
    phase_start=$now
}
done_phase() { printf '[test] … done in %ss\n' "$(($(date +%s) - phase_start))" >&2; }

cargo_args=()
if [ "${1:-}" = "--" ]; then shift; cargo_args=("$@"); fi

# The sim binaries take longest on a fresh machine (a cold Go build, cached by version
# afterwards); build them in the background while Docker and the images are prepared.
sim_log=$(mktemp)
phase "sim cluster binaries: building in the background (cached by version)"
( bash sim/build.sh 2>&1 | sed -u 's/^/[sim build] /' | tee "$sim_log" >&2 ) &
sim_pid=$!
# The kind test bed (node image, kind, Flux and registry images; testbed/kind/) waits for the
# Docker engine and for the sim binaries it reuses, then builds what its cache lacks.
kind_log=$(mktemp)
kind_env=$(mktemp)
phase "kind test bed: building in the background (cached by recipe)"
( bash testbed/kind/build.sh 2> >(sed -u 's/^/[kind build] /' | tee "$kind_log" >&2) >"$kind_env" ) &
kind_pid=$!
trap 'kill "$sim_pid" "$kind_pid" 2>/dev/null || true' EXIT

phase "Docker engine"
bash scripts/ensure-docker.sh
done_phase

phase "test images"
# One image per server the catalogue's kinds run, each exported as DEVENV_TEST_<NAME>_IMAGE.
for image in mariadb postgres redis opensearch s3proxy elasticmq moto; do
    var=DEVENV_TEST_$(tr 'a-z' 'A-Z' <<<"$image")_IMAGE
    image_start=$(date +%s)
    reference=$(bash scripts/build-test-image.sh "$image")
    export "$var=$reference"
    echo "[test] $image image: $reference ($(($(date +%s) - image_start))s)" >&2
done
done_phase


phase "lint: cargo fmt --check, cargo clippy"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
done_phase

phase "build"
cargo build --all-targets --quiet
done_phase

# The tiers that need neither cluster run while the sim and kind builds go on (`cli` runs
# `plan` with the sim profile, which needs the sim binaries).
early_tiers=(docker catalogue)
phase "tests while the cluster builds run: unit, ${early_tiers[*]}"
early_args=(--lib --bins)
for tier in "${early_tiers[@]}"; do early_args+=(--test "$tier"); done
cargo test --all-features "${early_args[@]}" -- "${cargo_args[@]}"
cargo test --all-features --doc --quiet
done_phase

phase "waiting for the sim cluster binaries"
if ! wait "$sim_pid"; then
    echo "[test] the sim build failed; its output is above and in $sim_log" >&2
    exit 1
fi
done_phase

# The tiers on the sim cluster, and every other tier not run above (each tests/*.rs, so a new
# tier is never left out), run while the kind test bed may still be building; its Go builds
# run at a lower priority.
late_tiers=()
for file in tests/*.rs; do
    tier=$(basename "$file" .rs)
    [[ " ${early_tiers[*]} kind " == *" $tier "* ]] || late_tiers+=("$tier")
done
phase "tests: ${late_tiers[*]}"
late_args=()
for tier in "${late_tiers[@]}"; do late_args+=(--test "$tier"); done
cargo test --all-features "${late_args[@]}" -- "${cargo_args[@]}"
done_phase

phase "waiting for the kind test bed"
if ! wait "$kind_pid"; then
    echo "[test] the kind test bed build failed; its output is above and in $kind_log" >&2
    exit 1
fi
trap - EXIT
# DEVENV_KIND_NODE_IMAGE, DEVENV_KIND_BIN, … for the kind tier.
set -a
# shellcheck disable=SC1090
source "$kind_env"
set +a
done_phase

phase "tests: kind"
cargo test --all-features --test kind -- "${cargo_args[@]}"
done_phase

printf '\n[test] all tiers passed in %ss\n' "$(($(date +%s) - start))" >&2
