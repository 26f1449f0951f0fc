#!/usr/bin/env bash
# ntp-query's accuracy and speed against a local chronyd, compared with
# `chronyd -Q` and Python's ntplib (docs/performance.md, "ntp-query accuracy
# and speed"). Loopback only; chronyd runs with -x and never touches the clock.
#
#   bash bench/query.sh [RUNS]        (default 30 runs per client)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-30}
PORT=${PORT:-11230}
# Wall times are hyperfine's (Debian's `hyperfine`); say so before anything runs.
command -v hyperfine >/dev/null || { echo "bench/query.sh needs hyperfine: apt-get install hyperfine" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --quiet -p ntp-client
QUERY=$CARGO_TARGET_DIR/release/ntp-query

DIR=$(mktemp -d)
cat > "$DIR/chrony.conf" <<CONF
port $PORT
bindaddress 127.0.0.1
allow 127.0.0.1
local stratum 1
cmdport 0
pidfile $DIR/chronyd.pid
CONF
chronyd -x -u root -f "$DIR/chrony.conf"
stop() { [ -f "$DIR/chronyd.pid" ] && kill "$(cat "$DIR/chronyd.pid")"; rm -rf "$DIR"; }
trap stop EXIT
for _ in $(seq 50); do [ -s "$DIR/chronyd.pid" ] && break; sleep 0.1; done
sleep 0.5

echo "chronyd $(chronyd -v | head -1 | awk '{print $4}') on 127.0.0.1:$PORT, $RUNS runs each; offsets and delays in microseconds"
echo
printf '%-34s %22s %22s\n' client "offset median [min,max]" "delay median [min,max]"
summary() { # label, then lines of "offset delay" (seconds) on stdin
    /usr/bin/python3 -c '
import statistics, sys
label = sys.argv[1]
rows = [[float(x) * 1e6 for x in line.split()] for line in sys.stdin if line.strip()]
def col(i):
    values = [r[i] for r in rows if len(r) > i]
    if not values:
        return "-"
    return f"{statistics.median(values):+.1f} [{min(values):+.1f},{max(values):+.1f}]"
print(f"{label:<34} {col(0):>22} {col(1):>22}")' "$1"
}
query() { "$QUERY" --json "$@" "127.0.0.1:$PORT" | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)["servers"][0]
print(s["offset"], s["delay"])'; }

for _ in $(seq "$RUNS"); do query -n 1; done | summary "ntp-query -n 1"
for _ in $(seq "$RUNS"); do query; done | summary "ntp-query (4 samples, 0.25 s apart)"
for _ in $(seq "$RUNS"); do query -n 8 -i 0.001; done | summary "ntp-query -n 8 -i 0.001"
for _ in $(seq "$RUNS"); do
    /usr/bin/python3 -c "import ntplib; r = ntplib.NTPClient().request('127.0.0.1', port=$PORT, version=4); print(r.offset, r.delay)"
done | summary "ntplib (one request)"
for _ in $(seq "$RUNS"); do
    chronyd -Q -f /dev/null -t 10 "server 127.0.0.1 port $PORT iburst maxsamples 4" 2>&1 |
        sed -n 's/.*wrong by \([-0-9.]*\) seconds.*/\1/p'
done | summary "chronyd -Q (iburst, 4 samples)"

# chrony's own measurements as a long-running client polling every 0.25 s
# (its last sample, read with `chronyc ntpdata` over a Unix socket).
mkdir -m 770 "$DIR/sock"
cat > "$DIR/client.conf" <<CONF
server 127.0.0.1 port $PORT iburst minpoll -2 maxpoll -2
port 0
cmdport 0
bindcmdaddress $DIR/sock/chronyd.sock
pidfile $DIR/client.pid
CONF
chronyd -x -u root -f "$DIR/client.conf"
sleep 3
for _ in $(seq "$RUNS"); do
    chronyc -h "$DIR/sock/chronyd.sock" ntpdata |
        awk '/^Offset/ {offset = $3} /^Peer delay/ {delay = $4} END {print offset, delay}'
    sleep 0.25
done | summary "chronyd as a client (chronyc ntpdata)"
kill "$(cat "$DIR/client.pid")"

echo
echo "Wall time of one command:"
hyperfine --warmup 3 --runs "$RUNS" --style basic -N \
    "$QUERY -n 1 127.0.0.1:$PORT" \
    "$QUERY 127.0.0.1:$PORT" \
    "/usr/bin/python3 -c \"import ntplib; ntplib.NTPClient().request('127.0.0.1', port=$PORT)\"" \
    "chronyd -Q -f /dev/null -t 10 'server 127.0.0.1 port $PORT iburst maxsamples 4'" 2>&1 |
    grep -E 'Benchmark|Time \(mean|Range'
