#!/bin/sh
# The scenario of the interop matrix's VM pairs (tests/interop/vm_peers.rs),
# run by the VM's /init: clients that adjust the clock they run on, each
# following ntpd-sim on the host side (10.0.2.2, port 123: qemu runs in a
# network namespace of the test's own, whose loopback 10.0.2.2 is). First
# chronyd -q steps the guest clock onto ntpd-sim's (the guest starts from
# the RTC, a second's resolution), so the truth of every offset below is
# zero; then, one at a time:
#   systemd-timesyncd, until its first synchronization (it needs neither
#     systemd as PID 1 nor D-Bus, only its user and directories);
#   OpenNTPD, until `ntpctl` says "clock synced", then serving (`listen
#     on *`) for vm.serve seconds while the host queries it through the
#     forwarded port.
# What each shows comes back as `VM ...` lines on the console.
# Settings from the kernel command line: vm.timesyncd=S (its limit),
# vm.openntpd=S (OpenNTPD's limit to synchronize), vm.serve=S.
timesyncd_limit=60 openntpd_limit=480 serve=75
for word in $(cat /proc/cmdline); do
    case $word in
        vm.timesyncd=*) timesyncd_limit=${word#*=} ;;
        vm.openntpd=*) openntpd_limit=${word#*=} ;;
        vm.serve=*) serve=${word#*=} ;;
    esac
done
upstream=10.0.2.2

# Seconds since boot, whole.
uptime_s() {
    cut -d. -f1 /proc/uptime
}

# Each line of FILE on the console as `VM PREFIX line`.
show() {
    sed "s/^/VM $1 /" "$2"
}

# getpwnam and getservbyname read these files (glibc's own defaults
# would try NIS first).
printf 'passwd: files\ngroup: files\nshadow: files\nservices: files\nhosts: files\n' > /etc/nsswitch.conf
printf 'ntp 123/udp\n' > /etc/services
echo "$upstream ntpd-sim.test" >> /etc/hosts

chronyd -q -u root "server $upstream iburst maxsamples 4" > /tmp/chronyd-q.log 2>&1
echo "VM stepped $(grep -o 'System clock wrong by [^ ]* seconds' /tmp/chronyd-q.log || echo "none: $(tail -n 1 /tmp/chronyd-q.log)")"

# systemd-timesyncd 252, as its unit would run it (root, then its own
# user keeping CAP_SYS_TIME), with debug logging: the "NTP response:"
# block gives what it read of the server, and its offset.
echo 'systemd-timesync:x:102:102::/var/lib/systemd/timesync:/bin/false' >> /etc/passwd
echo 'systemd-timesync:x:102:' >> /etc/group
mkdir -p /var/lib/systemd/timesync /run/systemd/timesync /etc/systemd
chown 102:102 /var/lib/systemd/timesync /run/systemd/timesync
printf '[Time]\nNTP=%s\nFallbackNTP=\n' "$upstream" > /etc/systemd/timesyncd.conf
SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_COLOR=0 \
    systemd-timesyncd > /tmp/timesyncd.log 2>&1 &
pid=$!
start=$(uptime_s)
while [ $(($(uptime_s) - start)) -lt "$timesyncd_limit" ] && kill -0 $pid 2>/dev/null; do
    grep -q 'Initial clock synchronization' /tmp/timesyncd.log && break
    sleep 1
done
synced_after=$(($(uptime_s) - start))
# A few more polls would be 32 s each: the first response is the one read.
sleep 1
running=no
kill -0 $pid 2>/dev/null && running=yes
kill $pid 2>/dev/null
wait $pid 2>/dev/null
show timesyncd /tmp/timesyncd.log
echo "VM timesyncd end after=$synced_after running=$running synchronized=$([ -f /run/systemd/timesync/synchronized ] && echo yes || echo no)"

# OpenNTPD 6.2p3 as Debian builds it: privilege separation as user
# ntpd, chrooted to /var/lib/openntpd (root's, not writable by others),
# its control socket and drift file below it.
echo 'ntpd:x:103:103::/var/lib/openntpd:/bin/false' >> /etc/passwd
echo 'ntpd:x:103:' >> /etc/group
mkdir -p /var/lib/openntpd/run /var/lib/openntpd/db /etc/openntpd
chmod 0755 /var/lib/openntpd
printf 'server %s\nlisten on *\n' "$upstream" > /etc/openntpd/ntpd.conf
ntpd -d -f /etc/openntpd/ntpd.conf > /tmp/openntpd.log 2>&1 &
pid=$!
start=$(uptime_s)
while [ $(($(uptime_s) - start)) -lt "$openntpd_limit" ] && kill -0 $pid 2>/dev/null; do
    ntpctl -s status 2>/dev/null | grep -q 'clock synced' && break
    sleep 2
done
synced_after=$(($(uptime_s) - start))
ntpctl -s all > /tmp/ntpctl.txt 2>&1
show ntpctl /tmp/ntpctl.txt
if grep -q 'clock synced' /tmp/ntpctl.txt; then
    echo "VM openntpd synced after=$synced_after serving=$serve"
    # The host queries it now; ntpctl's view every 10 s meanwhile.
    end=$(($(uptime_s) + serve))
    while [ "$(uptime_s)" -lt "$end" ] && kill -0 $pid 2>/dev/null; do
        sleep 10
        ntpctl -s peers 2>&1 | sed 's/^/VM ntpctl-serving /'
    done
else
    echo "VM openntpd unsynced after=$synced_after"
fi
kill $pid 2>/dev/null
sleep 1
show openntpd /tmp/openntpd.log
echo "VM openntpd end"
