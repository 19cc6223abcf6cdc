#!/usr/bin/env python3
"""Run the vfio-user tests and count their TAP results.

Tests are glib test binaries (run with --tap) and scenario scripts
(--script 'COMMAND ARGS', which print TAP themselves).  Each runs in its
own session with a time limit; whatever it leaves running counts as a
failure and is killed.  Prints each failing case and the table of interop
cases, and ends with the line 'N passed, N failed' (preceded by
'N skipped' when some were skipped).  Exits non-zero when anything failed, a test crashed
or timed out, or no test ran at all.

--interop-only runs just the interop cases of the given binaries (by path,
with -p) and prints their table: `make check-interop`.

With --fuzz-binary, also runs each libFuzzer target for --fuzz-time
seconds (scripts/vfio-user-fuzz.py): one TAP result per target.
"""

import argparse
import importlib.util
import os
import re
import shlex
import sys
import time

import vfio_user_session

# The cases that pit us against libvfio-user's samples:
# (binary, glib test path, our side, their side).  qtest adds the target
# architecture in front of each path.
QTEST_ARCH = '/x86_64'
INTEROP = [
    ('vfio-user-pci-test', '/vfio-user-pci/libvfio-user/gpio',
     'vfio-user-pci', 'gpio-pci-idio-16'),
    ('vfio-user-pci-test', '/vfio-user-pci/libvfio-user/server-nofd',
     'vfio-user-pci (secure-dma)', 'server (DMA by message)'),
    ('vfio-user-pci-test', '/vfio-user-pci/libvfio-user/server-memfd',
     'vfio-user-pci (memfd)', 'server (DMA by fd)'),
    ('vfio-user-server-test', '/vfio-user/server/libvfio-user-client',
     'vfio-user-server', 'client'),
]

TAP_RE = re.compile(r'^(ok|not ok)\s+\d+\s*(?:-\s*)?(.*?)(\s+#\s*(SKIP|TODO).*)?$',
                    re.IGNORECASE)


def run_one(label, argv, cwd, env, timeout, results, tail=60):
    """Run one TAP producer; results gets (label, name, 'ok'|'FAIL'|'SKIP')."""
    passed = failed = skipped = 0
    start = time.monotonic()
    rc, out, left = vfio_user_session.run(argv, timeout, env=env, cwd=cwd,
                                          term_grace=20)
    fail_lines = []
    summaries = []
    for line in out.splitlines():
        # per-side counts of the rogue-peer suites
        if line.startswith('# rogue-cases: '):
            summaries.append(line[len('# rogue-cases: '):])
        m = TAP_RE.match(line.strip())
        if not m:
            continue
        name = m.group(2)
        if m.group(4) and m.group(4).upper() == 'SKIP':
            skipped += 1
            results.append((label, name, 'SKIP'))
        elif m.group(1) == 'ok':
            passed += 1
            results.append((label, name, 'ok'))
        else:
            failed += 1
            fail_lines.append(line)
            results.append((label, name, 'FAIL'))
    broken = rc is None or rc != 0 and not failed
    secs = time.monotonic() - start
    print(f'  {label}: {passed} passed, {failed} failed'
          + (f', {skipped} skipped' if skipped else '') + f' ({secs:.1f}s)',
          flush=True)
    for line in summaries:
        print(f'    rogue-peer cases, {line}', flush=True)
    if failed or broken:
        print('--- output of ' + label + ' ---')
        print('\n'.join(out.splitlines()[-tail:]))
        print('---')
    if broken:
        why = 'timed out' if rc is None else f'exited with {rc}'
        print(f'  {label}: {why}')
        failed += 1
    if left:
        print(f'  {label}: left {len(left)} process(es) behind (killed):')
        for pid, cmd in left:
            print(f'    {pid} {cmd}')
        failed += 1
    return passed, failed, skipped


