"""Run a command in a session of its own and clean up after it.

Shared by scripts/vfio-user-check.py and scripts/vfio-user-fuzz.py.
Output goes to a temporary file, not a pipe: a process the command left
behind must not keep us waiting for end-of-file.  The command gets its
own session (sid = its pid), so that whatever it leaves running can be
found and killed.
"""

import os
import signal
import subprocess
import tempfile
import time


def session_leftovers(sid):
    """Live processes of session sid: [(pid, command line)]."""
    found = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                rest = f.read().rsplit(')', 1)[1].split()
            if int(rest[3]) != sid or rest[0] == 'Z':
                continue
            with open(f'/proc/{d}/cmdline', 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode(errors='replace')
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        found.append((int(d), cmd.strip()[:120]))
    return found


def run(argv, timeout, env=None, cwd=None, term_grace=0):
    """Run argv for at most timeout seconds.

    On a time-out the session gets SIGTERM first when term_grace > 0 (a
    scenario script then stops its VMs itself) and SIGKILL after that
    many seconds.  Returns (exit code or None on a time-out, output,
    [(pid, command line)] of the processes left behind, now killed).
    """
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            if term_grace:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=term_grace)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        # Anything still alive in the session after a normal exit was
        # left behind; give exiting processes a moment before judging.
        left = []
        for _ in range(20):
            left = session_leftovers(proc.pid)
            if not left:
                break
            time.sleep(0.1)
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.seek(0)
        out = log.read().decode(errors='replace')
    return rc, out, left
