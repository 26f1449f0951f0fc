#!/usr/bin/env bash
# Accuracy on loopback, where the truth is known exactly: every process
# reads the same system clock, so the true offset between a client and a
# server that serves it unchanged is zero and every microsecond read is
# error. Side by side in one run:
#
#   clients: ntp-query (basic), ntp-query --interleaved, chronyd (basic),
#            chronyd xleave
#   servers: ntpd-sim serve, chronyd (local stratum 1)
#
# each server restarted RESTARTS times; chronyd clients are judged by their
# own `log measurements` (nanosecond offsets, and whether each exchange was
# interleaved), ntp-query by its JSON. Then the four-tier chain of
# bench/chain.sh on one address (ntpd-sim tiers 2-4 starting +300 s/+50 ppm,
# -120 s/-30 ppm, +5 s), once with basic upstreams and once with `xleave`,
# each tier read by a chronyd xleave client once the chain has settled.
#
#   bash bench/accuracy.sh                 (about 8 minutes)
#
# Environment: RESTARTS (3), SECONDS_PER_RUN (20: chronyd clients log this
# long per server start), QUERIES (10: ntp-query runs per server start),
# SETTLE (90: seconds a chain gets before its tiers are read), BASE_PORT
# (12600), CHAIN (1; 0 leaves the chain out). Nothing here touches the system clock: every chronyd runs -x.
set -euo pipefail
cd "$(dirname "$0")/.."

RESTARTS=${RESTARTS:-3}
RUN=${SECONDS_PER_RUN:-20}
QUERIES=${QUERIES:-10}
SETTLE=${SETTLE:-90}
BASE=${BASE_PORT:-12600}

cargo build --release --quiet -p ntp-daemon -p ntp-client --bins
TARGET=${CARGO_TARGET_DIR:-target}/release
NTPD_SIM=$TARGET/ntpd-sim
NTP_QUERY=$TARGET/ntp-query
CHRONYD=$(command -v chronyd || echo /usr/sbin/chronyd)
WORK=$(mktemp -d)
chmod 700 "$WORK"
# Started from command substitutions (which are subshells), so their pids
# are kept in a file for the clean-up.
STARTED=$WORK/started
: > "$STARTED"
stop() {
    kill "$@" 2>/dev/null || true
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
}
cleanup() {
    # shellcheck disable=SC2046
    stop $(cat "$STARTED")
    rm -rf "$WORK"
}
trap cleanup EXIT

# chronyd as a server on port $1 (local stratum 1), in directory $2.
chrony_server() {
    mkdir -p "$2"
    printf 'port %s\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 1\ncmdport 0\npidfile %s/pid\ndriftfile %s/drift\n' \
        "$1" "$2" "$2" > "$2/chrony.conf"
    "$CHRONYD" -x -d -u root -f "$2/chrony.conf" > "$2/log" 2>&1 &
    echo $! | tee -a "$STARTED"
}

# chronyd as a client of 127.0.0.1:$1 with server options $2, logging its
# measurements into directory $3.
chrony_client() {
    mkdir -p "$3"
    chmod 700 "$3"
    printf 'server 127.0.0.1 port %s iburst minpoll -3 maxpoll -3 %s\nport 0\ncmdport 0\npidfile %s/pid\ndriftfile %s/drift\nlogdir %s\nlog measurements\n' \
        "$1" "$2" "$3" "$3" "$3" > "$3/chrony.conf"
    "$CHRONYD" -x -d -u root -f "$3/chrony.conf" > "$3/log" 2>&1 &
    echo $! | tee -a "$STARTED"
}

ntpd_sim() { # port [args...]
    local port=$1
    shift
    "$NTPD_SIM" serve --listen "127.0.0.1:$port" --no-control-socket "$@" > "$WORK/ntpd-sim-$port.log" 2>&1 &
    echo $! | tee -a "$STARTED"
}

# The python that reduces what was logged: one line per (client, server)
# per run, "offset-median delay-median delay-min interleaved-share count".
reduce_chrony() { # measurements.log
    python3 - "$1" <<'EOF'
import statistics, sys
rows = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 19 and f[0][:1].isdigit():
        rows.append((float(f[11]), float(f[12]), f[-3].endswith("I")))
rows = rows[4:]  # the first exchanges (iburst, the basic one that starts interleaving)
if not rows:
    print("nan nan nan 0 0"); sys.exit()
print(statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows),
      min(r[1] for r in rows), sum(r[2] for r in rows) / len(rows), len(rows))
EOF
}

query_runs() { # port [ntp-query args...] -> one run line like reduce_chrony's
    local port=$1
    shift
    for _ in $(seq "$QUERIES"); do
        "$NTP_QUERY" --json -n 8 -i 0.02 "$@" "127.0.0.1:$port" || true
        sleep 0.2
    done | python3 -c '
import json, statistics, sys
text = sys.stdin.read()
decoder, rows, i = json.JSONDecoder(), [], 0
while i < len(text):
    if text[i].isspace(): i += 1; continue
    obj, i = decoder.raw_decode(text, i)
    s = obj["servers"][0]
    if s.get("offset") is not None:
        rows.append((s["offset"], s["delay"], s.get("mode") == "interleaved"))
if not rows:
    print("nan nan nan 0 0"); sys.exit()
print(statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows),
      min(r[1] for r in rows), sum(r[2] for r in rows) / len(rows), len(rows))'
}

