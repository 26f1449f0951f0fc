#!/usr/bin/env bash
# Server throughput and latency, side by side: ntpd-sim, chronyd (-x, local
# stratum 1, cmdport 0) and a trivial batching UDP responder, each pinned to
# one core with the load generator (ntp-loadgen) pinned to the other.
#
#   bash bench/server.sh [SECONDS]      (default 5 s per run)
#
# Environment: SERVER_CPU (0), LOADGEN_CPU (1), SOCKETS (4), WINDOW (16),
# RATE (20000, the open-loop run), BASE_PORT (12400), ROUNDS (1: how many
# times the three servers are measured, interleaved, against background noise),
# BASELINE (another ntpd-sim binary, e.g. a build of an earlier commit,
# measured beside this one in every round as "baseline").
# Nothing here touches the system clock: chronyd runs with -x.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-5}
SOCKETS=${SOCKETS:-4}
WINDOW=${WINDOW:-16}
RATE=${RATE:-20000}
BASE_PORT=${BASE_PORT:-12400}
ROUNDS=${ROUNDS:-1}
source bench/common.sh

load() { # label port
    local before after ticks line rps
    before=$(cpu_ticks "$SERVER_PID")
    line=$(taskset -c "$LOADGEN_CPU" "$LOADGEN" run --server "127.0.0.1:$2" --label "$1" \
        --sockets "$SOCKETS" --window "$WINDOW" --duration "$DURATION" --warmup 1)
    after=$(cpu_ticks "$SERVER_PID")
    echo "$line"
    ticks=$(getconf CLK_TCK)
    rps=$(responses_per_s "$line")
    # Warm-up included on both sides: the server's share of its core under
    # full load, and its CPU time per response (less sensitive to noise).
    awk -v l="$1" -v t=$((after - before)) -v hz="$ticks" -v d=$((DURATION + 1)) -v r="$rps" 'BEGIN {
        printf "%s: server CPU during the closed-loop run: %.0f%% of a core, %.2f us per response\n",
            l, 100 * t / hz / d, (r > 0 ? 1e6 * t / hz / d / r : 0) }'
    taskset -c "$LOADGEN_CPU" "$LOADGEN" run --server "127.0.0.1:$2" --label "$1" \
        --sockets "$SOCKETS" --rate "$RATE" --duration "$DURATION"
}

echo "# $(nproc) cores, $(uname -r); server on CPU $SERVER_CPU, ntp-loadgen on CPU $LOADGEN_CPU; ${DURATION}s per run"

for ROUND in $(seq "$ROUNDS"); do
    echo "## round $ROUND"
    PORT=$((BASE_PORT))
    taskset -c "$SERVER_CPU" "$NTPD_SIM" serve --listen "127.0.0.1:$PORT" --log-level warn &
    SERVER_PID=$!
    wait_port "$PORT"
    load ntpd-sim "$PORT"
    echo "ntpd-sim: peak RSS $(peak_rss_kb "$SERVER_PID") kB"
    stop_server

    if [ -n "${BASELINE:-}" ]; then
        PORT=$((BASE_PORT + 3))
        taskset -c "$SERVER_CPU" "$BASELINE" serve --listen "127.0.0.1:$PORT" --log-level warn &
        SERVER_PID=$!
        wait_port "$PORT"
        load baseline "$PORT"
        echo "baseline: peak RSS $(peak_rss_kb "$SERVER_PID") kB ($BASELINE)"
        stop_server
    fi

    PORT=$((BASE_PORT + 1))
    printf 'port %s\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 1\ncmdport 0\npidfile %s\n' \
        "$PORT" "$WORK/chronyd.pid" > "$WORK/chrony.conf"
    taskset -c "$SERVER_CPU" "$CHRONYD" -x -u root -d -f "$WORK/chrony.conf" >"$WORK/chronyd.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$PORT"
    load chronyd "$PORT"
    echo "chronyd: peak RSS $(peak_rss_kb "$SERVER_PID") kB"
    stop_server

    PORT=$((BASE_PORT + 2))
    taskset -c "$SERVER_CPU" "$LOADGEN" respond --listen "127.0.0.1:$PORT" &
    SERVER_PID=$!
    wait_port "$PORT"
    load trivial "$PORT"
    echo "trivial: peak RSS $(peak_rss_kb "$SERVER_PID") kB (same binary as the load generator)"
    stop_server
done
