#!/bin/bash
# Build the small Linux test guest used by `make demo` (and end-to-end tests):
#
#   $BUILD_ROOT/guest/vmlinuz         Debian 12's stock amd64 kernel
#   $BUILD_ROOT/guest/initramfs.cpio.gz
#                                     busybox-static + the kernel modules of
#                                     the devices we export (nvme, e1000e,
#                                     sym53c8xx, virtio) + an /init that runs
#                                     one test scenario and powers off
#
# Nothing here is committed: the guest is made from Debian packages at test
# time and cached under the build root, so re-running costs nothing once both
# files exist (delete $BUILD_ROOT/guest to rebuild).  Packages are fetched
# with `apt-get download` and unpacked with dpkg-deb into a scratch folder;
# the host's own /boot and module tree are never touched.
#
# Guest interface (kernel command line; /init reads /proc/cmdline):
#   vfu.test=NAME      scenario: lspci, nvme-rw, dd-bench, e2e, shell (default: lspci)
#   vfu.dev=PATH       block device of nvme-rw (default /dev/nvme0n1)
#   vfu.len=BYTES      bytes of nvme-rw's region A / B (default 1048576)
#   vfu.a=BYTES        offset of region A (default 0)
#   vfu.b=BYTES        offset of region B (default 4194304)
#   vfu.sha=HEX        sha256 the host expects of region A
#   vfu.mb=MIB         dd-bench: MiB per dd (default 16)
#   vfu.bs=N,N,...     dd-bench: block sizes (default 4096)
#   vfu.timeout=SECS   watchdog: FAIL and power off after SECS (default 60)
# e2e (scripts/vfio-user-e2e.py drives it; it runs every step and reports
# each as `VFU-STEP: NAME PASS|FAIL [why]`, then waits to be stopped):
#   vfu.vsha=HEX       as vfu.sha, for /dev/vda (virtio-blk; step skipped if unset)
#   vfu.ssha=HEX       as vfu.sha, for /dev/sda (lsi53c895a; step skipped if unset)
#   vfu.hsha=HEX       as vfu.sha, for the hot-plugged nvme (serial vfuhot)
#   vfu.net=IP:PORT    HTTP service (step skipped if unset): GET /blob;
#                      POST /upload takes base64
#                      and answers the sha256 of the decoded bytes
#   vfu.nsha=HEX       sha256 of /blob
# Output goes to ttyS0; result lines start with `VFU-` (VFU-RESULT: PASS|FAIL
# ends every scenario) and the guest then powers off (`poweroff -f`; after a
# failure a sysrq reset, which needs QEMU's -no-reboot to end the VM).
#
# usage: scripts/vfio-user-guest.sh            (BUILD_ROOT from the env)

set -euo pipefail

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD_ROOT=${BUILD_ROOT:-$SRCDIR/build}
GUEST=$BUILD_ROOT/guest
KERNEL=$GUEST/vmlinuz
INITRD=$GUEST/initramfs.cpio.gz

# Modules wanted in the guest.  Their dependencies are resolved from the
# kernel package's own modules.dep, so only these names are listed here.
MODULES="nvme e1000e sym53c8xx sd_mod virtio_pci virtio_blk virtio_net"

log() { echo "guest: $*"; }
die() { echo "guest: error: $*" >&2; exit 1; }

# The cache is keyed by this script's own contents, so editing /init or
# the module list below rebuilds the guest on the next run.
STAMP=$GUEST/stamp
want_stamp=$(sha256sum "$0" | cut -d' ' -f1)
if [ -f "$KERNEL" ] && [ -f "$INITRD" ] &&
   [ "$(cat "$STAMP" 2>/dev/null)" = "$want_stamp" ]; then
    log "cached: $KERNEL, $INITRD"
    exit 0
fi

# --- host tools ---------------------------------------------------------------
# cpio packs the initramfs, kmod's depmod/modprobe resolve module deps,
# dpkg-dev's dpkg-deb unpacks the packages, gzip compresses.
need=
for p in cpio kmod gzip dpkg-dev; do
    case $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) in
    *" installed") ;;
    *) need="$need $p" ;;
    esac
done
apt_updated=
apt_update() {
    if [ -z "$apt_updated" ]; then
        apt-get update -q >/dev/null || die "apt-get update failed"
        apt_updated=1
    fi
}
if [ -n "$need" ]; then
    [ "$(id -u)" = 0 ] || die "missing packages:$need (run as root or install them)"
    log "installing:$need"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $need >/dev/null 2>&1 || die "apt-get install failed"
