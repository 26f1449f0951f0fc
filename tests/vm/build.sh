#!/usr/bin/env bash
# Builds the test VM (see docs/testing.md): a Debian cloud kernel, taken
# from its package with `apt-get download` + `dpkg-deb -x` (never installed
# on this host), and an initramfs holding busybox-static, the virtio
# modules, the project's binaries, chronyd and the libraries `ldd` names,
# with tests/vm/init as /init and SCENARIO as /scenario.
#
#   tests/vm/build.sh BIN_DIR SCENARIO OUT_DIR
#
# Writes OUT_DIR/vmlinuz and OUT_DIR/initrd.img. The kernel is cached
# under target/vm-cache/<package version>/, so only the first run fetches.
#
# A scenario that needs more than the cloud kernel has sets, in the
# environment: VM_KERNEL, the kernel's metapackage (linux-image-amd64 for
# Debian's generic kernel, which has the parallel port and PPS clients);
# VM_MODULES, more modules (paths under the kernel's kernel/, without
# .ko) copied to /modules for the scenario to insmod with its options;
# VM_PROGRAMS, more programs (absolute paths) copied to /bin with the
# libraries they need; VM_FILES, more files as SOURCE=GUEST_PATH words
# (a CA certificate made for the run, say).
set -euo pipefail
bin_dir=$1 scenario=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

for tool in busybox qemu-system-x86_64 dpkg-deb apt-get gzip strip; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run .ci/run (it installs qemu-system-x86 and busybox-static)" >&2; exit 1; }
done
busybox_path=$(command -v busybox)

# The kernel: linux-image-cloud-amd64 points at the real image package.
meta=${VM_KERNEL:-linux-image-cloud-amd64}
image=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$image" ] || { echo "apt-cache knows no $meta: run apt-get update" >&2; exit 1; }
version=$(apt-cache policy "$image" | awk '/Candidate:/ {print $2}')
cache="$root/target/vm-cache/$image-$version"
# Images built at once (the interop matrix's VM pairs) fill the cache one
# at a time: the second waits, then finds it done.
mkdir -p "$root/target/vm-cache"
exec {cache_lock}>"$root/target/vm-cache/.lock"
flock "$cache_lock"
if [ ! -f "$cache/done" ]; then
    rm -rf "$cache" && mkdir -p "$cache/deb"
    (cd "$cache/deb" && apt-get download -q "$image" >/dev/null 2>&1)
    dpkg-deb -x "$cache"/deb/*.deb "$cache/x"
    touch "$cache/done"
fi
flock -u "$cache_lock"
kver=$(ls "$cache/x/lib/modules")
mkdir -p "$out"
cp "$cache/x/boot/vmlinuz-$kver" "$out/vmlinuz"

# The initramfs.
stage=$(mktemp -d)
# mktemp's 0700 would become the guest's /: no other user could enter it.
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,etc,proc,sys,dev,tmp,run,var/lib/chrony,var/run,modules,lib64,lib/x86_64-linux-gnu}
cp "$busybox_path" "$stage/bin/busybox"
for applet in sh mount insmod ip date adjtimex sleep cat echo kill ps grep awk cut seq mkdir poweroff sync tr head tail nc sed env su chown; do
    ln -s busybox "$stage/bin/$applet"
done
mods="$cache/x/lib/modules/$kver/kernel"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover \
         drivers/net/net_failover drivers/net/virtio_net ${VM_MODULES:-}; do
    name=$(basename "$m")
    if [ -f "$mods/$m.ko" ]; then cp "$mods/$m.ko" "$stage/modules/$name.ko"
    elif [ -f "$mods/$m.ko.xz" ]; then xz -dc "$mods/$m.ko.xz" > "$stage/modules/$name.ko"
    else echo "module $m not in $image" >&2; exit 1; fi
done
programs=("$bin_dir/ntpd-sim" "$bin_dir/ntp-query" "$bin_dir/ntp-clockwatch" /usr/sbin/chronyd /usr/bin/chronyc)
read -r -a extra <<< "${VM_PROGRAMS:-}"
programs+=("${extra[@]}")
for program in "${programs[@]}"; do
    [ -x "$program" ] || { echo "missing $program" >&2; exit 1; }
    cp "$program" "$stage/bin/"
    strip --strip-debug "$stage/bin/$(basename "$program")" 2>/dev/null || true
done
# The libraries ldd names (none for busybox-static).
for program in "${programs[@]}" "$busybox_path"; do
    for lib in $(ldd "$program" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
        mkdir -p "$stage$(dirname "$lib")"
        cp -nL "$lib" "$stage$lib"
    done
done
for file in ${VM_FILES:-}; do
    mkdir -p "$stage$(dirname "${file#*=}")"
    cp "${file%%=*}" "$stage${file#*=}"
done
printf 'root:x:0:0:root:/:/bin/sh\n_chrony:x:100:100::/var/lib/chrony:/bin/sh\n' > "$stage/etc/passwd"
printf 'root:x:0:\n_chrony:x:100:\n' > "$stage/etc/group"
printf 'root:*:19000:0:99999:7:::\n_chrony:*:19000:0:99999:7:::\n' > "$stage/etc/shadow"
install -m 0755 "$here/init" "$stage/init"
install -m 0755 "$scenario" "$stage/scenario"
(cd "$stage" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$out/initrd.img"
echo "vm image: $out (kernel $kver)"
