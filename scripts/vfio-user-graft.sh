#!/bin/sh
# Graft our tree onto a QEMU source tree: one symlink per file of ours at
# the same path, then apply patches/ in order.  Idempotent; re-applies the
# series when a patch changed.
#
# usage: vfio-user-graft.sh OUR_TREE QEMU_TREE

set -e
OURS=$1
QEMU=$2
[ -d "$OURS" ] && [ -f "$QEMU/VERSION" ] || { echo "usage: $0 OUR_TREE QEMU_TREE" >&2; exit 1; }
# For development only: graft another patch series.
PATCHES=${VFU_PATCHES_DIR:-$OURS/patches}

# Top-level folders that mirror QEMU's layout.
GRAFT_DIRS="hw include tests docs configs qapi vfio-user"

# Drop links to files that no longer exist on our side.
for d in $GRAFT_DIRS; do
    [ -d "$QEMU/$d" ] || continue
    find "$QEMU/$d" -type l | while read -r l; do
        case $(readlink "$l") in
        "$OURS"/*) [ -e "$l" ] || rm -f "$l" ;;
        esac
    done
done

for d in $GRAFT_DIRS; do
    [ -d "$OURS/$d" ] || continue
    (cd "$OURS" && find "$d" -type f) | while read -r f; do
        dst=$QEMU/$f
        if [ -L "$dst" ]; then
            [ "$(readlink "$dst")" = "$OURS/$f" ] && continue
            rm -f "$dst"
        elif [ -e "$dst" ]; then
            echo "graft: $f would replace one of QEMU's files; use a patch" >&2
            exit 1
        fi
        mkdir -p "$(dirname "$dst")"
        ln -s "$OURS/$f" "$dst"
    done
done

# The patch series: keep a copy of what was applied, so a changed series is
# reverted and applied again.
APPLIED=$QEMU/.vfio-user-patches
if [ -d "$APPLIED" ] && ! diff -r -q "$APPLIED" "$PATCHES" >/dev/null 2>&1; then
    for p in $(ls "$APPLIED"/*.patch 2>/dev/null | sort -r); do
        echo "graft: reverting $(basename "$p")"
        patch -s -R -p1 -d "$QEMU" <"$p"
    done
    rm -rf "$APPLIED"
fi
if [ ! -d "$APPLIED" ]; then
    mkdir -p "$APPLIED.tmp"
    for p in $(ls "$PATCHES"/*.patch 2>/dev/null | sort); do
        echo "graft: applying $(basename "$p")"
        patch -s -N -p1 -d "$QEMU" <"$p"
        cp "$p" "$APPLIED.tmp/"
    done
    mv "$APPLIED.tmp" "$APPLIED"
fi
