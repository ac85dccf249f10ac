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

phase "Docker engine"
bash scripts/ensure-docker.sh
done_phase

phase "test images"
DEVENV_TEST_MARIADB_IMAGE=$(bash scripts/build-test-image.sh mariadb)
export DEVENV_TEST_MARIADB_IMAGE
echo "[test] mariadb image: $DEVENV_TEST_MARIADB_IMAGE" >&2
done_phase

if [ -f sim/build.sh ]; then
    phase "sim cluster binaries (cached by version; a cold build takes a while)"
    bash sim/build.sh
    done_phase
fi

phase "lint: cargo fmt --check, cargo clippy"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
done_phase

phase "build"
cargo build --all-targets --quiet
done_phase

phase "tests: unit, cli, docker, sim"
cargo test --all-features -- "${cargo_args[@]}"
done_phase

printf '\n[test] all tiers passed in %ss\n' "$(($(date +%s) - start))" >&2
