#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test in the workspace
# (unit, property, known-answer, simulation, and end-to-end against real
# peers), the docker-compose stratum chain (docs/compose.md), and a bounded
# fuzz run of the network-facing parsers (a minute a target; a crash fails).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
bash tests/compose.sh
bash crates/ntp-proto/fuzz/run.sh 60
