#!/usr/bin/env bash
# A GPS stratum 1, ntpd-sim and chronyd side by side, reading one real gpsd.
#
#   bash bench/refclock.sh [SECONDS]       (default 120 s of observation)
#
# tests/nmea_receiver.py plays a GPS receiver (RMC/GGA/ZDA over TCP at the
# top of each second of the host's clock); one gpsd (-N -n, as root) reads
# it twice and writes SHM units 0 and 1 with the same samples. ntpd-sim
# reads unit 0, chronyd (-x: it never touches the host clock) unit 1, both
# with poll 0 and delay 0.2 and no offset. Every second: ntpd-sim's served
# clock minus the host's (/status host_offset) and chronyd's (chronyc
# tracking, System time). The host clock is true time here, so both carry
# gpsd's NMEA lateness. Printed: median, RMS and max |error| over the
# second half of the run. The SHM segments it made are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-120}
BASE=${BASE_PORT:-12600}

cargo build --release --quiet -p ntp-daemon --bins
TARGET=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
chmod 700 "$WORK"
PIDS=()
SEGMENTS_BEFORE=$(ipcs -m | awk '/^0x/{print $1}')
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$WORK/chronyd.pid" ] && kill "$(cat "$WORK/chronyd.pid")" 2>/dev/null || true
    sleep 0.5
    for key in $(ipcs -m | awk '/^0x/{print $1}'); do
        grep -qx "$key" <<<"$SEGMENTS_BEFORE" || ipcrm -M "$key" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

/usr/bin/python3 tests/nmea_receiver.py 0 0 "$WORK/silence" >"$WORK/receiver.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do grep -q listening "$WORK/receiver.log" && break; sleep 0.1; done
NMEA=$(awk '/listening/{print $2}' "$WORK/receiver.log")
gpsd -N -n -F "$WORK/gpsd.sock" -S $((BASE + 2)) "tcp://127.0.0.1:$NMEA" "tcp://127.0.0.1:$NMEA" >"$WORK/gpsd.log" 2>&1 &
PIDS+=($!)
"$TARGET/ntpd-sim" serve --listen "127.0.0.1:$BASE" --http "127.0.0.1:$((BASE + 1))" --no-control-socket \
    --min-poll 0 --max-poll 2 --refclock shm:0,poll=0,delay=0.2 >"$WORK/ntpd-sim.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/chrony.conf" <<CONF
port $((BASE + 3))
bindaddress 127.0.0.1
cmdport 0
bindcmdaddress $WORK/chronyd.sock
pidfile $WORK/chronyd.pid
refclock SHM 1 refid GPS poll 0 delay 0.2
CONF
chronyd -x -u root -f "$WORK/chrony.conf"

echo "# $(nproc) cores, $(uname -r), $(date -u +%FT%TZ), ${DURATION}s; gpsd $(gpsd -V | awk '{print $2}'), $(chronyd -v | head -1)"
end=$((SECONDS + DURATION))
while [ $SECONDS -lt $end ]; do
    ours=$(curl -s "127.0.0.1:$((BASE + 1))/status" | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin)["system"]; print(s["host_offset"] if s["stratum"] == 1 else "nan")' 2>/dev/null || echo nan)
    theirs=$(chronyc -h "$WORK/chronyd.sock" -n -c tracking 2>/dev/null | awk -F, '$3 == 1 {print $5} $3 != 1 {print "nan"}')
    echo "$SECONDS ${ours:-nan} ${theirs:-nan}" >>"$WORK/samples"
    sleep 1
done
/usr/bin/python3 - "$WORK/samples" "$DURATION" <<'PY'
import math, sys
rows = [line.split() for line in open(sys.argv[1])]
start = rows[0][0] and int(rows[0][0])
half = [r for r in rows if int(r[0]) - start >= int(sys.argv[2]) / 2]
for name, col in (("ntpd-sim", 1), ("chronyd", 2)):
    v = [float(r[col]) for r in half if r[col] != "nan"]
    if not v:
        print(f"{name}: never synchronized"); continue
    v.sort()
    rms = math.sqrt(sum(x * x for x in v) / len(v))
    print(f"{name:9} clock - host, second half: median {v[len(v)//2]*1e6:+8.1f} us  rms {rms*1e6:7.1f} us  max |{max(abs(x) for x in v)*1e6:7.1f}| us  ({len(v)} samples)")
PY
