#!/usr/bin/env python3
"""Run the vfio-user test binaries (glib tests) and count their TAP results.

With --fuzz-binary, also runs each libFuzzer target for --fuzz-time
seconds (scripts/vfio-user-fuzz.py): one TAP result per target.

Prints each failing case and ends with the line 'N passed, N failed'
(', N skipped' when some were skipped).  Exits non-zero when anything
failed, a binary crashed or timed out, or no test ran at all.
"""

import argparse
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

TAP_RE = re.compile(r'^(ok|not ok)\s+\d+\s*(?:-\s*)?(.*?)(\s+#\s*(SKIP|TODO).*)?$',
                    re.IGNORECASE)


def run_one(build, binary, env, timeout):
    path = os.path.join(build, binary)
    passed = failed = skipped = 0
    start = time.monotonic()
    # Output goes to a file, not a pipe: a server a test left behind must
    # not keep us waiting for end-of-file.  Leftovers are killed with the
    # test's process group.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([path, '--tap', '-k'], cwd=build, env=env,
                                stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.seek(0)
        out = log.read().decode(errors='replace')
    fail_lines = []
    for line in out.splitlines():
        m = TAP_RE.match(line.strip())
        if not m:
            continue
        if m.group(4) and m.group(4).upper() == 'SKIP':
            skipped += 1
        elif m.group(1) == 'ok':
            passed += 1
        else:
            failed += 1
            fail_lines.append(line)
    broken = rc is None or rc != 0 and not failed
    secs = time.monotonic() - start
    print(f'  {binary}: {passed} passed, {failed} failed'
          + (f', {skipped} skipped' if skipped else '') + f' ({secs:.1f}s)',
          flush=True)
    if failed or broken:
        print('--- output of ' + binary + ' ---')
        print('\n'.join(out.splitlines()[-60:]))
        print('---')
    if broken:
        why = 'timed out' if rc is None else f'exited with {rc}'
        print(f'  {binary}: {why}')
        failed += 1
    return passed, failed, skipped


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', required=True)
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--peers', required=True,
                    help='folder of the libvfio-user sample binaries')
    ap.add_argument('--timeout', type=int, default=300)
    ap.add_argument('--fuzz-binary', help='qemu-fuzz-x86_64 to run')
    ap.add_argument('--fuzz-time', type=int, default=30,
                    help='seconds per fuzz target')
    ap.add_argument('--fuzz-corpus', help='corpus folder of the fuzz targets')
    ap.add_argument('--fuzz-artifacts', help='crash folder of the fuzz targets')
    ap.add_argument('--asan-qemu',
                    help='qemu-system-x86_64 of the sanitizer build')
    ap.add_argument('--asan-test', action='append', default=[],
                    help='a qtest (absolute path) to run against --asan-qemu')
    ap.add_argument('tests', nargs='+',
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
    for t in args.tests:
        for i, v in enumerate(run_one(args.build, t, env, args.timeout)):
            total[i] += v
    if args.asan_test:
        # QEMU's own exit-time leaks are not ours to report
        asan_env = dict(env, QTEST_QEMU_BINARY=args.asan_qemu,
                        VFIO_USER_QEMU=os.path.abspath(args.asan_qemu))
        asan_env.setdefault('ASAN_OPTIONS', 'detect_leaks=0')
        print('  qtests against the ASan+UBSan qemu-system-x86_64', flush=True)
        for t in args.asan_test:
            for i, v in enumerate(run_one(args.build, t, asan_env,
                                          args.timeout)):
                total[i] += v
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
    passed, failed, skipped = total
    if passed + failed == 0:
        print('no test ran')
        failed = 1
    line = f'{passed} passed, {failed} failed'
    if skipped:
        line += f', {skipped} skipped'
    print(line)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
