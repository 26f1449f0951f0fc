#!/usr/bin/env bash
# Convergence and steady-state error of a four-tier stratum chain, ntpd-sim
# and chronyd side by side in the same run, on loopback.
#
#   bash bench/chain.sh [SECONDS]       (default 180 s of observation)
#
# ntpd-sim: stratum 1 (the host clock) -> 2 (+300 s, +50 ppm) -> 3 (-120 s,
# -30 ppm) -> 4 (+5 s), on 127.0.0.1-4, polls 1-4 s.
# chronyd (-x: it never touches the host clock): the same topology on
# 127.0.1.1-4 with `local stratum 1` at the top, minpoll 0 maxpoll 2. chronyd
# cannot start with a wrong clock, so its tiers start right: its "time to
# 1 ms" is its time to the first synchronization.
#
# Every tier of both chains is queried with `ntp-query --json -n 3` (the
# lowest-delay of three requests 20 ms apart, as a client's filter would
# take it, so one descheduled reply on a busy machine is not read as clock
# error) every half second; the offsets are against the host clock, which is true time
# here, and carry ntp-query's own few-microsecond loopback bias equally for
# both. Per stratum: time until it stayed within 1 ms, then RMS and maximum
# |offset| over the rest of the run, and over its second half alone (steady state).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-180}
BASE=${BASE_PORT:-12500}

cargo build --release --quiet -p ntp-daemon -p ntp-client --bins
TARGET=${CARGO_TARGET_DIR:-target}/release
CHRONYD=$(command -v chronyd || echo /usr/sbin/chronyd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for f in "$WORK"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

ours=(); theirs=()
offsets=("0" "300" "-120" "5"); drifts=("0" "50" "-30" "0")
for i in 0 1 2 3; do
    ip="127.0.0.$((i + 1))"; port=$((BASE + i))
    args=(serve --listen "$ip:$port" --log-level warn --clock-offset "${offsets[$i]}" --clock-drift-ppm "${drifts[$i]}")
    if [ "$i" -gt 0 ]; then args+=(--upstream "127.0.0.$i:$((BASE + i - 1))" --min-poll 0 --max-poll 2); fi
    "$TARGET/ntpd-sim" "${args[@]}" 2>>"$WORK/ntpd-sim.log" &
    PIDS+=($!)
    ours+=("$ip:$port")

    cip="127.0.1.$((i + 1))"; cport=$((BASE + 10 + i))
    {
        echo "port $cport"; echo "bindaddress $cip"; echo "allow 127.0.0.0/8"; echo "cmdport 0"
        echo "pidfile $WORK/chrony$i.pid"
        if [ "$i" -eq 0 ]; then echo "local stratum 1"
        else echo "server 127.0.1.$i port $((BASE + 10 + i - 1)) iburst minpoll 0 maxpoll 2"; fi
    } > "$WORK/chrony$i.conf"
    "$CHRONYD" -x -u root -f "$WORK/chrony$i.conf"
    theirs+=("$cip:$cport")
done

echo "observing for $DURATION s..." >&2
start=$(date +%s.%N)
end=$(echo "$start + $DURATION" | bc)
while [ "$(echo "$(date +%s.%N) < $end" | bc)" = 1 ]; do
    now=$(echo "$(date +%s.%N) - $start" | bc)
    "$TARGET/ntp-query" --json -n 3 -i 0.02 -t 0.4 "${ours[@]}" "${theirs[@]}" 2>/dev/null \
        | python3 -c "import json,sys; [print('$now', s['address'], s['stratum'], s['offset']) for s in json.load(sys.stdin)['servers']]" \
        >> "$WORK/samples.txt" || true
    sleep 0.5
done

python3 - "$WORK/samples.txt" "${ours[*]}" "${theirs[*]}" <<'EOF'
import sys, math
samples = [l.split() for l in open(sys.argv[1])]
chains = {"ntpd-sim": sys.argv[2].split(), "chronyd": sys.argv[3].split()}
print("| stratum | implementation | within 1 ms after | RMS after | max after | RMS, second half | max, second half |")
print("|---|---|---|---|---|---|---|")
for tier in range(4):
    for name, addresses in chains.items():
        rows = [(float(t), s, o) for t, a, s, o in samples if a == addresses[tier]]
        good = lambda r: r[1] == str(tier + 1) and r[2] != "None" and abs(float(r[2])) < 1e-3
        bad = [i for i, r in enumerate(rows) if not good(r)]
        settled = 0 if not bad else bad[-1] + 1
        if settled >= len(rows):
            print(f"| {tier + 1} | {name} | never | - | - | - | - |")
            continue
        after = [float(r[2]) for r in rows[settled:]]
        rms = math.sqrt(sum(o * o for o in after) / len(after))
        worst = max(abs(o) for o in after)
        half = [float(r[2]) for r in rows[len(rows) // 2:] if r[2] != "None"]
        rms2 = math.sqrt(sum(o * o for o in half) / len(half))
        worst2 = max(abs(o) for o in half)
        print(f"| {tier + 1} | {name} | {rows[settled][0]:.1f} s | {rms * 1e6:.1f} µs | {worst * 1e6:.1f} µs "
              f"| {rms2 * 1e6:.1f} µs | {worst2 * 1e6:.1f} µs |")
EOF
