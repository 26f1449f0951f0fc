#!/usr/bin/env bash
# Bounded fuzzing of the three parsers that face the network: `decode`
# (Packet::decode, re-encoding what it accepts), `respond` (the server's
# decision for any datagram) and `reply` (the client's handling of replies,
# through the synchronizer). Seeds each corpus from shared/vectors (a copy is
# in ../tests/data) and from this project's own packets, then runs each
# target for SECONDS (default 30). Exits non-zero if any target crashes; the
# crashing input is left in fuzz/artifacts/<target>/.
#
#   bash crates/ntp-proto/fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (installed here if missing). Only a stable toolchain is
# assumed: RUSTC_BOOTSTRAP=1 lets it use the sanitizer flags cargo-fuzz needs.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET=${1:-30}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(decode respond reply)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet
fi

# Our own packets: an ntp-query request, an ntpd-sim reply, a DENY kiss, a
# request with an extension field, and one with an extension field and a MAC.
OWN=(
    23000000000000000000000000000000000000000000000000000000000000000000000000000000938f076fc2e2223c
    240100e800000000000000034c4f434ceeabb2937f2fbc4e938f076fc2e2223ceeabb295ac86388feeabb295ac8f298b
    e4000000000000000000000044454e590000000000000000938f076fc2e2223c938f076fc2e2223c938f076fc2e2223c
    23000000000000000000000000000000000000000000000000000000000000000000000000000000938f076fc2e2223c01040020000000000000000000000000000000000000000000000000000000000000
    23000000000000000000000000000000000000000000000000000000000000000000000000000000938f076fc2e2223c0104001000000000000000000000000000000001000102030405060708090a0b0c0d0e0f
)
VECTORS=$(sed -n 's/.*"hex": "\([0-9a-f]*\)".*/\1/p' ../tests/data/chrony-4.3-loopback.jsonl)

seed() { # target hex [suffix-hex]
    mkdir -p "corpus/$1"
    local hex=$2${3:-}
    printf "$(echo "$hex" | sed 's/../\\x&/g')" > "corpus/$1/seed-${hex:0:16}-${#hex}-$(echo "$hex" | cksum | cut -d' ' -f1)"
}
for hex in $VECTORS "${OWN[@]}"; do
    seed decode "$hex"
    seed respond "$hex"
    # reply's records: 48 bytes of reply, then upstream index, echo flag,
    # delay (ms) and seconds to the next record, padded to 56 bytes.
    [ ${#hex} -ge 96 ] && seed reply "${hex:0:96}" 0101010400000000
done

status=0
for target in "${TARGETS[@]}"; do
    echo "== fuzz $target for ${SECONDS_PER_TARGET}s"
    if ! cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$SECONDS_PER_TARGET" \
        -max_len=1100 -print_final_stats=1 2> "fuzz-$target.log"; then
        status=1
        tail -40 "fuzz-$target.log"
    fi
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "fuzz-$target.log" || true
    rm -f "fuzz-$target.log"
done
exit $status
