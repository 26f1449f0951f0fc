#!/bin/sh
# The scenario of tests/tests/vm_system_clock.rs, run by the VM's /init:
# the guest clock started an hour wrong and 100 ppm fast, then disciplined
# in turn by ntpd-sim --clock system (fresh, then restarted with its drift
# file) and by chronyd, all polling the same upstream on the host's
# loopback (10.0.2.2). The host measures the served time through qemu's
# hostfwd; the guest prints its own view as `VM ...` lines on the console.
# Settings come from the kernel command line: vm.upstream=IP:PORT,
# vm.seconds=S (each fresh phase), vm.restart=S (the restart phase).
upstream=10.0.2.2:123 seconds=60 restart=30
for word in $(cat /proc/cmdline); do
    case $word in
        vm.upstream=*) upstream=${word#*=} ;;
        vm.seconds=*) seconds=${word#*=} ;;
        vm.restart=*) restart=${word#*=} ;;
    esac
done
host=${upstream%:*} port=${upstream##*:}
injected_ppm=100

# Kernel frequency in ppm (tick and frequency offset together), status.
kernel() {
    adjtimex | awk '/freq.adjust/ {f=$3} /tick:/ {t=$3} /status:/ {s=$2} /maxerror/ {m=$2}
        END {printf "kernel_ppm=%.3f status=%s maxerror_us=%s", (t-10000)*100 + f/65536, s, m}'
}

# The guest's view every second while a daemon runs: the kernel's state
# and the upstream's offset as ntp-query in the guest sees it.
watch_view() {
    while :; do
        offset=$(ntp-query --json -n 1 -t 1 "$upstream" 2>/dev/null | tr ',' '\n' | awk -F: '/"offset"/ {print $2; exit}')
        # The learned frequency, without the slew in progress: ntpd-sim's
        # from its /status (busybox-static's wget crashes in its resolver:
        # plain nc instead), on the kernel frequency it started from;
        # chronyd's from `chronyc tracking` ("X ppm fast": the clock's own
        # error, which a kernel frequency of -X corrects).
        if [ "$1" = chronyd ]; then
            learned=$(chronyc -h /run/chrony/chronyd.sock -n tracking 2>/dev/null | awk '/^Frequency/ {print ($5 == "fast") ? -$3 : $3}')
            total=$learned
        else
            learned=$(printf 'GET /status HTTP/1.0\r\n\r\n' | nc -w 2 127.0.0.1 9123 2>/dev/null | tr ',' '\n' |
                awk -F: '/"frequency_ppm"/ {print $2; exit}')
            total=$(echo "$learned" | awk -v base="$base_ppm" 'NF {printf "%.3f", base + $1}')
        fi
        echo "VM view phase=$1 t=$(cut -d' ' -f1 /proc/uptime) $(kernel) upstream_offset=${offset:-none} learned_ppm=${learned:-none} frequency_ppm=${total:-none}"
        sleep 1
    done
}

# An hour ahead and 100 ppm fast: the errors each fresh phase starts from.
inject() {
    now=$(date +%s)
    date -s "@$((now + 3600))" >/dev/null
    adjtimex -f $((injected_ppm * 65536)) >/dev/null
    echo "VM injected phase=$1 offset_s=3600 frequency_ppm=$injected_ppm $(kernel)"
}

# check NAME COMMAND...: a start that must be refused, with nothing
# touched: its exit code, its last line, the kernel's state before and after.
check() {
    name=$1
    shift
    before=$(kernel)
    out=$("$@" 2>&1)
    rc=$?
    after=$(kernel)
    same=no
    [ "$before" = "$after" ] && same=yes
    echo "VM check $name rc=$rc kernel_unchanged=$same: $(echo "$out" | tail -1)"
}

# run PHASE SECONDS COMMAND...: the command (a program: its pid is the
# daemon's) in the background, watched by ntp-clockwatch and the view
# loop, stopped (and waited for) after SECONDS.
run() {
    phase=$1 span=$2
    shift 2
    ntp-clockwatch --seconds "$span" > /tmp/clockwatch.$phase 2>&1 &
    watcher=$!
    "$@" > /tmp/log.$phase 2>&1 &
    daemon=$!
    echo "VM phase=$phase start"
    watch_view "$phase" &
    viewer=$!
    if [ "$phase" = chronyd ]; then
        sleep 3
        check other-daemon ntpd-sim serve $system_clock --listen 127.0.0.1:1123
    fi
    sleep "$span"
    kill "$daemon" "$viewer"
    wait "$daemon" "$watcher"
    echo "VM phase=$phase end $(kernel) $(cat /tmp/clockwatch.$phase)"
    grep -iE 'step|error|refus|synchron|System clock|privileges' /tmp/log.$phase | head -20 | sed "s/^/VM log phase=$phase: /"
    # Each daemon's own record of its samples and updates, for reading
    # after the run (ntpd-sim's --stats-dir, chronyd's logdir).
    for f in /tmp/stats.$phase/*; do
        [ -f "$f" ] && grep -v '^#' "$f" | sed "s/^/VM stats phase=$phase file=$(basename "$f"): /"
    done
}

mkdir -p /var/lib/ntpd-sim
chown 100:100 /var/lib/ntpd-sim
drift=/var/lib/ntpd-sim/drift
system_clock="--clock system --upstream $upstream --no-control-socket"
# Refused before anything starts: outside the VM (the variable unset),
# without CAP_SYS_TIME (as a user without it).
check guard env -u NTPD_SIM_TEST_VM ntpd-sim serve $system_clock --listen 127.0.0.1:1123
check capability su -s /bin/sh _chrony -c "ntpd-sim serve $system_clock --listen 127.0.0.1:1123"

set -- --clock system --upstream "$upstream" --listen 0.0.0.0:123 --min-poll 0 --max-poll 1 \
    --drift-file "$drift" --no-control-socket --log-level info --http 127.0.0.1:9123

inject ntpd-sim
base_ppm=$injected_ppm
run ntpd-sim "$seconds" ntpd-sim serve "$@" --stats-dir /tmp/stats.ntpd-sim
echo "VM drift phase=ntpd-sim ppm=$(cat $drift)"

# A restart: the oscillator as at boot (100 ppm fast), the drift file
# read; started as root, it binds port 123 and then becomes _chrony,
# keeping CAP_SYS_TIME.
adjtimex -f $((injected_ppm * 65536)) >/dev/null
base_ppm=$(cat $drift)
mkdir -p /tmp/stats.restart && chown 100:100 /tmp/stats.restart
run restart "$restart" ntpd-sim serve "$@" --user _chrony --stats-dir /tmp/stats.restart
echo "VM drift phase=restart ppm=$(cat $drift)"

inject chronyd
mkdir -p /run/chrony && chmod 0750 /run/chrony
cat > /tmp/chrony.conf <<CONF
server $host port $port iburst minpoll 0 maxpoll 1
makestep 0.128 3
driftfile /var/lib/chrony/drift
allow 10.0.2.0/24
port 123
cmdport 0
bindcmdaddress /run/chrony/chronyd.sock
pidfile /run/chronyd.pid
logdir /tmp/stats.chronyd
log measurements statistics tracking
CONF
mkdir -p /tmp/stats.chronyd
run chronyd "$seconds" chronyd -d -u root -f /tmp/chrony.conf
