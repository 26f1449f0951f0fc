#!/bin/sh
# The scenario of tests/tests/vm_pps.rs, run by the VM's /init (Debian's
# generic kernel: it has the parallel port and pps_parport): a GPS with
# a PPS output, played by ntp-ppsgen (an edge on the emulated parallel
# port's interrupt at the top of every second of the guest's clock, then
# that second's NMEA on TCP), read by a real gpsd, which sends its PPS
# samples to chrony's SOCK socket /run/chrony.pps0.sock and its NMEA
# time to SHM unit 0. ntpd-sim reads both, then chronyd (-x) does in the
# same boot. The guest's clock is the truth, and nothing writes it: the
# served time is measured in the guest with ntp-query.
# Settings from the kernel command line: vm.seconds=S (each phase).
seconds=50
for word in $(cat /proc/cmdline); do
    case $word in
        vm.seconds=*) seconds=${word#*=} ;;
    esac
done

insmod /modules/parport.ko
insmod /modules/parport_pc.ko io=0x378 irq=7
# Assert edges only: qemu's port has no pulse to wait out.
insmod /modules/pps_parport.ko clear_wait=0
dmesg | grep -E 'parport0|pps' | sed 's/^/VM dmesg: /'

ntp-ppsgen --nmea 127.0.0.1:10110 --max-late-us 500 --verbose > /tmp/ppsgen.log 2>&1 &
gen=$!

# gpsd, root: its NMEA receiver first (SHM unit 0), the PPS device, which
# takes its seconds from the receiver's time (SHM unit 1, and the chrony
# socket if it exists when gpsd opens /dev/pps0).
start_gpsd() {
    gpsd -N -n -D 5 -F /run/gpsd.sock tcp://127.0.0.1:10110 /dev/pps0 > /tmp/gpsd.$1 2>&1 &
    gpsd=$!
}

# ntpd-sim's /status (busybox-static's wget crashes in its resolver: plain
# nc, its input held open until the answer is in, or nc may quit first).
get_status() {
    { printf 'GET /status HTTP/1.0\r\n\r\n'; sleep 1; } | nc -w 2 127.0.0.1 9123 2>/dev/null
}

# The guest's view every 2 s: the served time against the guest's clock.
watch_view() {
    while :; do
        offset=$(ntp-query --json -n 1 -t 1 127.0.0.1:123 2>/dev/null | tr ',' '\n' | awk -F: '/"offset"/ {print $2; exit}')
        if [ "$1" = chronyd ]; then
            sys=$(chronyc -h /run/chrony/chronyd.sock -n -c tracking 2>/dev/null | awk -F, '{print "refid=" $2 " stratum=" $3 " system_offset=" $5}')
        else
            sys=$(get_status | tr ',{' '\n\n' |
                awk -F: '{gsub(/[ "]/, "", $2)} /"stratum"/ && !s {s=$2} /"reference_id"/ && !r {r=$2} END {print "stratum=" s " refid=" r}')
        fi
        # The kernel's timestamp of the last edge: its fraction is how late
        # after the second the interrupt was taken.
        edge=$(cat /sys/class/pps/pps0/assert)
        echo "VM view phase=$1 t=$(cut -d' ' -f1 /proc/uptime) served_offset=${offset:-none} $sys assert=$edge"
        sleep 2
    done
}

# run PHASE COMMAND...: the daemon, then gpsd (so the socket exists when
# gpsd opens /dev/pps0), watched for the phase.
run() {
    phase=$1
    shift
    "$@" > /tmp/log.$phase 2>&1 &
    daemon=$!
    sleep 2
    start_gpsd "$phase"
    echo "VM phase=$phase start t=$(cut -d' ' -f1 /proc/uptime)"
    watch_view "$phase" &
    viewer=$!
    sleep "$seconds"
    kill "$viewer" "$gpsd"
    wait "$gpsd"
    if [ "$phase" = chronyd ]; then
        chronyc -h /run/chrony/chronyd.sock -n -c sources 2>/dev/null | sed "s/^/VM sources phase=$phase: /"
        chronyc -h /run/chrony/chronyd.sock -n -c sourcestats 2>/dev/null | sed "s/^/VM sourcestats phase=$phase: /"
        chronyc -h /run/chrony/chronyd.sock -n -c tracking 2>/dev/null | sed "s/^/VM tracking phase=$phase: /"
    else
        body=$(get_status | sed -n '/^{/,$p' | tr -d '\n ')
        echo "VM status phase=$phase: $body"
    fi
    kill "$daemon"
    wait "$daemon"
    echo "VM phase=$phase end"
    grep -iE 'chrony|PPS' /tmp/gpsd.$phase | grep -v 'PPS:/dev/pps0 Assert' | head -12 | sed "s/^/VM gpsd phase=$phase: /"
    grep 'Assert accepted chrony sock @' /tmp/gpsd.$phase | tail -2 | sed "s/^/VM gpsd phase=$phase: /"
    grep -c 'Assert accepted chrony sock @' /tmp/gpsd.$phase | sed "s/^/VM gpsd phase=$phase chrony_samples=/"
    grep -iE "error|warn|refus|select|frequency|step" /tmp/log.$phase | head -10 | sed "s/^/VM log phase=$phase: /"
}

run ntpd-sim ntpd-sim serve --listen 127.0.0.1:123 --min-poll 0 --max-poll 1 --no-control-socket \
    --log-level info --http 127.0.0.1:9123 \
    --refclock shm:0,refid=GPS,delay=0.2,poll=0,noselect \
    --refclock sock:/run/chrony.pps0.sock,refid=PPS,poll=2,lock=GPS,prefer

mkdir -p /run/chrony && chmod 0750 /run/chrony
cat > /tmp/chrony.conf <<CONF
refclock SHM 0 refid GPS poll 0 delay 0.2 noselect
refclock SOCK /run/chrony.pps0.sock refid PPS poll 2 lock GPS prefer
allow 127.0.0.1
port 123
cmdport 0
bindcmdaddress /run/chrony/chronyd.sock
pidfile /run/chronyd.pid
CONF
run chronyd chronyd -x -d -u root -f /tmp/chrony.conf

kill "$gen"
grep '^missed' /tmp/ppsgen.log | head -20 | tr '\n' ' ' | sed 's/^/VM missed: /; s/$/\n/'
awk '/^edge/ {split($3, a, "="); n++; s += a[2]; if (a[2] > m) m = a[2]} /^missed/ {x++}
    END {printf "VM edges count=%d missed=%d mean_late_us=%.1f max_late_us=%d\n", n, x, s / n, m}' /tmp/ppsgen.log
