#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 60): `storage/fuzz/run-all.sh [seconds]`.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# New inputs go to corpus/<target> (not in git); seeds/<target> and codec.dict are in git.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
for target in $(cargo +nightly fuzz list); do
    echo "== $target (${seconds}s)"
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -dict=codec.dict -max_total_time="$seconds"
done
