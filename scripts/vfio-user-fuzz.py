#!/usr/bin/env python3
"""Run the vfio-user libFuzzer targets of qemu-fuzz-x86_64 for a while each.

Each target starts from its seed corpus (tests/fuzz/vfio-user-corpus.py)
and keeps what it finds in CORPUS/TARGET; a crashing input is saved as
ARTIFACTS/crash-* (or leak-*, timeout-*, oom-*) and fails the run.  One
TAP line per target gives its executions and crashes, e.g.

  ok 1 - vfio-user-server: 41234 executions in 30 s, 0 crashes

and a last one shows that an input reaching hw_error() is a crash: the
server seed dma-out-of-range replayed with the target's edu guard off.

Also used by scripts/vfio-user-check.py (make check).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import vfio_user_session

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATOR = os.path.join(HERE, '..', 'tests', 'fuzz', 'vfio-user-corpus.py')
TARGETS = ['vfio-user-server', 'vfio-user-client', 'vfio-user-realize']

# Sanitizers: any report is fatal; QEMU's teardown leaks are not ours and
# every input runs in a child that exits with _Exit, so no leak check.
SAN_ENV = {
    'ASAN_OPTIONS': 'detect_leaks=0:abort_on_error=0:symbolize=1:'
                    'handle_abort=1:allocator_may_return_null=1',
    'UBSAN_OPTIONS': 'halt_on_error=1:print_stacktrace=1',
}
SYMBOLIZER = '/usr/bin/llvm-symbolizer-14'
if os.path.exists(SYMBOLIZER):
    SAN_ENV['ASAN_SYMBOLIZER_PATH'] = SYMBOLIZER
    SAN_ENV['UBSAN_SYMBOLIZER_PATH'] = SYMBOLIZER


def sanitizer_env():
    env = dict(os.environ)
    for k, v in SAN_ENV.items():
        env.setdefault(k, v)
    return env


def make_seeds(seed_dir):
    subprocess.run([sys.executable, GENERATOR, seed_dir], check=True)


def failed_run(rc, out):
    """Did libFuzzer, or a sanitizer, report a finding?"""
    return rc != 0 or re.search(r'==\d+==ERROR|runtime error:', out)


def run_target(binary, target, secs, corpus_root, seed_dir, artifacts):
    """Returns (ok, executions, crashes, tail of the output)."""
    corpus = os.path.join(corpus_root, target)
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    seeds = os.path.join(seed_dir, target.replace('vfio-user-', ''))
    before = set(os.listdir(artifacts))
    cmd = [binary, '--fuzz-target=' + target, corpus, seeds,
           f'-max_total_time={secs}', '-timeout=60', '-rss_limit_mb=4096',
           '-max_len=65536', '-print_final_stats=1',
           '-artifact_prefix=' + artifacts + os.sep]
    rc, out, _ = vfio_user_session.run(cmd, secs + 300,
                                       env=sanitizer_env())
    m = re.search(r'stat::number_of_executed_units:\s*(\d+)', out)
    execs = int(m.group(1)) if m else 0
    new = sorted(set(os.listdir(artifacts)) - before)
    crashes = len(new)
    if failed_run(rc, out):
        crashes = max(crashes, 1)
    ok = crashes == 0 and execs > 0
    tail = '\n'.join(out.splitlines()[-80:])
    if new:
        tail += '\nsaved: ' + ' '.join(os.path.join(artifacts, n) for n in new)
    return ok, execs, crashes, tail


def check_hw_error_is_crash(binary, seed_dir):
    """Replay the server seed whose edu DMA leaves edu's buffer, with the
    target's guard off: edu calls hw_error(), and libFuzzer must report a
    crash.  Returns (ok, what happened)."""
    seed = os.path.join(seed_dir, 'server', 'dma-out-of-range')
    env = sanitizer_env()
    env['VFIO_USER_FUZZ_EDU_UNCHECKED'] = '1'
    rc, out, _ = vfio_user_session.run(
        [binary, '--fuzz-target=vfio-user-server', seed], 300, env=env)
    reached = 'EDU: DMA range' in out
    ok = reached and rc is not None and bool(failed_run(rc, out))
    what = (f'hw_error {"reached" if reached else "NOT reached"}, '
            f'exit code {rc}, {"a" if ok else "no"} crash reported')
    return ok, what, '\n'.join(out.splitlines()[-40:])


def run_all(binary, targets, secs, corpus_root, artifacts, first=1):
    """Print one TAP line per target; returns (passed, failed)."""
    seed_dir = tempfile.mkdtemp(prefix='vfio-user-seeds-')
    results = []
    n = first

    def report(ok, desc, tail):
        nonlocal n
        print(f'{"ok" if ok else "not ok"} {n} - {desc}', flush=True)
        if not ok:
            print(f'--- output ---\n{tail}\n---', flush=True)
        results.append(ok)
        n += 1

    try:
        make_seeds(seed_dir)
        for t in targets:
            ok, execs, crashes, tail = run_target(binary, t, secs, corpus_root,
                                                  seed_dir, artifacts)
            report(ok, f'{t}: {execs} executions in {secs} s, '
                   f'{crashes} crashes', tail)
        ok, what, tail = check_hw_error_is_crash(binary, seed_dir)
        report(ok, f'an input reaching hw_error is a crash: {what}', tail)
    finally:
        shutil.rmtree(seed_dir, ignore_errors=True)
    return results.count(True), results.count(False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--binary', required=True, help='qemu-fuzz-x86_64')
    ap.add_argument('--time', type=int, default=300, help='seconds per target')
    ap.add_argument('--corpus', required=True, help='corpus folder')
    ap.add_argument('--artifacts', required=True, help='crash folder')
    ap.add_argument('targets', nargs='*', default=TARGETS)
    args = ap.parse_args()
    passed, failed = run_all(args.binary, args.targets, args.time,
                             args.corpus, args.artifacts)
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
