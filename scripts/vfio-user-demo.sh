#!/bin/bash
# End-to-end demo of vfio-user (`make demo`): a Linux VM uses an nvme disk
# that a separate QEMU process (-M remote) emulates and exports over a UNIX
# socket; the VM's vfio-user-pci device is its only link to that disk.
#
# For each DMA mode (fd: guest RAM is a shared memfd that the server maps;
# secure: secure-dma=on, every DMA is a checked message) it:
#   1. writes a raw disk image: region A holds a pattern derived from a
#      per-mode seed, everything else a filler byte;
#   2. starts the remote process (nvme backed by the image) and the VM
#      (Debian kernel + busybox initramfs from scripts/vfio-user-guest.sh);
#   3. lets the guest list its PCI devices, read region A from /dev/nvme0n1
#      and check its sha256 against the host's, and write region B = A with
#      every byte plus one;
#   4. once both processes have exited, compares the whole image byte for
#      byte with what it must now hold (A unchanged, B = A + 1, filler
#      elsewhere).
# Prints PASS/FAIL per mode and exits non-zero if any mode failed.  Every
# wait has a deadline and every process started here is killed on any exit.
#
# Environment: BUILD_ROOT (default ./build), VFU_ACCEL (tcg; kvm is
# optional and flaky on nested hosts), VFU_MODES ("fd secure"),
# VFU_BOOT_TIMEOUT (seconds a VM may run, default 180), VFU_GUEST_TIMEOUT
# (the guest's own watchdog, default 90), VFU_GUEST_ARGS (extra kernel
# arguments, e.g. pci=nomsi to make the guest use INTx).

set -euo pipefail

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD_ROOT=${BUILD_ROOT:-$SRCDIR/build}
export BUILD_ROOT
QEMU=$BUILD_ROOT/qemu/qemu-system-x86_64
GUEST=$BUILD_ROOT/guest
ACCEL=${VFU_ACCEL:-tcg}
MODES=${VFU_MODES:-fd secure}
BOOT_TIMEOUT=${VFU_BOOT_TIMEOUT:-180}
GUEST_TIMEOUT=${VFU_GUEST_TIMEOUT:-90}   # the guest's own watchdog
GUEST_ARGS=${VFU_GUEST_ARGS:-}           # extra kernel arguments
SOCKET_TIMEOUT=30

IMG_SIZE=$((16 * 1024 * 1024))
REGION_LEN=$((1024 * 1024))
REGION_A=0
REGION_B=$((4 * 1024 * 1024))

say() { echo "demo: $*"; }

# --- cleanup: every process we start is recorded and killed on exit ----------
PIDS=()
TMP=
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait_pid "$pid" 5 || { kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    done
    PIDS=()
    [ -z "$TMP" ] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "demo: interrupted" >&2; exit 130' INT TERM HUP

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# wait_pid PID SECONDS: wait for a child to exit, at most SECONDS; returns 0
# and reaps it (exit status in WAIT_STATUS) if it exited, 1 on time-out.
WAIT_STATUS=0
wait_pid() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        # A zombie still answers kill -0; ps tells it apart.
        [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && break
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
    WAIT_STATUS=0
    wait "$pid" 2>/dev/null || WAIT_STATUS=$?
    return 0
}

# stop_pid PID: TERM (QEMU then flushes its drives and exits), KILL after 10 s.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    if ! wait_pid "$1" 10; then
        say "pid $1 ignored SIGTERM, killing it"
        kill -KILL "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
    forget_pid "$1"
}

show_cmd() {  # print a command line the way a user would type it
    local label=$1 a out=; shift
    for a in "$@"; do
        case $a in
        *[!A-Za-z0-9_./:,=+@-]*) a="'$a'" ;;   # has a space or the like
        esac
        out="$out $a"
    done
    printf '  %s:\n   %s\n' "$label" "$out"
}

