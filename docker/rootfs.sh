#!/bin/sh
# Assembles the container's whole file system into OUT from the release
# binaries in BINDIR: the two binaries (stripped), exactly the shared
# libraries they load (as ldd lists them) and the dynamic loader, what glibc
# needs to resolve service names (nsswitch.conf; the NSS modules where this
# glibc still has them as separate files), and a passwd/group naming the
# unprivileged user 65534. Nothing else: no shell, no package manager.
# Used by the multi-stage Dockerfile's build stage and by build-local.sh on
# the host, so both make the same image.
#
#   docker/rootfs.sh OUT BINDIR
set -eu
out=$1
bindir=$2
binaries="ntpd-sim ntp-query"

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc"

copy_with_parents() {
    # $1: an absolute path; copied (the file, not the link) to the same path under $out.
    mkdir -p "$out$(dirname "$1")"
    cp -L "$1" "$out$1"
}

for name in $binaries; do
    cp "$bindir/$name" "$out/usr/local/bin/$name"
    strip --strip-debug "$out/usr/local/bin/$name"
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
    for lib in $(ldd "$bindir/$name" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        copy_with_parents "$lib"
    done
done

# Name resolution: glibc reads nsswitch.conf and, before 2.34, loads
# libnss_files/libnss_dns (and libresolv) at run time, which ldd cannot see.
# Docker mounts /etc/hosts and /etc/resolv.conf (its embedded DNS server,
# which knows the compose services' names) into every container.
libc=$(ldd "$bindir/ntpd-sim" | awk '$1 == "libc.so.6" { print $3 }')
libdir=$(dirname "$libc")
for module in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
    if [ -e "$libdir/$module" ]; then
        copy_with_parents "$libdir/$module"
    fi
done
printf 'hosts: files dns\n' > "$out/etc/nsswitch.conf"
printf 'nobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' > "$out/etc/passwd"
printf 'nogroup:x:65534:\n' > "$out/etc/group"
