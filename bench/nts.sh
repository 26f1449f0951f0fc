#!/usr/bin/env bash
# NTS requests per second, side by side: ntpd-sim serve and chronyd (-x),
# each an NTS server pinned to one core, loaded by `ntp-loadgen nts` pinned
# to the other (closed loop, every reply authenticated before it counts).
# CPU per response counts the 1 s warm-up too, at the measured rate.
#
#   bash bench/nts.sh [SECONDS]      (default 5 s per run)
#
# Environment: SERVER_CPU (0), LOADGEN_CPU (1), WINDOW (64), ROUNDS (1).
# A throw-away CA is made with openssl in a temp dir. chronyd runs with -x.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-5}
WINDOW=${WINDOW:-64}
ROUNDS=${ROUNDS:-1}
NTP_PORT=12460
KE_PORT=12461
source bench/common.sh

cd "$WORK"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=bench ca" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout s.key -out s.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext
openssl x509 -req -in s.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out s.crt -days 2 -extfile ext 2>/dev/null
cd - >/dev/null

wait_ke() {
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$KE_PORT) 2>/dev/null && return 0
        sleep 0.1
    done
    echo "NTS-KE port $KE_PORT never opened" >&2
    return 1
}

measure() {
    local label=$1
    local before after
    before=$(cpu_ticks "$SERVER_PID")
    taskset -c "$LOADGEN_CPU" "$LOADGEN" nts --ke "localhost:$KE_PORT" --ca-file "$WORK/ca.crt" \
        --window "$WINDOW" --duration "$DURATION" --label "$label" | tee "$WORK/line"
    after=$(cpu_ticks "$SERVER_PID")
    local rate
    rate=$(awk '{for (i = 1; i <= NF; i++) if ($i == "authenticated") print $(i - 1)}' "$WORK/line")
    awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v r="$rate" -v d="$DURATION" \
        'BEGIN { printf "%-10s server CPU %.0f%% of its core, %.2f us CPU per authenticated response\n", "", 100 * t / hz / (d + 1), 1e6 * t / hz / (r * (d + 1)) }'
}

for round in $(seq "$ROUNDS"); do
    echo "# round $round"
    taskset -c "$SERVER_CPU" "$NTPD_SIM" serve --listen "127.0.0.1:$NTP_PORT" --log-level warn \
        --nts-cert "$WORK/s.crt" --nts-key "$WORK/s.key" --nts-listen "127.0.0.1:$KE_PORT" &
    SERVER_PID=$!
    wait_ke
    measure ntpd-sim
    stop_server

    cat > "$WORK/chrony.conf" <<CONF
port $NTP_PORT
bindaddress 127.0.0.1
allow 127.0.0.1
local stratum 1
cmdport 0
pidfile $WORK/chronyd.pid
ntsport $KE_PORT
ntsservercert $WORK/s.crt
ntsserverkey $WORK/s.key
ntsdumpdir $WORK
ntsprocesses 0
CONF
    taskset -c "$SERVER_CPU" "$CHRONYD" -x -u root -d -f "$WORK/chrony.conf" 2>/dev/null &
    SERVER_PID=$!
    wait_ke
    measure chronyd
    stop_server
done
