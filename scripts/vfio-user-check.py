#!/usr/bin/env python3
"""Run the vfio-user tests and count their TAP results.

Tests are glib test binaries (run with --tap) and scenario scripts
(--script 'COMMAND ARGS', which print TAP themselves).  Each runs in its
own session with a time limit; whatever it leaves running counts as a
failure and is killed.  A test fails too when its output holds a
sanitizer report (AddressSanitizer, LeakSanitizer, UBSan's 'runtime
error:'): the case that was running when it was printed, or the binary
as a whole when it came after the last case.

Each producer's TAP plan ('1..N') must match the results it printed, and
its number of cases must not fall below the one recorded for it in
tests/vfio-user-case-counts.txt (more is a note: record them).  Every
full run writes what it saw to BUILD_ROOT/vfio-user-case-counts.seen;
`scripts/vfio-user-check.py --record-counts` (`make record-counts`)
copies that into the recorded file.

Prints each failing case, the table of interop cases (with what each
one completed, from the '# interop: ...' lines the cases print) and the
summary 'N cases (M again under ASan): P passed, F failed, S skipped',
then the final line 'P passed, F failed' alone.  Exits non-zero when
anything failed, a test crashed or timed out, an interop case did not
run, or no test ran at all.

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

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS_FILE = os.path.join(SRC, 'tests', 'vfio-user-case-counts.txt')
SEEN_NAME = 'vfio-user-case-counts.seen'
LSAN_SUPP = os.path.join(SRC, 'tests', 'vfio-user-lsan.supp')

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
PLAN_RE = re.compile(r'^1\.\.(\d+)\b')
# The first line of a sanitizer report.  Not the bare words: a skipped
# case may well say "AddressSanitizer" in its reason.
SANITIZER_RE = re.compile(r'==\d+==ERROR: (Address|Leak)Sanitizer|'
                          r'(^|[\s:])runtime error: ')


class Run:
    """What one TAP producer reported."""

    def __init__(self, key):
        self.key = key          # name in the counts file
        self.passed = self.failed = self.skipped = 0
        self.cases = 0          # result lines (a crash adds a failure only)
        self.plan = None


def sanitizer_reports(lines):
    """Yield (index of the line, report text) of each sanitizer report."""
    for i, line in enumerate(lines):
        if line.startswith(('ok ', 'not ok ', '#')):
            continue  # a case's name or message, not a report
        if SANITIZER_RE.search(line):
            report = []
            for r in lines[i:i + 40]:
                if report and (TAP_RE.match(r) or PLAN_RE.match(r)):
                    break
                report.append(r)
            yield i, '\n'.join(report)


def run_one(label, key, argv, cwd, env, timeout, results, tail=60,
            interop=None):
    """Run one TAP producer; results gets (label, name, 'ok'|'FAIL'|'SKIP').

    interop, if given, gets {case name: what it completed} from the
    '# interop: ...' lines a case prints before its result.
    """
    run = Run(key)
    start = time.monotonic()
    rc, out, left = vfio_user_session.run(argv, timeout, env=env, cwd=cwd,
                                          term_grace=20)
    lines = out.splitlines()
    reports = dict(sanitizer_reports(lines))
    fail_lines = []
    summaries = []
    said = []
    pending_report = None
    for i, line in enumerate(lines):
        if i in reports:
            pending_report = pending_report or reports[i]
        # per-side counts of the rogue-peer suites
        if line.startswith('# rogue-cases: '):
            summaries.append(line[len('# rogue-cases: '):])
        if line.startswith('# interop: '):
            said.append(line[len('# interop: '):].strip())
        m = PLAN_RE.match(line.strip())
        if m:
            # glib run with several -p prints a growing plan after each
            run.plan = int(m.group(1))
        m = TAP_RE.match(line.strip())
        if not m:
            continue
        name = m.group(2)
        run.cases += 1
        if interop is not None and said:
            interop[name.split()[0] if name else name] = '; '.join(said)
        said = []
        if pending_report:
            # the case that was running when a sanitizer spoke
            run.failed += 1
            fail_lines.append(line)
            results.append((label, name, 'FAIL'))
            print(f'  {label}: {name}: sanitizer report:\n{pending_report}')
            pending_report = None
        elif m.group(4) and m.group(4).upper() == 'SKIP':
            run.skipped += 1
            results.append((label, name, 'SKIP'))
        elif m.group(1) == 'ok':
            run.passed += 1
            results.append((label, name, 'ok'))
        else:
            run.failed += 1
            fail_lines.append(line)
            results.append((label, name, 'FAIL'))
    # LeakSanitizer's exit status comes with its report: one failure
    broken = rc is None or rc != 0 and not run.failed and not pending_report
    problems = []
    if pending_report:
        problems.append('sanitizer report after its last case:\n'
                        + pending_report)
    if run.plan is None:
        problems.append('printed no TAP plan (1..N)')
    elif run.plan != run.cases:
        problems.append(f'planned {run.plan} cases, reported {run.cases}')
    secs = time.monotonic() - start
    print(f'  {label}: {run.passed} passed, {run.failed} failed'
          + (f', {run.skipped} skipped' if run.skipped else '')
          + f' ({secs:.1f}s)', flush=True)
    for line in summaries:
        print(f'    rogue-peer cases, {line}', flush=True)
    if run.failed or broken or problems:
        print('--- output of ' + label + ' ---')
        print('\n'.join(lines[-tail:]))
        print('---')
    if broken:
        why = 'timed out' if rc is None else f'exited with {rc}'
        problems.append(why)
    for p in problems:
        print(f'  {label}: {p}')
        run.failed += 1
    if left:
        print(f'  {label}: left {len(left)} process(es) behind (killed):')
        for pid, cmd in left:
            print(f'    {pid} {cmd}')
        run.failed += 1
    return run


def read_counts(path):
    """{key: cases} of a counts file (missing file: empty)."""
    counts = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.split('#', 1)[0].split()
                if len(line) == 2:
                    counts[line[0]] = int(line[1])
    except FileNotFoundError:
        pass
    return counts


def write_counts(path, counts, header):
    with open(path + '.tmp', 'w') as f:
        f.write(header)
        for key in sorted(counts):
            f.write(f'{key} {counts[key]}\n')
    os.replace(path + '.tmp', path)


COUNTS_HEADER = """\
# Cases each test binary or script reports under `make check` (the ones
# under qemu-fuzz/ run against the ASan+UBSan build): the runner fails one
# that reports fewer.  After a green `make check`, `make record-counts`
# writes the counts it saw into this file.
"""


def check_counts(runs):
    """Compare with the recorded counts; returns how many fell short."""
    recorded = read_counts(COUNTS_FILE)
    bad = 0
    for run in runs:
        want = recorded.get(run.key)
        if want is None:
            print(f'  note: {run.key}: {run.cases} cases, not in '
                  f'{os.path.relpath(COUNTS_FILE, SRC)} (make record-counts)')
        elif run.cases < want:
            print(f'  {run.key}: {run.cases} cases, fewer than the {want} '
                  f'recorded in {os.path.relpath(COUNTS_FILE, SRC)}')
            bad += 1
        elif run.cases > want:
            print(f'  note: {run.key}: {run.cases} cases, {want} recorded: '
                  'update the file with make record-counts')
    return bad


def record_counts(build_root):
    """Copy the last full runs' counts into the recorded file."""
    seen = read_counts(os.path.join(build_root, SEEN_NAME))
    if not seen:
        print(f'no counts in {os.path.join(build_root, SEEN_NAME)}: '
              'run make check first')
        return 1
    old = read_counts(COUNTS_FILE)
    new = dict(old, **seen)
    for key in sorted(new):
        if old.get(key) != new[key]:
            fewer = ' (FEWER)' if old.get(key, 0) > new[key] else ''
            print(f'{key}: {old.get(key, "-")} -> {new[key]}{fewer}')
    write_counts(COUNTS_FILE, new, COUNTS_HEADER)
    print(f'wrote {os.path.relpath(COUNTS_FILE, SRC)}')
    return 0


