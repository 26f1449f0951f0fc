#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test in the workspace
# (unit, property, known-answer, and end-to-end against real peers).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
