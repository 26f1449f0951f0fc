#!/usr/bin/env bash
# Soak, side by side: ntpd-sim, then chronyd (-x, local stratum 1, cmdport
# 0), each for SECONDS (default 600) at half its own maximum rate, with bad
# datagrams mixed in (one for every two requests: truncated, wrong mode,
# wrong version, control queries, zero transmit, malformed extension).
# Reports for each the share of good requests answered (target 100%), its
# RSS at start, every minute and at the end (target: flat), and its CPU
# time per reply. Server and load generator each pinned to a core.
#
#   bash bench/soak.sh [SECONDS]
#
# Environment: SERVERS ("ntpd-sim chronyd"), SERVER_CPU (0), LOADGEN_CPU (1),
# SOCKETS (4), BAD_RATIO (0.5), PORT (12450), RATE (requests/s; default half
# each server's maximum, which is measured first, closed loop, 5 s: on a
# machine shared with other work the maximum of a quiet moment can be far
# more than the server later gets), RECEIVE_BUFFER (bytes, for ntpd-sim's and
# the generator's sockets; default 64 MiB, about a second of this traffic:
# run as root, or it is capped at net.core.rmem_max; chronyd has no such
# setting and keeps the kernel's default). chronyd never touches the clock.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-600}
SERVERS=${SERVERS:-ntpd-sim chronyd}
SOCKETS=${SOCKETS:-4}
BAD_RATIO=${BAD_RATIO:-0.5}
PORT=${PORT:-12450}
RECEIVE_BUFFER=${RECEIVE_BUFFER:-67108864}
source bench/common.sh

# Datagrams the kernel dropped for want of receive buffer, on any UDP socket
# (the server's or the generator's): where lost requests went.
udp_receive_buffer_errors() { awk '/^Udp:/ { if (h) { print $6; exit } h = 1 }' /proc/net/snmp; }
# Datagrams dropped at the server's own socket since it opened (the last
# column of /proc/net/udp).
server_socket_drops() { awk -v p=":$(printf '%04X' "$PORT")" '$2 ~ p"$" { print $NF }' /proc/net/udp; }

start_server() { # name
    case $1 in
    ntpd-sim)
        taskset -c "$SERVER_CPU" "$NTPD_SIM" serve --listen "127.0.0.1:$PORT" --log-level warn \
            --receive-buffer "$RECEIVE_BUFFER" &
        ;;
    chronyd)
        printf 'port %s\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 1\ncmdport 0\npidfile %s\n' \
            "$PORT" "$WORK/chronyd.pid" > "$WORK/chrony.conf"
        taskset -c "$SERVER_CPU" "$CHRONYD" -x -u root -d -f "$WORK/chrony.conf" >"$WORK/chronyd.log" 2>&1 &
        ;;
    *) echo "unknown server $1 (ntpd-sim or chronyd)" >&2; exit 2 ;;
    esac
    SERVER_PID=$!
    wait_port "$PORT"
}

soak() { # name
    start_server "$1"
    echo "## $1"
    # What the kernel granted the server's socket (rb: the doubled figure).
    echo "# receive buffer of the server's socket: $(ss -uamn "sport = :$PORT" | grep -o 'rb[0-9]*' | head -1)"
    local max_line max rate
    max_line=$(taskset -c "$LOADGEN_CPU" "$LOADGEN" run --server "127.0.0.1:$PORT" --label max \
        --receive-buffer "$RECEIVE_BUFFER" --sockets "$SOCKETS" --window 16 --duration 5 --warmup 1)
    echo "$max_line"
    max=$(responses_per_s "$max_line")
    rate=${RATE:-$((max / 2))}
    echo "soak: ${DURATION}s open loop at $rate requests/s (maximum $max) plus $BAD_RATIO bad datagrams per request"

    local rss_start ticks_start drops_start line ticks_end drops_end rss_end sent valid
    rss_start=$(rss_kb "$SERVER_PID")
    ticks_start=$(cpu_ticks "$SERVER_PID")
    drops_start=$(udp_receive_buffer_errors)
    SECONDS=0
    (
        while sleep 60; do
            echo "rss after ${SECONDS}s: $(rss_kb "$SERVER_PID") kB; dropped at the server's socket so far: $(server_socket_drops)"
        done
    ) 2>/dev/null &
    SAMPLER_PID=$!
    line=$(taskset -c "$LOADGEN_CPU" "$LOADGEN" run --server "127.0.0.1:$PORT" --label soak \
        --receive-buffer "$RECEIVE_BUFFER" --sockets "$SOCKETS" --rate "$rate" --bad-ratio "$BAD_RATIO" \
        --duration "$DURATION" --warmup 0)
    ticks_end=$(cpu_ticks "$SERVER_PID")
    drops_end=$(udp_receive_buffer_errors)
    rss_end=$(rss_kb "$SERVER_PID")
    pkill -P "$SAMPLER_PID" 2>/dev/null || true; kill "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
    echo "$line"
    echo "UDP receive buffer errors (host-wide) during the soak: $((drops_end - drops_start));" \
        "dropped at the server's socket since it opened: $(server_socket_drops)"
    sent=$(echo "$line" | sed 's/.*sent \([0-9]*\),.*/\1/')
    valid=$(echo "$line" | sed 's/.*, valid \([0-9]*\),.*/\1/')
    awk -v n="$1" -v s="$sent" -v v="$valid" -v t=$((ticks_end - ticks_start)) -v hz="$(getconf CLK_TCK)" \
        -v r0="$rss_start" -v r1="$rss_end" 'BEGIN {
        printf "%s: answered %.4f%% of good requests (%d of %d); RSS %d kB at start, %d kB at the end; %.2f us CPU per reply\n",
            n, 100 * v / s, v, s, r0, r1, 1e6 * t / hz / v }'
    stop_server
}

echo "# $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ); server on CPU $SERVER_CPU, ntp-loadgen on CPU $LOADGEN_CPU"
echo "# receive buffer asked by ntpd-sim and ntp-loadgen: $RECEIVE_BUFFER"
for server in $SERVERS; do
    soak "$server"
done