def interop_table(results, said, ran):
    """Print the interop cases' outcomes; return how many did not run.

    A skipped case did not run either; a failed one was counted already.
    """
    by_name = {name.split()[0]: res for _, name, res in results if name}
    rows = [('case', 'ours', 'libvfio-user', 'result')]
    bad = 0
    for binary, path, ours, theirs in INTEROP:
        if binary not in ran:
            continue
        res = by_name.get(QTEST_ARCH + path, 'not run')
        bad += res in ('not run', 'SKIP')
        what = said.get(QTEST_ARCH + path)
        if res == 'ok':
            res = 'PASS' + (': ' + what if what else '')
        rows.append((path, ours, theirs, res))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print('interop with libvfio-user:')
    for i, r in enumerate(rows):
        print('  ' + '  '.join(c.ljust(w) for c, w in zip(r, widths))
              + '  ' + r[3])
        if i == 0:
            print('  ' + '  '.join('-' * w for w in widths) + '  ' + '-' * 6)
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--record-counts', action='store_true',
                    help='only copy the counts of the last make check into '
                    'tests/vfio-user-case-counts.txt')
    ap.add_argument('--build-root', default=os.environ.get(
        'BUILD_ROOT', os.path.join(SRC, 'build')),
                    help='with --record-counts: where make check ran')
    ap.add_argument('--build')
    ap.add_argument('--qemu')
    ap.add_argument('--peers',
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
    ap.add_argument('--fuzz-artifacts',
                    help='crash folder of the fuzz targets')
    ap.add_argument('--asan-qemu',
                    help='qemu-system-x86_64 of the sanitizer build')
    ap.add_argument('--asan-test', action='append', default=[],
                    help='a test binary of the sanitizer build (absolute '
                    'path), a rerun of a case counted already; qtests run '
                    'against --asan-qemu')
    ap.add_argument('tests', nargs='*',
                    help='test binaries, relative to --build or absolute')
    args = ap.parse_args()
    if args.record_counts:
        return record_counts(args.build_root)
    if not (args.build and args.qemu and args.peers):
        ap.error('--build, --qemu and --peers are required')
    # keys of the counts file: binaries by path below the build root
    root = os.path.dirname(os.path.abspath(args.build))

    def key_of(path):
        return os.path.relpath(os.path.join(args.build, path), root)

    env = dict(os.environ)
    env['QTEST_QEMU_BINARY'] = os.path.abspath(args.qemu)
    # qtests of ours find the peers and the remote binary here
    env['VFIO_USER_PEERS'] = os.path.abspath(args.peers)
    env['VFIO_USER_QEMU'] = os.path.abspath(args.qemu)
    env.setdefault('G_TEST_DBUS_DAEMON', '/bin/true')
    # Set, not defaulted: glibc then fills every malloc'ed block, so a
    # leaked buffer is resident memory.  The server-rogue memory case
    # measures leaks by RSS and would miss untouched leaked buffers
    # without it (MALLOC_PERTURB_=0 turns the filling off).
    env['MALLOC_PERTURB_'] = '127'
    # binaries of the sanitizer build: any UBSan report fails the test
    env.setdefault('UBSAN_OPTIONS', 'halt_on_error=1:print_stacktrace=1')

    runs = []           # distinct cases
    asan_runs = []      # the same cases again under ASan
    results = []
    said = {}           # interop case: what it completed

    for t in args.tests:
        argv = [os.path.abspath(os.path.join(args.build, t)), '--tap', '-k']
        if args.interop_only:
            paths = [p for b, p, _, _ in INTEROP if b == os.path.basename(t)]
            if not paths:
                continue
            for p in paths:
                argv += ['-p', QTEST_ARCH + p]
        runs.append(run_one(t, key_of(t), argv, args.build, env,
                            args.timeout, results, interop=said))
    for cmd in args.script:
        argv = shlex.split(cmd)
        label = next((os.path.basename(a) for a in argv
                      if not os.path.basename(a).startswith('python')),
                     argv[0])
        # Scenario scripts print their logs after the failing lines.
        runs.append(run_one(label, 'script:' + label, argv, None, env,
                            args.script_timeout, results, tail=400))
    if args.asan_test:
        # QEMU's own exit-time leaks are not ours to report: qtests run
        # without leak detection, and check the remotes' exit instead.
        asan_env = dict(env, QTEST_QEMU_BINARY=args.asan_qemu,
                        VFIO_USER_QEMU=os.path.abspath(args.asan_qemu))
        asan_env.setdefault('ASAN_OPTIONS', 'detect_leaks=0')
        # Unit tests are our code alone: leaks are findings.
        unit_env = dict(env, ASAN_OPTIONS='detect_leaks=1',
                        LSAN_OPTIONS='suppressions=' + LSAN_SUPP
                        + ':print_suppressions=0')
        print('  tests of the ASan+UBSan build', flush=True)
        for t in args.asan_test:
            unit = os.sep + 'unit' + os.sep in t
            # not in the interop table, which lists the normal build's runs
            asan_runs.append(run_one(t, key_of(t), [t, '--tap', '-k'],
                                     args.build,
                                     unit_env if unit else asan_env,
                                     args.timeout, []))
    fuzz_counts = None
    if args.fuzz_binary:
        print(f'  fuzzing {args.fuzz_time} s per target under ASan+UBSan',
              flush=True)
        spec = importlib.util.spec_from_file_location(
            'vfio_user_fuzz', os.path.join(os.path.dirname(__file__),
                                           'vfio-user-fuzz.py'))
        fuzz = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fuzz)
        fuzz_counts = fuzz.run_all(args.fuzz_binary, fuzz.TARGETS,
                                   args.fuzz_time, args.fuzz_corpus,
                                   args.fuzz_artifacts)
        run = Run('fuzz:' + os.path.basename(args.fuzz_binary))
        run.passed, run.failed = fuzz_counts[:2]
        run.cases = run.passed + run.failed
        runs.append(run)
    ran = {os.path.basename(t) for t in args.tests}
    interop_bad = 0
    if any(b in ran for b, _, _, _ in INTEROP):
        interop_bad = interop_table(results, said, ran)
    bad_counts = 0
    if not args.interop_only:
        bad_counts = check_counts(runs + asan_runs)
        seen_path = os.path.join(root, SEEN_NAME)
        write_counts(seen_path, dict(read_counts(seen_path),
                                     **{r.key: r.cases
                                        for r in runs + asan_runs}),
                     '# written by scripts/vfio-user-check.py\n')
    every = runs + asan_runs
    passed = sum(r.passed for r in every)
    failed = sum(r.failed for r in every) + bad_counts + interop_bad
    skipped = sum(r.skipped for r in every)
    if passed + failed == 0:
        print('no test ran')
        failed = 1
    cases = sum(r.cases for r in runs)
    again = sum(r.cases for r in asan_runs)
    print(f'{cases} cases' + (f' ({again} again under ASan)' if again else '')
          + f': {passed} passed, {failed} failed, {skipped} skipped')
    # the last line keeps its fixed form, skips not counted as passed
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