fi

# --- fetch the packages -------------------------------------------------------
WORK=$GUEST/work
rm -rf "$WORK"
mkdir -p "$WORK/debs" "$WORK/kroot" "$WORK/bbroot"
# On any failure the half-made scratch folder goes; the outputs are only
# moved into place at the very end, so a failed run never looks cached.
trap 'rm -rf "$WORK"' EXIT

# linux-image-amd64 is a metapackage: the kernel is in the package it
# depends on (linux-image-6.1.0-N-amd64); ask apt which one that is now.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
       sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
if [ -z "$kpkg" ]; then
    apt_update
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
           sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
fi
[ -n "$kpkg" ] || die "apt knows no linux-image-amd64 (is Debian's archive configured?)"

fetch() {
    # apt-get download writes into the current directory; retry once
    # after refreshing the lists since an old revision may have left the archive.
    (cd "$WORK/debs" && apt-get download -q "$@" >/dev/null 2>&1) && return 0
    apt_update
    (cd "$WORK/debs" && apt-get download -q "$@" >/dev/null) ||
        die "apt-get download $* failed"
}
log "downloading $kpkg and busybox-static"
fetch "$kpkg" busybox-static

dpkg-deb -x "$WORK/debs/${kpkg}_"*.deb "$WORK/kroot"
dpkg-deb -x "$WORK/debs/busybox-static_"*.deb "$WORK/bbroot"

vmlinuz=$(ls "$WORK/kroot/boot/"vmlinuz-* | head -n 1)
[ -f "$vmlinuz" ] || die "no vmlinuz in $kpkg"
kver=${vmlinuz##*/vmlinuz-}
[ -d "$WORK/kroot/lib/modules/$kver" ] || die "no modules for $kver in $kpkg"
busybox=$WORK/bbroot/bin/busybox
[ -x "$busybox" ] || die "no /bin/busybox in busybox-static"

# Debian's package ships no modules.dep (its postinst runs depmod): make it.
depmod -b "$WORK/kroot" "$kver"

# --- assemble the initramfs ---------------------------------------------------
R=$WORK/root
mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp,etc,root,modules}
cp "$busybox" "$R/bin/busybox"
# busybox --install needs /proc at run time; make the applet links now.
for applet in $("$busybox" --list); do
    [ -e "$R/bin/$applet" ] || ln -s busybox "$R/bin/$applet"
done

# Ordered insmod list: modprobe --show-depends prints each dependency
# before its user, so loading the list top to bottom never fails on a
# missing symbol.  Built-in modules print "builtin" and are skipped.
: >"$R/modules/load.list"
for m in $MODULES; do
    modprobe -d "$WORK/kroot" -S "$kver" --show-depends "$m" 2>/dev/null |
        sed -n 's/^insmod \([^ ]*\).*$/\1/p' | while read -r ko; do
        name=${ko##*/}
        # Debian 12 ships plain .ko; newer kernels compress (.ko.xz/.zst):
        # unpack on the host so busybox insmod needs no decompressor.
        case $name in
        *.ko.xz)  plain=${name%.xz};  xz -dc "$ko" >"$R/modules/$plain" ;;
        *.ko.zst) plain=${name%.zst}; zstd -qdc "$ko" >"$R/modules/$plain" ;;
        *.ko.gz)  plain=${name%.gz};  gzip -dc "$ko" >"$R/modules/$plain" ;;
        *)        plain=$name;        cp "$ko" "$R/modules/$plain" ;;
        esac
        grep -qx "$plain" "$R/modules/load.list" || echo "$plain" >>"$R/modules/load.list"
    done
done
[ -s "$R/modules/load.list" ] || die "resolved no modules (names changed?)"

cat >"$R/init" <<'INIT'
#!/bin/sh
# Test guest /init: set up, load modules, run the scenario named by
# vfu.test= on the kernel command line, report on ttyS0, power off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

arg() {  # arg NAME DEFAULT: value of vfu.NAME= on the command line
    v=$(tr ' ' '\n' </proc/cmdline | sed -n "s/^vfu\.$1=//p" | tail -n 1)
    echo "${v:-$2}"
}

# A device that stopped answering also blocks a clean power-off (the
# kernel shuts its driver down first), so failures leave by an immediate
# reset instead: with panic=-1 and QEMU's -no-reboot, QEMU then exits.
hard_off() { sleep 1; echo b >/proc/sysrq-trigger; sleep 5; poweroff -f; }
# The kernel's last words (quiet hides warnings such as nvme's time-outs)
# come first, so the host can show why.
fail() {
    dmesg | tail -n 15 | sed 's/^/VFU-DMESG: /'
    echo "VFU-FAIL: $*"; echo "VFU-RESULT: FAIL"; hard_off
}