# --- set-up: qemu and the guest ------------------------------------------------
if [ ! -x "$QEMU" ]; then
    say "building qemu-system-x86_64 first"
    make -C "$SRCDIR" build
fi
"$SRCDIR/scripts/vfio-user-guest.sh"
command -v python3 >/dev/null || { echo "demo: python3 is needed" >&2; exit 1; }

# Sockets live under /tmp: a UNIX socket path must fit in 108 bytes and the
# build root may be deep.  Logs are kept in the build root for inspection.
TMP=$(mktemp -d /tmp/vfu-demo.XXXXXX)
LOGS=$BUILD_ROOT/demo
mkdir -p "$LOGS"

# make_image FILE SEED: write the image and print region A's sha256.
make_image() {
    python3 - "$1" "$2" "$IMG_SIZE" "$REGION_A" "$REGION_LEN" <<'PY'
import hashlib, sys
path, seed, size, a, n = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
# Region A: a chain of sha256 blocks, so no two 32-byte runs repeat.
out, h = bytearray(), hashlib.sha256(seed.encode()).digest()
while len(out) < n:
    out += h
    h = hashlib.sha256(h).digest()
img = bytearray(b"\x5a" * size)
img[a:a + n] = out[:n]
with open(path, "wb") as f:
    f.write(img)
print(hashlib.sha256(bytes(out[:n])).hexdigest())
PY
}

# check_image FILE SEED: compare the image byte for byte with what it must
# hold after the guest's write; print the first mismatch if any.
check_image() {
    python3 - "$1" "$2" "$IMG_SIZE" "$REGION_A" "$REGION_B" "$REGION_LEN" <<'PY'
import hashlib, sys
path, seed, size, a, b, n = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
out, h = bytearray(), hashlib.sha256(seed.encode()).digest()
while len(out) < n:
    out += h
    h = hashlib.sha256(h).digest()
want = bytearray(b"\x5a" * size)
want[a:a + n] = out[:n]
want[b:b + n] = bytes((x + 1) & 0xff for x in out[:n])
got = open(path, "rb").read()
if len(got) != size:
    print(f"image is {len(got)} bytes, expected {size}")
    sys.exit(1)
if got != want:
    i = next(i for i in range(size) if got[i] != want[i])
    bad = sum(1 for i in range(size) if got[i] != want[i])
    print(f"{bad} bytes differ; first at offset {i}: "
          f"0x{got[i]:02x}, expected 0x{want[i]:02x}")
    sys.exit(1)
print(f"all {size} bytes as expected: region B ({n} bytes at {b}) = "
      f"region A + 1, region A and the filler untouched")
PY
}

