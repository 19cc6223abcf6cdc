# vfio-user for QEMU: build on top of Debian 12's QEMU 7.2 source package.
#
#   make          set up (packages, source, graft) and build qemu-system-x86_64
#   make check    build and run every unit test and qtest of ours, the
#                 end-to-end guest scenarios and the interop table
#   make check-interop  only the cases against libvfio-user's samples
#   make record-counts  after a green make check: record its case counts
#                 in tests/vfio-user-case-counts.txt
#   make demo     run the end-to-end demo (see README.md)
#   make bench    measure speed against raw sockets and in-process devices,
#                 table, CSV and chart (BENCH_ARGS: options of
#                 scripts/vfio-user-bench.py)
#   make bench-upstream  the same against QEMU 7.2's own libvfio-user based
#                 server, built from the same source, side by side with ours
#   make fuzz     run the libFuzzer targets, FUZZ_TIME seconds each
#   make check-asan  the main qtests against an ASan+UBSan qemu-system-x86_64
#                 (make check runs them too)

BUILD_ROOT ?= $(CURDIR)/build
export BUILD_ROOT
QEMU_BUILD := $(BUILD_ROOT)/qemu
QEMU_BIN   := $(QEMU_BUILD)/qemu-system-x86_64
# Interop peers: libvfio-user's samples from the same source package
PEERS_BUILD := $(BUILD_ROOT)/libvfio-user
PEERS := samples/client samples/server samples/gpio-pci-idio-16

# Cache hits across clones of this repo: paths are made relative to the
# build folder and the working directory is left out of the hash.
export CCACHE_BASEDIR := $(BUILD_ROOT)
export CCACHE_NOHASHDIR := 1

UNIT_TESTS := $(patsubst %.c,%,$(notdir $(wildcard tests/unit/test-vfio-user-*.c)))
QTESTS     := $(patsubst %.c,%,$(notdir $(wildcard tests/qtest/vfio-user-*-test.c)))
TEST_BINS  := $(addprefix tests/unit/,$(UNIT_TESTS)) \
              $(addprefix tests/qtest/,$(QTESTS))

# The clang build with libFuzzer, ASan and UBSan (see configure)
FUZZ_BUILD := $(BUILD_ROOT)/qemu-fuzz
FUZZ_BIN   := $(FUZZ_BUILD)/qemu-fuzz-x86_64
FUZZ_TIME  ?= 300
# make check fuzzes each target this long
FUZZ_CHECK_TIME ?= 30
FUZZ_CORPUS    := $(BUILD_ROOT)/fuzz/corpus
FUZZ_ARTIFACTS := $(BUILD_ROOT)/fuzz/crashes
ASAN_UNIT_TESTS := $(addprefix tests/unit/,$(UNIT_TESTS))
ASAN_QTESTS := $(addprefix tests/qtest/,vfio-user-pci-test \
               vfio-user-server-test vfio-user-server-rogue-test \
               vfio-user-client-rogue-test vfio-user-edu-test \
               vfio-user-server-order-test vfio-user-twin-test)

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: all setup build peers check check-interop demo guest bench \
        bench-upstream clean \
        distclean FORCE fuzz-build fuzz check-asan record-counts

all: build

setup:
	@./configure

build: setup
	@echo "make: building qemu-system-x86_64 (a cold build takes a while)"
	@ninja -C $(QEMU_BUILD) $(NINJAFLAGS) qemu-system-x86_64 | \
	    scripts/ninja-progress.sh

peers: setup
	@[ -f $(PEERS_BUILD)/build.ninja ] || \
	    meson setup $(PEERS_BUILD) $(BUILD_ROOT)/qemu-src/subprojects/libvfio-user \
	        >$(BUILD_ROOT)/libvfio-user-setup.log 2>&1 || \
	    { cat $(BUILD_ROOT)/libvfio-user-setup.log; exit 1; }
	@ninja -C $(PEERS_BUILD) $(PEERS) | scripts/ninja-progress.sh

# End-to-end scenarios: a Linux guest (make guest) uses remote devices,
# one boot per DMA mode; logs in $(BUILD_ROOT)/e2e.
E2E := scripts/vfio-user-e2e.py --qemu $(QEMU_BIN) --guest $(BUILD_ROOT)/guest \
       --logs $(BUILD_ROOT)/e2e

check: setup peers guest
	@echo "make: building qemu-system-x86_64 and the tests"
	@ninja -C $(QEMU_BUILD) $(NINJAFLAGS) qemu-system-x86_64 $(TEST_BINS) | \
	    scripts/ninja-progress.sh
	@echo "make: building the fuzzers, QEMU and the tests under ASan+UBSan"
	@ninja -C $(FUZZ_BUILD) $(NINJAFLAGS) qemu-fuzz-x86_64 \
	    qemu-system-x86_64 $(ASAN_UNIT_TESTS) $(ASAN_QTESTS) | \
	    scripts/ninja-progress.sh
	@python3 scripts/vfio-user-check.py --build $(QEMU_BUILD) \
	    --qemu $(QEMU_BIN) --peers $(PEERS_BUILD)/samples \
	    --asan-qemu $(FUZZ_BUILD)/qemu-system-x86_64 \
	    $(addprefix --asan-test $(FUZZ_BUILD)/,$(ASAN_QTESTS)) \
	    --fuzz-binary $(FUZZ_BIN) --fuzz-time $(FUZZ_CHECK_TIME) \
	    --fuzz-corpus $(FUZZ_CORPUS) --fuzz-artifacts $(FUZZ_ARTIFACTS) \
	    $(addprefix --asan-test $(FUZZ_BUILD)/,$(ASAN_UNIT_TESTS)) \
	    $(TEST_BINS) --script "python3 $(E2E)"