echo "VFU-BOOT: kernel $(uname -r) up in $(cut -d' ' -f1 /proc/uptime)s"

# Watchdog: a device that never answers can leave insmod or a read stuck
# in the kernel for good; report and power off anyway so the host sees a
# clear FAIL instead of waiting for its own time-out.
limit=$(arg timeout 60)
(sleep "$limit"; fail "scenario still running after ${limit}s") &
# Some modules may refuse to load (crct10dif-pclmul needs a CPU feature
# TCG's default CPU lacks; its generic twin takes over): count, don't fail.
n=0; bad=
while read -r ko; do
    if insmod "/modules/$ko" 2>/dev/null; then n=$((n + 1)); else bad="$bad ${ko%.ko}"; fi
done </modules/load.list
echo "VFU-MODULES: $n loaded${bad:+, not loaded:$bad}"

# Wait (at most ~10 s) for the device to probe: nvme scans namespaces
# asynchronously after the module loads.
wait_for() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ]
}

# Debian's busybox-static has no lspci applet: print the same facts as
# `lspci -nk` from sysfs (slot, class, vendor:device, bound driver).
show_pci() {
    echo "VFU-LSPCI-BEGIN"
    for d in /sys/bus/pci/devices/*; do
        drv=-
        [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
        class=$(cat "$d/class"); ven=$(cat "$d/vendor"); dev=$(cat "$d/device")
        echo "${d##*/0000:} ${class#0x}: ${ven#0x}:${dev#0x} driver=$drv"
    done
    echo "VFU-LSPCI-END"
}

# Read region A and check its sha256 against the host's; write region B
# as region A with every byte plus one (mod 256); the host then compares
# region B byte for byte with what it computes from its own pattern.
# blk_rw DEV SHA: returns non-zero with the reason in $why on failure.
blk_rw() {
    dev=$1
    want=$2
    len=$(arg len 1048576)
    a=$(arg a 0)
    b=$(arg b 4194304)
    bs=4096
    why=
    wait_for "$dev" || { why="$dev did not appear"; return 1; }
    echo "VFU-DISK: $dev $(cat /sys/block/${dev##*/}/size) sectors," \
         "model '$(cat /sys/block/${dev##*/}/device/model 2>/dev/null | sed 's/ *$//')'"
    dd if="$dev" of=/tmp/a bs=$bs skip=$((a / bs)) count=$((len / bs)) 2>/dev/null ||
        { why="read of $dev failed"; return 1; }
    echo "VFU-READ: $dev first 32 bytes: $(head -c 32 /tmp/a | hexdump -v -e '32/1 "%02x"')"
    got=$(sha256sum /tmp/a | cut -d' ' -f1)
    echo "VFU-READ: $dev sha256 $got"
    [ "$got" = "$want" ] || { why="region A sha256 $got, host expects $want"; return 1; }
    echo "VFU-CHECK: $dev region A matches the host's pattern"
    # tr with octal ranges maps byte n to n+1, 0xff to 0x00.
    tr '\000-\376\377' '\001-\377\000' </tmp/a >/tmp/b
    dd if=/tmp/b of="$dev" bs=$bs seek=$((b / bs)) conv=fsync 2>/dev/null ||
        { why="write to $dev failed"; return 1; }
    # Read back from the device, not the page cache.
    sync
    echo 3 >/proc/sys/vm/drop_caches
    dd if="$dev" of=/tmp/c bs=$bs skip=$((b / bs)) count=$((len / bs)) 2>/dev/null ||
        { why="read-back of $dev failed"; return 1; }
    cmp -s /tmp/b /tmp/c || { why="read-back of $dev region B differs from what was written"; return 1; }
    echo "VFU-WRITE: $dev wrote $len bytes at offset $b, sha256 $(sha256sum /tmp/b | cut -d' ' -f1)"
}

nvme_rw() {
    blk_rw "$(arg dev /dev/nvme0n1)" "$(arg sha '')" || fail "$why"
    echo "VFU-RESULT: PASS"
}