def interop_table(results):
    """Print the interop cases' outcomes; return how many did not pass."""
    by_name = {name.split()[0]: res for _, name, res in results if name}
    rows = [('case', 'ours', 'libvfio-user', 'result')]
    bad = 0
    for _, path, ours, theirs in INTEROP:
        res = by_name.get(QTEST_ARCH + path, 'not run')
        bad += res != 'ok'
        rows.append((path, ours, theirs, 'PASS' if res == 'ok' else res))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print('interop with libvfio-user:')
    for i, r in enumerate(rows):
        print('  ' + '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print('  ' + '  '.join('-' * w for w in widths))
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', required=True)
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--peers', required=True,
                    help='folder of the libvfio-user sample binaries')
    ap.add_argument('--timeout', type=int, default=300,
                    help='seconds each test binary may run')
    ap.add_argument('--script', action='append', default=[],
                    help='a TAP-printing command line, run from the source '
                    'folder (repeatable)')
    ap.add_argument('--script-timeout', type=int, default=900,
                    help='seconds each script may run')
    ap.add_argument('--interop-only', action='store_true',
                    help='run only the interop cases of the binaries')
    ap.add_argument('--fuzz-binary', help='qemu-fuzz-x86_64 to run')
    ap.add_argument('--fuzz-time', type=int, default=30,
                    help='seconds per fuzz target')
    ap.add_argument('--fuzz-corpus', help='corpus folder of the fuzz targets')
    ap.add_argument('--fuzz-artifacts', help='crash folder of the fuzz targets')
    ap.add_argument('--asan-qemu',
                    help='qemu-system-x86_64 of the sanitizer build')
    ap.add_argument('--asan-test', action='append', default=[],
                    help='a qtest (absolute path) to run against --asan-qemu')
    ap.add_argument('tests', nargs='*',
                    help='test binaries, relative to --build or absolute')
    args = ap.parse_args()

    env = dict(os.environ)
    env['QTEST_QEMU_BINARY'] = args.qemu
    # qtests of ours find the peers and the remote binary here
    env['VFIO_USER_PEERS'] = os.path.abspath(args.peers)
    env['VFIO_USER_QEMU'] = os.path.abspath(args.qemu)
    env.setdefault('G_TEST_DBUS_DAEMON', '/bin/true')
    env.setdefault('MALLOC_PERTURB_', '127')
    # binaries of the sanitizer build: any UBSan report fails the test
    env.setdefault('UBSAN_OPTIONS', 'halt_on_error=1:print_stacktrace=1')

    total = [0, 0, 0]
    results = []

    def add(counts):
        for i, v in enumerate(counts):
            total[i] += v

    for t in args.tests:
        argv = [os.path.join(args.build, t), '--tap', '-k']
        if args.interop_only:
            paths = [p for b, p, _, _ in INTEROP if b == os.path.basename(t)]
            if not paths:
                continue
            for p in paths:
                argv += ['-p', QTEST_ARCH + p]
        add(run_one(t, argv, args.build, env, args.timeout, results))
    for cmd in args.script:
        argv = shlex.split(cmd)
        label = next((os.path.basename(a) for a in argv
                      if not os.path.basename(a).startswith('python')),
                     argv[0])
        # Scenario scripts print their logs after the failing lines.
        add(run_one(label, argv, None, env, args.script_timeout, results,
                    tail=400))
    if args.asan_test:
        # QEMU's own exit-time leaks are not ours to report
        asan_env = dict(env, QTEST_QEMU_BINARY=args.asan_qemu,
                        VFIO_USER_QEMU=os.path.abspath(args.asan_qemu))
        asan_env.setdefault('ASAN_OPTIONS', 'detect_leaks=0')
        print('  qtests against the ASan+UBSan qemu-system-x86_64', flush=True)
        for t in args.asan_test:
            # not in the interop table, which lists the normal build's runs
            add(run_one(t, [t, '--tap', '-k'], args.build, asan_env,
                        args.timeout, []))
    if args.fuzz_binary:
        print(f'  fuzzing {args.fuzz_time} s per target under ASan+UBSan',
              flush=True)
        spec = importlib.util.spec_from_file_location(
            'vfio_user_fuzz', os.path.join(os.path.dirname(__file__),
                                           'vfio-user-fuzz.py'))
        fuzz = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fuzz)
        p, f = fuzz.run_all(args.fuzz_binary, fuzz.TARGETS, args.fuzz_time,
                            args.fuzz_corpus, args.fuzz_artifacts)
        total[0] += p
        total[1] += f
    ran = {os.path.basename(t) for t in args.tests}
    interop_bad = 0
    if any(b in ran for b, _, _, _ in INTEROP):
        interop_bad = interop_table(results)
    passed, failed, skipped = total
    if args.interop_only and interop_bad and not failed:
        failed = interop_bad  # a case that did not run at all
    if passed + failed == 0:
        print('no test ran')
        failed = 1
    if skipped:
        # not counted as passed; the last line keeps its fixed form
        print(f'{skipped} skipped (see the per-test lines)')
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