# run_mode MODE: one full round; returns 0 on PASS.
run_mode() {
    local mode=$1 secure=
    local dir=$TMP/$mode sock img log rlog seed sha t0
    mkdir -p "$dir"
    sock=$dir/nvme.sock
    img=$dir/disk.img
    log=$LOGS/$mode-console.log
    rlog=$LOGS/$mode-remote.log
    [ "$mode" = secure ] && secure=,secure-dma=on
    seed="vfio-user demo $mode $$ $(date +%s)"

    echo
    case $mode in
    fd)     say "=== mode fd: guest RAM is a shared memfd, mapped by the server ===" ;;
    secure) say "=== mode secure: secure-dma=on, every DMA is a checked message ===" ;;
    esac
    sha=$(make_image "$img" "$seed") || return 1
    say "host wrote $IMG_SIZE-byte image; region A ($REGION_LEN bytes at $REGION_A) sha256 $sha"

    # shellcheck disable=SC2054  # the commas are QEMU's, not separators
    local remote=("$QEMU" -M remote -nodefaults -display none
        -drive "file=$img,format=raw,if=none,id=d0"
        -device nvme,id=n0,drive=d0,serial=vfudemo0
        -object "vfio-user-server,id=v0,socket=$sock,device=n0")
    # shellcheck disable=SC2054
    local vm=("$QEMU" -M q35,memory-backend=mem -accel "$ACCEL" -m 512M
        -object memory-backend-memfd,id=mem,size=512M,share=on
        -nodefaults -display none -no-reboot -serial "file:$log"
        -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio.gz"
        -append "console=ttyS0 quiet panic=-1 vfu.test=nvme-rw vfu.sha=$sha vfu.len=$REGION_LEN vfu.a=$REGION_A vfu.b=$REGION_B vfu.timeout=$GUEST_TIMEOUT${GUEST_ARGS:+ $GUEST_ARGS}"
        -device "vfio-user-pci,socket=$sock,id=nvme0$secure")
    say "command lines:"
    show_cmd "remote process" "${remote[@]}"
    show_cmd "VM" "${vm[@]}"

    "${remote[@]}" >"$rlog" 2>&1 &
    local rpid=$!
    PIDS+=("$rpid")
    local deadline=$((SECONDS + SOCKET_TIMEOUT))
    while [ ! -S "$sock" ]; do
        if ! kill -0 "$rpid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            say "remote process did not listen on $sock; its log:"
            sed 's/^/    /' "$rlog"
            stop_pid "$rpid"
            return 1
        fi
        sleep 0.1
    done

    : >"$log"
    t0=$SECONDS
    "${vm[@]}" >"$LOGS/$mode-vm.log" 2>&1 &
    local vpid=$!
    PIDS+=("$vpid")
    if ! wait_pid "$vpid" "$BOOT_TIMEOUT"; then
        say "VM still running after ${BOOT_TIMEOUT}s, stopping it"
        stop_pid "$vpid"
        stop_pid "$rpid"
        sed 's/^/    guest| /' "$log" | tail -n 30
        return 1
    fi
    forget_pid "$vpid"
    local vstatus=$WAIT_STATUS
    # The server outlives its client; stop it so the image is flushed and
    # closed before the host reads it.
    stop_pid "$rpid"

    say "guest console (the VM ran $((SECONDS - t0)) s;" \
        "PCI list from sysfs as 'slot class: vendor:device driver'):"
    # Only our own lines: the boot log is quiet, the VFU- lines and the
    # lspci section are the transcript.
    tr -d '\r' <"$log" | sed -n '/^VFU-LSPCI-BEGIN/,/^VFU-LSPCI-END/p; /^VFU-/p' |
        grep -v '^VFU-LSPCI-' | sed 's/^/    guest| /'
    if [ "$vstatus" != 0 ]; then
        say "VM exited with status $vstatus; its log:"
        sed 's/^/    /' "$LOGS/$mode-vm.log"
    fi
    # QEMU's own "terminating on signal 15" line is our doing: not news.
    if grep -qv 'terminating on signal' "$rlog"; then
        say "remote process said:"
        grep -v 'terminating on signal' "$rlog" | sed 's/^/    remote| /'
    fi

    local ok=1
    if ! grep -q '^VFU-RESULT: PASS' "$log"; then
        ok=0
        say "guest did not report PASS; other console lines (kernel):"
        tr -d '\r' <"$log" | sed '/^VFU-LSPCI-BEGIN/,/^VFU-LSPCI-END/d; /^VFU-/d' |
            tail -n 20 | sed 's/^/    guest| /'
    fi
    say "host check of $img:"
    check_image "$img" "$seed" | sed 's/^/    host| /' || ok=0
    [ "$vstatus" = 0 ] || ok=0
    [ $ok = 1 ]
}

say "qemu: $QEMU"
say "guest: $(cat "$GUEST/kernel-version" 2>/dev/null || echo '?'), accel $ACCEL"
failed=0
results=()
for mode in $MODES; do
    if run_mode "$mode"; then
        results+=("PASS $mode")
    else
        results+=("FAIL $mode")
        failed=1
    fi
done
echo
for r in "${results[@]}"; do
    say "$r"
done
exit $failed