# Seconds since boot with nanoseconds: /proc/uptime has only 10 ms, which
# is a quarter of a 16 MiB dd at 400 MiB/s.
now() {
    ns=$(sed -n 's/^now at \([0-9]*\) nsecs$/\1/p' /proc/timer_list 2>/dev/null)
    if [ -n "$ns" ]; then
        printf '%d.%09d\n' $((ns / 1000000000)) $((ns % 1000000000))
    else
        cut -d' ' -f1 /proc/uptime
    fi
}

# make bench: direct-I/O sequential read and write of vfu.mb MiB at each
# block size in vfu.bs (comma-separated); the host computes MiB/s from the
# time stamps around each dd.
dd_bench() {
    dev=$(arg dev /dev/nvme0n1)
    mb=$(arg mb 16)
    wait_for "$dev" || fail "$dev did not appear"
    for bs in $(arg bs 4096 | tr ',' ' '); do
        count=$((mb * 1048576 / bs))
        t0=$(now)
        dd if="$dev" of=/dev/null bs=$bs count=$count iflag=direct 2>/dev/null ||
            fail "direct read of $dev failed"
        t1=$(now)
        echo "VFU-DD: read bs=$bs bytes=$((count * bs)) t0=$t0 t1=$t1"
        t0=$(now)
        dd if=/dev/zero of="$dev" bs=$bs count=$count oflag=direct 2>/dev/null ||
            fail "direct write to $dev failed"
        t1=$(now)
        echo "VFU-DD: write bs=$bs bytes=$((count * bs)) t0=$t0 t1=$t1"
    done
    echo "VFU-RESULT: PASS"
}

# --- e2e: every step reports, a failed step does not stop the next -------------
step() {  # step NAME COMMAND...: run COMMAND, report NAME's outcome
    name=$1; shift
    why=
    if "$@"; then echo "VFU-STEP: $name PASS"; else echo "VFU-STEP: $name FAIL $why"; fi
}

# The hot-plugged nvme is told apart by its serial, not by its number.
hot_ctrl() {
    for c in /sys/class/nvme/nvme*; do
        [ "$(cat "$c/serial" 2>/dev/null | sed 's/ *$//')" = vfuhot ] && { echo "${c##*/}"; return 0; }
    done
    return 1
}

e2e_net() {
    net=$(arg net "")
    ip link set lo up
    wait_for /sys/class/net/eth0 || { why="no eth0"; return 1; }
    echo "VFU-NET: eth0 driver $(basename "$(readlink /sys/class/net/eth0/device/driver)")"
    ip link set eth0 up
    udhcpc -i eth0 -f -q -n -t 10 -T 2 -s /etc/udhcpc.sh >/tmp/dhcp.log 2>&1 ||
        { why="udhcpc got no lease: $(tail -n 3 /tmp/dhcp.log | tr '\n' ' ')"; return 1; }
    echo "VFU-NET: eth0 $(ip -4 -o addr show eth0 | sed -n 's/.* inet \([^ ]*\).*/\1/p')" \
         "via DHCP, router $(ip route | sed -n 's/^default via \([^ ]*\).*/\1/p')"
    # (busybox 1.35's wget crashes with -T: timeout bounds it instead)
    t0=$(cut -d' ' -f1 /proc/uptime)
    timeout 150 wget -q -O /tmp/dl "http://$net/blob" ||
        { why="GET http://$net/blob failed (got $(wc -c </tmp/dl) bytes)"; return 1; }
    got=$(sha256sum /tmp/dl | cut -d' ' -f1)
    echo "VFU-NET: GET /blob $(wc -c </tmp/dl) bytes in $t0..$(cut -d' ' -f1 /proc/uptime)s, sha256 $got"
    [ "$got" = "$(arg nsha '')" ] || { why="downloaded sha256 $got, host sent $(arg nsha '')"; return 1; }
    tr '\000-\376\377' '\001-\377\000' </tmp/dl >/tmp/up
    up=$(sha256sum /tmp/up | cut -d' ' -f1)
    # wget posts a file as a C string: send it base64-encoded.
    base64 /tmp/up >/tmp/up.b64
    timeout 150 wget -q -O /tmp/resp --post-file /tmp/up.b64 "http://$net/upload" ||
        { why="POST http://$net/upload failed"; return 1; }
    echo "VFU-NET: POST /upload $(wc -c </tmp/up) bytes, sha256 $up; host got $(cat /tmp/resp)"
    [ "$(cat /tmp/resp)" = "$up" ] || { why="host received sha256 $(cat /tmp/resp), sent $up"; return 1; }
}

