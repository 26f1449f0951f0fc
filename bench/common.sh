# Sourced by bench/server.sh, bench/nts.sh and bench/soak.sh (from the
# repository's root): builds the release binaries and names them, the CPUs
# the server and the load generator are pinned to, a scratch directory
# ($WORK), and the server under test ($SERVER_PID) and a sampler
# ($SAMPLER_PID), each killed on exit if set; stop_server; readings from
# /proc and from ntp-loadgen's report line.

SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}

cargo build --release --quiet -p ntp-daemon -p ntp-tools --bins
TARGET=${CARGO_TARGET_DIR:-target}/release
NTPD_SIM=$TARGET/ntpd-sim
LOADGEN=$TARGET/ntp-loadgen
CHRONYD=$(command -v chronyd || echo /usr/sbin/chronyd)

WORK=$(mktemp -d)
SERVER_PID=
SAMPLER_PID=
bench_cleanup() {
    # The sampler's own sleep too; then wait, so nothing still writes in $WORK.
    if [ -n "$SAMPLER_PID" ]; then pkill -P "$SAMPLER_PID" 2>/dev/null || true; fi
    for pid in $SAMPLER_PID $SERVER_PID; do kill "$pid" 2>/dev/null || true; done
    for pid in $SAMPLER_PID $SERVER_PID; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap bench_cleanup EXIT

# CPU time (user + system, clock ticks) process $1 has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Resident and peak resident memory of process $1, kB.
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# Stops the server under test and waits for it to exit.
stop_server() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# The responses per second of an ntp-loadgen report line ($1).
responses_per_s() { echo "$1" | sed 's/.*: \([0-9]*\) responses\/s.*/\1/'; }

# Waits until an NTP server answers on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 100); do
        if "$LOADGEN" run --server "127.0.0.1:$1" --duration 0.05 --warmup 0 --sockets 1 --window 1 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    return 1
}
