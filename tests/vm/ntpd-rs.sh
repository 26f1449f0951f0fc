#!/bin/sh
# The scenario of the interop matrix's ntpd-rs client pairs
# (tests/interop/ntpd_rs.rs), run by the VM's /init: ntpd-rs's
# ntp-daemon, which disciplines the (guest's) clock, following the
# ntpd-sim of the test bed on the host, in four phases of one boot: plain
# NTP, NTS, NTS through the bed's faithful relay, NTS through its
# tampering relay. qemu runs in the bed's host A, so the guest reaches
# ntpd-sim (NET.1) and the relays (NET.3, NET.4) through qemu's NAT by a
# route via 10.0.2.2; the names are the bed's, in the guest's /etc/hosts,
# and the bed's CA is in the image as /etc/ntp-ca.pem.
# Settings from the kernel command line: vm.net=10.77.N, vm.sync=S (the
# longest a phase waits for synchronization), vm.settle=S (how long it
# keeps following before it is read), vm.tamper=S (how long the tampered
# phase runs). What each phase saw comes out as `VM ...` lines.
net=10.77.1 sync=40 settle=8 tamper=15
for word in $(cat /proc/cmdline); do
    case $word in
        vm.net=*) net=${word#*=} ;;
        vm.sync=*) sync=${word#*=} ;;
        vm.settle=*) settle=${word#*=} ;;
        vm.tamper=*) tamper=${word#*=} ;;
    esac
done
ip route add "$net.0/24" via 10.0.2.2
# Without nsswitch.conf glibc asks DNS first, and there is none.
printf 'hosts: files\n' > /etc/nsswitch.conf
printf '127.0.0.1 localhost\n%s.1 ntpd-sim.test\n%s.3 relay.test\n%s.4 tamper.test\n' "$net" "$net" "$net" > /etc/hosts

# json_field KEY: the value of KEY in ntp-query's JSON on stdin.
json_field() {
    awk -v key="\"$1\":" '$1 == key {v = $2; gsub(/[",]/, "", v); print v; exit}'
}

# The guest clock's offset from ntpd-sim, as ntp-query reads it.
offset_of_ntpd_sim() {
    ntp-query --json -n 1 -t 1 "$net.1:123" 2>/dev/null | json_field offset
}

seconds() { cut -d' ' -f1 /proc/uptime; }

# phase NAME LIMIT SOURCE: ntp-daemon following the one [[source]] SOURCE
# (and serving on the guest's 127.0.0.1:123) until it is synchronized
# (stratum below 16) or LIMIT seconds pass; then, synchronized, SETTLE
# seconds more; then what it shows: its metrics, what it serves, and how
# many replies it refused.
phase() {
    name=$1 limit=$2 source=$3
    conf=/tmp/$name.toml log=/tmp/$name.log
    cat > "$conf" <<EOF
[observability]
log-level = "info"
ansi-colors = false
observation-path = "/run/ntpd-rs-$name.sock"

[synchronization]
minimum-agreeing-sources = 1

[source-defaults]
poll-interval-limits = { min = 0, max = 1 }
initial-poll-interval = 0

[[source]]
$source

[[server]]
listen = "127.0.0.1:123"
EOF
    before=$(offset_of_ntpd_sim)
    ntp-daemon -c "$conf" > "$log" 2>&1 &
    pid=$!
    start=$(seconds) synced=none
    while :; do
        now=$(seconds)
        elapsed=$(echo "$now $start" | awk '{printf "%.1f", $1 - $2}')
        stratum=$(ntp-ctl status -f prometheus -c "$conf" 2>/dev/null | awk '$1 == "ntp_system_stratum" {print $2}')
        if [ -n "$stratum" ] && [ "$stratum" -lt 16 ]; then synced=$elapsed; break; fi
        if echo "$elapsed $limit" | awk '{exit !($1 >= $2)}'; then break; fi
        sleep 1
    done
    echo "VM phase=$name before_offset=${before:-none} synced_after=$synced"
    if [ "$synced" != none ]; then
        sleep "$settle"
        for i in 1 2 3 4 5; do
            echo "VM sample phase=$name offset=$(offset_of_ntpd_sim)"
            sleep 1
        done
    fi
    ntp-ctl status -f prometheus -c "$conf" 2>/dev/null | grep '^ntp_' | sed "s/^/VM metric phase=$name /"
    served=$(ntp-query --json -n 1 -t 1 127.0.0.1:123 2>/dev/null)
    fields=""
    for key in stratum refid leap root_delay root_dispersion; do
        fields="$fields $key=$(echo "$served" | json_field $key)"
    done
    echo "VM served phase=$name$fields"
    echo "VM refused phase=$name invalid=$(grep -c 'received invalid packet' "$log")"
    grep -m1 -o 'received invalid packet.*' "$log" | sed "s/^/VM refusal phase=$name /"
    grep -E ' (ERROR|WARN) ' "$log" | grep -v 'received invalid packet' | head -5 | sed "s/^/VM warning phase=$name /"
    kill "$pid"
    wait "$pid"
}

ca='certificate-authority = "/etc/ntp-ca.pem"'
phase plain "$sync" "mode = \"server\"
address = \"ntpd-sim.test:123\""
phase nts "$sync" "mode = \"nts\"
address = \"ntpd-sim.test:4460\"
$ca"
phase relay "$sync" "mode = \"nts\"
address = \"relay.test:4460\"
$ca"
phase tamper "$tamper" "mode = \"nts\"
address = \"tamper.test:4460\"
$ca"