# The host adds the device when it reads HOTPLUG-READY and removes it
# after HOTPLUG-USED; the guest only watches sysfs.
e2e_hotplug() {
    echo "VFU-HOTPLUG-READY"
    i=0
    while ! c=$(hot_ctrl) && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    c=$(hot_ctrl) || { why="no nvme with serial vfuhot appeared"; echo "VFU-HOTPLUG-USED"; return 1; }
    echo "VFU-HOTPLUG: $c appeared ($(basename "$(readlink /sys/class/nvme/$c/device)"))"
    blk_rw "/dev/${c}n1" "$(arg hsha '')"; rc=$?
    echo "VFU-HOTPLUG-USED"
    [ $rc = 0 ] || return 1
    i=0
    while [ -e "/sys/class/nvme/$c" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    [ ! -e "/sys/class/nvme/$c" ] || { why="$c still present after device_del"; return 1; }
    echo "VFU-HOTPLUG: $c is gone"
}

# Read nvme0n1 (O_DIRECT, so every read reaches the device) until a read
# fails; the host kills the remote process after CRASH-READY.  The short
# I/O time-out makes the kernel give up on the dead controller quickly.
e2e_crash() {
    q=/sys/block/nvme0n1/queue/io_timeout
    [ -w $q ] && echo 3000 >$q
    dd if=/dev/nvme0n1 of=/dev/null bs=4096 count=16 iflag=direct 2>/dev/null ||
        { why="nvme0n1 unreadable before the crash"; return 1; }
    echo "VFU-CRASH-READY"
    t0=$(cut -d. -f1 /proc/uptime); n=0
    while dd if=/dev/nvme0n1 of=/dev/null bs=4096 count=16 skip=$((n % 64 * 16)) \
              iflag=direct 2>/dev/null; do
        n=$((n + 1))
        [ $(($(cut -d. -f1 /proc/uptime) - t0)) -lt 120 ] ||
            { why="reads still succeed 120s after CRASH-READY"; return 1; }
    done
    echo "VFU-CRASH-EIO: read failed after $n good reads," \
         "$(($(cut -d. -f1 /proc/uptime) - t0))s after CRASH-READY"
    dmesg | grep -i nvme | tail -n 4 | sed 's/^/VFU-DMESG: /'
    # The guest goes on: a few heartbeats the host can count.
    for i in 1 2 3; do echo "VFU-ALIVE: $i"; sleep 1; done
}

e2e() {
    show_pci
    step nvme blk_rw /dev/nvme0n1 "$(arg sha '')"
    [ -z "$(arg vsha '')" ] || step virtio-blk blk_rw /dev/vda "$(arg vsha '')"
    [ -z "$(arg ssha '')" ] || step lsi blk_rw /dev/sda "$(arg ssha '')"
    [ -z "$(arg net '')" ] || step e1000e e2e_net
    step hotplug e2e_hotplug
    step crash e2e_crash
    echo "VFU-RESULT: DONE"
    # The host checks QEMU's state and then quits it.
    sleep 3600
}

case $(arg test lspci) in
lspci)   show_pci; echo "VFU-RESULT: PASS" ;;
nvme-rw) show_pci; nvme_rw ;;
dd-bench) dd_bench ;;
e2e)     e2e ;;
shell)   setsid cttyhack sh ;;
*)       fail "unknown vfu.test=$(arg test '')" ;;
esac
poweroff -f
INIT
chmod 755 "$R/init"

# busybox udhcpc leaves configuring the interface to a script.
cat >"$R/etc/udhcpc.sh" <<'DHCP'
#!/bin/sh
case $1 in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    ;;
deconfig) ip addr flush dev "$interface" ;;
esac
exit 0
DHCP
chmod 755 "$R/etc/udhcpc.sh"

cp "$vmlinuz" "$WORK/vmlinuz"
(cd "$R" && find . -print0 | LC_ALL=C sort -z |
     cpio --null -o -H newc --owner=0:0 --quiet) | gzip -9 >"$WORK/initramfs.cpio.gz"
echo "$kpkg $kver" >"$WORK/kernel-version"

# Publish: the initramfs last, since its presence (with the kernel) marks
# the cache complete.
mv "$WORK/vmlinuz" "$KERNEL"
mv "$WORK/kernel-version" "$GUEST/kernel-version"
mv "$WORK/initramfs.cpio.gz" "$INITRD"
echo "$want_stamp" >"$STAMP"
log "built $KERNEL ($kver) and $INITRD ($(du -k "$INITRD" | cut -f1) KiB," \
    "$(wc -l <"$R/modules/load.list") modules)"
