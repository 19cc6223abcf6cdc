#!/bin/sh
# Build QEMU 7.2's own vfio-user server (x-vfio-user-server on the x-remote
# machine, based on libvfio-user) from the same Debian source package,
# without our tree or patches, so that make bench can measure it the same
# way as ours: make bench-upstream.
#
# usage: vfio-user-upstream.sh   (after ./configure; honours BUILD_ROOT)
# Prints the path of the binary on its last line.

set -e
SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD_ROOT=${BUILD_ROOT:-$SRCDIR/build}
QEMU_SRC=$BUILD_ROOT/qemu-src
UP=$BUILD_ROOT/upstream
MAK=vfio-user-upstream.mak

log() { echo "upstream: $*" >&2; }

[ -f "$QEMU_SRC/VERSION" ] || { log "run ./configure first"; exit 1; }

# A copy of the source with the graft undone: our links out, our patches
# reverted.  Only the device list is added (a build input, not code).
if [ ! -f "$UP/src/VERSION" ]; then
    log "copying the QEMU source without our tree"
    rm -rf "$UP/src" "$UP/src.tmp"
    mkdir -p "$UP"
    cp -a "$QEMU_SRC" "$UP/src.tmp"
    find "$UP/src.tmp" -type l -lname "$SRCDIR/*" -delete
    if [ -d "$UP/src.tmp/.vfio-user-patches" ]; then
        for p in $(ls "$UP/src.tmp/.vfio-user-patches"/*.patch | sort -r); do
            patch -s -R -p1 -d "$UP/src.tmp" <"$p"
        done
        rm -rf "$UP/src.tmp/.vfio-user-patches"
    fi
    mv "$UP/src.tmp" "$UP/src"
fi
# (copied only when it changed: a new one makes meson reconfigure)
cmp -s "$SRCDIR/configs/devices/x86_64-softmmu/$MAK" \
    "$UP/src/configs/devices/x86_64-softmmu/$MAK" ||
    cp "$SRCDIR/configs/devices/x86_64-softmmu/$MAK" \
       "$UP/src/configs/devices/x86_64-softmmu/$MAK"

if [ ! -f "$UP/build/build.ninja" ]; then
    log "configuring QEMU 7.2 with --enable-vfio-user-server"
    mkdir -p "$UP/build"
    cc=cc
    command -v ccache >/dev/null && cc="ccache cc"
    (cd "$UP/build" && "$UP/src/configure" --cc="$cc" \
        --target-list=x86_64-softmmu --without-default-devices \
        --with-devices-x86_64="${MAK%.mak}" \
        --enable-multiprocess --enable-vfio-user-server --enable-kvm \
        --disable-docs --disable-werror --disable-install-blobs \
        --with-git-submodules=ignore --disable-slirp --disable-gtk \
        --disable-sdl --disable-vnc --disable-opengl --disable-spice \
        --disable-xen --disable-guest-agent --disable-tools \
        --enable-fdt=system) >"$UP/configure.log" 2>&1 ||
        { tail -20 "$UP/configure.log" >&2; log "configure failed"; exit 1; }
fi
log "building (log: $UP/build.log)"
ninja -C "$UP/build" qemu-system-x86_64 >"$UP/build.log" 2>&1 ||
    { tail -30 "$UP/build.log" >&2; log "build failed"; exit 1; }
echo "$UP/build/qemu-system-x86_64"
