#!/bin/sh
# The scenario of the leap test in tests/tests/vm_system_clock.rs, run by
# the VM's /init: ntpd-sim --clock system follows an upstream on the host
# (10.0.2.2) that announces a leap second (its leap file, its virtual
# clock put a minute before the leap's midnight with --clock-offset). The
# guest steps to the served time, the daemon arms STA_INS on the leap's
# last day and the kernel inserts the second at midnight: CLOCK_REALTIME
# goes back 1 s, once. Meanwhile, the lock that keeps a second
# `--clock system` off the clock: a second one refused, a virtual-clock
# one not, `--force` let through, and the lock gone with a killed holder.
# Settings from the kernel command line: vm.upstream=IP:PORT, vm.leap=UNIX
# (the leap's midnight), vm.after=S (watched past it), vm.limit=S (uptime
# at which the watch stops anyway).
upstream=10.0.2.2:123 leap=0 after=15 limit=150
for word in $(cat /proc/cmdline); do
    case $word in
        vm.upstream=*) upstream=${word#*=} ;;
        vm.leap=*) leap=${word#*=} ;;
        vm.after=*) after=${word#*=} ;;
        vm.limit=*) limit=${word#*=} ;;
    esac
done

# The kernel's status (STA_INS is 16, STA_UNSYNC 64) and its leap state
# (adjtimex's return value: 1 TIME_INS, 3 TIME_OOP, 4 TIME_WAIT).
kernel() {
    adjtimex | awk '/status:/ {s=$2} /return value/ {r=$3} END {printf "status=%s time_state=%s", s, r}'
}

uptime_s() {
    cut -d' ' -f1 /proc/uptime | cut -d. -f1
}

# runs_a_while LOG COMMAND...: a start that must not be refused: the
# command in the background (output to LOG), `running` set to yes if it
# still runs 2 s later, then stopped.
runs_a_while() {
    log=$1
    shift
    "$@" > "$log" 2>&1 &
    started=$!
    sleep 2
    running=no
    kill -0 "$started" 2>/dev/null && running=yes
    kill "$started"
    wait "$started"
}

# check NAME COMMAND...: a start that must be refused: its exit code and
# its last line.
check() {
    name=$1
    shift
    # Bounded: a start that is wrongly let through must not hang the test.
    out=$(busybox timeout 10 "$@" 2>&1)
    echo "VM check $name rc=$?: $(echo "$out" | tail -1)"
}

system_clock="--clock system --upstream $upstream --no-control-socket --min-poll 0 --max-poll 1"
ntp-clockwatch --seconds "$limit" --until $((leap + after)) > /tmp/clockwatch 2>&1 &
watcher=$!
ntpd-sim serve $system_clock --listen 0.0.0.0:123 --log-level info --http 127.0.0.1:9123 > /tmp/log 2>&1 &
daemon=$!
echo "VM phase=leap start leap=$leap"

# The lock, while the first one runs: once it holds it (its pid in the
# lock file; a fixed wait could be too short under TCG).
for _ in $(seq 100); do
    [ "$(cat /run/ntpd-sim/system-clock.lock 2>/dev/null)" = "$daemon" ] && break
    sleep 0.1
done
check second-system-clock ntpd-sim serve $system_clock --listen 127.0.0.1:1123
runs_a_while /tmp/log.virtual ntpd-sim serve --upstream "$upstream" --listen 127.0.0.1:1124 --no-control-socket
echo "VM virtual-beside running=$running: $(tail -1 /tmp/log.virtual)"

# The leap: the kernel's view twice a second until `after` seconds past it.
while :; do
    now=$(date +%s)
    echo "VM leapview t=$(cut -d' ' -f1 /proc/uptime) utc=$now from_leap=$((now - leap)) $(kernel)"
    [ "$now" -ge $((leap + after)) ] && break
    [ "$(uptime_s)" -ge "$limit" ] && { echo "VM leap watch stopped at the limit"; break; }
    sleep 0.5
done
wait "$watcher"
grep -iE 'leap|step|error' /tmp/log | head -20 | sed 's/^/VM log phase=leap: /'

echo "VM clockwatch $(cat /tmp/clockwatch)"

# --force lets a second one start (and warn) beside the holder; stopped
# at once.
runs_a_while /tmp/log.forced ntpd-sim serve $system_clock --listen 127.0.0.1:1123 --force
echo "VM forced running=$running warned=$(grep -c 'forced to discipline' /tmp/log.forced)"

# A holder killed outright leaves no lock behind.
kill -9 "$daemon"
wait "$daemon" 2>/dev/null
runs_a_while /tmp/log.after ntpd-sim serve $system_clock --listen 127.0.0.1:1123
echo "VM after-kill9 running=$running refused=$(grep -c 'another ntpd-sim' /tmp/log.after)"
echo "VM phase=leap end $(kernel)"