RESULTS=$WORK/results
: > "$RESULTS"
echo "== accuracy matrix: $RESTARTS server starts, chronyd clients ${RUN} s each, ntp-query x$QUERIES =="
port=$BASE
for run in $(seq "$RESTARTS"); do
    for server in ntpd-sim chronyd; do
        port=$((port + 1))
        if [ "$server" = ntpd-sim ]; then
            spid=$(ntpd_sim "$port")
        else
            spid=$(chrony_server "$port" "$WORK/server-$run")
        fi
        sleep 2
        dir=$WORK/run-$run-$server
        basic=$(chrony_client "$port" "" "$dir/basic")
        xleave=$(chrony_client "$port" xleave "$dir/xleave")
        # ntp-query while chronyd logs: the server sees both, as in life.
        echo "ntp-query|$server|$run|$(query_runs "$port")" >> "$RESULTS"
        echo "ntp-query --interleaved|$server|$run|$(query_runs "$port" --interleaved)" >> "$RESULTS"
        sleep "$RUN"
        stop "$basic" "$xleave"
        echo "chronyd|$server|$run|$(reduce_chrony "$dir/basic/measurements.log")" >> "$RESULTS"
        echo "chronyd xleave|$server|$run|$(reduce_chrony "$dir/xleave/measurements.log")" >> "$RESULTS"
        stop "$spid"
        echo "  run $run: $server done"
    done
done

summarize() {
    python3 - "$1" <<'EOF'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    client, server, run, values = line.rstrip("\n").split("|")
    offset, delay, dmin, share, count = values.split()
    runs[(client, server)].append((float(offset), float(delay), float(dmin), float(share), int(count)))
us = lambda s: f"{s * 1e6:+.2f}"
print("| client -> server | offset, median of runs (runs: min .. max) | delay, median (least seen) | interleaved | samples |")
print("|---|---|---|---|---|")
for (client, server), r in runs.items():
    offsets = [x[0] for x in r]
    print(f"| {client} -> {server} | {us(statistics.median(offsets))} µs ({us(min(offsets))} .. {us(max(offsets))}) "
          f"| {statistics.median(x[1] for x in r) * 1e6:.2f} µs ({min(x[2] for x in r) * 1e6:.2f}) "
          f"| {100 * statistics.mean(x[3] for x in r):.0f}% | {sum(x[4] for x in r)} |")
EOF
}
echo
summarize "$RESULTS"

# The chain, on one address: tier N+1 polls tier N. $1: upstream options.
chain() {
    local options=$1 label=$2 b=$3
    local name=${label// /-}
    local pids=()
    pids+=("$(ntpd_sim $((b + 1)))")
    pids+=("$(ntpd_sim $((b + 2)) --upstream "127.0.0.1:$((b + 1)) $options" --clock-offset 300 --clock-drift-ppm 50 --min-poll -1 --max-poll 0)")
    pids+=("$(ntpd_sim $((b + 3)) --upstream "127.0.0.1:$((b + 2)) $options" --clock-offset -120 --clock-drift-ppm -30 --min-poll -1 --max-poll 0)")
    pids+=("$(ntpd_sim $((b + 4)) --upstream "127.0.0.1:$((b + 3)) $options" --clock-offset 5 --min-poll -1 --max-poll 0)")
    sleep "$SETTLE"
    local clients=()
    for tier in 1 2 3 4; do
        clients+=("$(chrony_client $((b + tier)) xleave "$WORK/chain-$name-$tier")")
    done
    sleep "$RUN"
    stop "${clients[@]}"
    for tier in 1 2 3 4; do
        echo "$label|stratum $tier|1|$(reduce_chrony "$WORK/chain-$name-$tier/measurements.log")"
    done
    stop "${pids[@]}"
}

if [ "${CHAIN:-1}" = 0 ]; then exit 0; fi
CHAIN=$WORK/chain
: > "$CHAIN"
echo
echo "== four-tier chain on 127.0.0.1, each tier read by chronyd xleave after ${SETTLE} s =="
chain "" "upstreams basic" $((BASE + 100)) >> "$CHAIN"
chain xleave "upstreams xleave" $((BASE + 110)) >> "$CHAIN"
python3 - "$CHAIN" <<'EOF'
import sys
print("| chain | tier | offset read by chronyd xleave (median) | delay (median) | interleaved |")
print("|---|---|---|---|---|")
for line in open(sys.argv[1]):
    label, tier, _, values = line.rstrip("\n").split("|")
    offset, delay, dmin, share, count = values.split()
    print(f"| {label} | {tier} | {float(offset) * 1e6:+.2f} µs | {float(delay) * 1e6:.2f} µs | {100 * float(share):.0f}% |")
EOF