# After a green make check: its case counts become the floor that later
# runs must reach (tests/vfio-user-case-counts.txt).
record-counts:
	@python3 scripts/vfio-user-check.py --record-counts

# Our client and server against libvfio-user's samples: the interop cases
# of the qtests, run by path, and their table.
INTEROP_BINS := tests/qtest/vfio-user-pci-test tests/qtest/vfio-user-server-test

check-interop: setup peers
	@ninja -C $(QEMU_BUILD) $(NINJAFLAGS) qemu-system-x86_64 $(INTEROP_BINS) | \
	    scripts/ninja-progress.sh
	@python3 scripts/vfio-user-check.py --build $(QEMU_BUILD) \
	    --qemu $(QEMU_BIN) --peers $(PEERS_BUILD)/samples --interop-only \
	    $(INTEROP_BINS)

# libFuzzer: corpus kept in $(FUZZ_CORPUS), crashes in $(FUZZ_ARTIFACTS)
fuzz-build: setup
	@echo "make: building qemu-fuzz-x86_64 (ASan+UBSan, a cold build takes a while)"
	@ninja -C $(FUZZ_BUILD) $(NINJAFLAGS) qemu-fuzz-x86_64 | \
	    scripts/ninja-progress.sh

fuzz: fuzz-build
	@python3 scripts/vfio-user-fuzz.py --binary $(FUZZ_BIN) \
	    --time $(FUZZ_TIME) --corpus $(FUZZ_CORPUS) \
	    --artifacts $(FUZZ_ARTIFACTS)

# qtests against the sanitizer build's qemu-system-x86_64 (the remote
# process and the VM); QEMU's exit-time leaks are not reported.
check-asan: setup peers
	@echo "make: building qemu-system-x86_64 and the qtests under ASan+UBSan"
	@ninja -C $(FUZZ_BUILD) $(NINJAFLAGS) qemu-system-x86_64 $(ASAN_QTESTS) | \
	    scripts/ninja-progress.sh
	@ASAN_OPTIONS=$${ASAN_OPTIONS:-detect_leaks=0} \
	    python3 scripts/vfio-user-check.py --build $(FUZZ_BUILD) \
	    --timeout 900 --qemu $(FUZZ_BUILD)/qemu-system-x86_64 \
	    --peers $(PEERS_BUILD)/samples $(ASAN_QTESTS)

# The Linux test guest (Debian kernel + busybox initramfs), cached in
# $(BUILD_ROOT)/guest; see scripts/vfio-user-guest.sh.
guest:
	@scripts/vfio-user-guest.sh

demo: build guest
	@scripts/vfio-user-demo.sh

# Not a test: prints a table and writes $(BUILD_ROOT)/bench/results.csv
# and a chart of it, results.png (gnuplot); nothing fails on time.  See
# docs/devel/vfio-user-performance.rst.
BENCH_DIR := $(BUILD_ROOT)/bench
$(BENCH_DIR)/vfu-sockbench: scripts/bench/vfu-sockbench.c
	@mkdir -p $(BENCH_DIR)
	$(CC) -O2 -Wall -o $@ $<

bench: build guest $(BENCH_DIR)/vfu-sockbench
	@python3 scripts/vfio-user-bench.py --sockbench $(BENCH_DIR)/vfu-sockbench \
	    --csv $(BENCH_DIR)/results.csv $(BENCH_ARGS)

# x-vfio-user-server (QEMU 7.2, libvfio-user) offers no ioeventfds and
# reaches DMA only through fds: no secure-dma run of it.  Each run draws
# its own chart; ours-vs-upstream.png puts both side by side.
UPSTREAM_PARTS ?= raw,mmio,bell,nvme
UPSTREAM_REMOTE := -M x-remote,vfio-user=on,auto-shutdown=off -nodefaults \
    -display none
UPSTREAM_OBJ := -object x-vfio-user-server,id=v0,type=unix,path={sock}
bench-upstream: build guest $(BENCH_DIR)/vfu-sockbench
	@up=$$(scripts/vfio-user-upstream.sh | tail -n 1) && \
	python3 scripts/vfio-user-bench.py --sockbench $(BENCH_DIR)/vfu-sockbench \
	    --csv $(BENCH_DIR)/ours.csv --only $(UPSTREAM_PARTS) $(BENCH_ARGS) && \
	python3 scripts/vfio-user-bench.py --sockbench $(BENCH_DIR)/vfu-sockbench \
	    --csv $(BENCH_DIR)/upstream.csv --only $(UPSTREAM_PARTS) \
	    --nvme-modes fd --server "$$up" --labels qemu-7.2 \
	    --edu-server-args "$(UPSTREAM_REMOTE) -device edu,id=e0 \
	        $(UPSTREAM_OBJ),device=e0" \
	    --testdev-server-args "$(UPSTREAM_REMOTE) -device pci-testdev,id=td \
	        $(UPSTREAM_OBJ),device=td" \
	    --nvme-server-args "$(UPSTREAM_REMOTE) -drive \
	        file={img},format=raw,if=none,id=d0,cache=none,aio=threads \
	        -device nvme,id=n0,drive=d0,serial=vfubench \
	        $(UPSTREAM_OBJ),device=n0" $(BENCH_ARGS) && \
	python3 scripts/vfio-user-bench.py --labels ours,qemu-7.2 \
	    --compare $(BENCH_DIR)/ours.csv $(BENCH_DIR)/upstream.csv \
	    --chart $(BENCH_DIR)/ours-vs-upstream.png

clean:
	@[ ! -d $(QEMU_BUILD) ] || ninja -C $(QEMU_BUILD) clean
	@[ ! -d $(FUZZ_BUILD) ] || ninja -C $(FUZZ_BUILD) clean

distclean:
	rm -rf $(BUILD_ROOT)
