"""Runs the workspace's tests with a time limit, their output teed to a log.

    python tests/watchdog.py LIMIT_SECONDS LOG -- COMMAND...

A test that never ends would otherwise hold the whole run until CI kills it from outside, and
then the part of the output CI keeps (its end) names nothing. Past the limit this prints, as the
last thing in the output, which tests were still running (libtest's "has been running for over
60 seconds" lines without a result line), and the stack of every thread of each test process
still alive (gdb, when the machine has it), then kills the command's process group and exits 124.
Otherwise it exits with the command's own status.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading

RESULT = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)")
SLOW = re.compile(r"^test (\S+) has been running for over \d+ seconds")


def tee(stream, log, finished, slow):
    """Copies the output to stdout and the log, noting the tests that ended and the slow ones."""
    for raw in iter(stream.readline, b""):
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        log.write(raw)
        log.flush()
        line = raw.decode("utf-8", "replace")
        if m := RESULT.match(line):
            finished.add(m.group(1))
        elif m := SLOW.match(line):
            slow.append(m.group(1))


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def descendants(root):
    """Every process below `root`, read from /proc (no psutil on a fresh machine)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def stacks(pid):
    """The threads of `pid` that are in the project's code, with their frames."""
    if not shutil.which("gdb"):
        return "(no gdb here: no stacks)"
    try:
        out = subprocess.run(
            ["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "set pagination off",
             "-ex", "thread apply all bt 40"],
            capture_output=True, text=True, timeout=120,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(gdb failed: {e})"
    threads, current = [], []
    for line in out.splitlines():
        if line.startswith("Thread "):
            if current:
                threads.append(current)
            current = [line]
        elif current and line.startswith("#"):
            current.append(line)
    if current:
        threads.append(current)
    # Of each thread, the frames in the tests or the crates under test: a hung test's thread
    # shows where it waits; the runtime's idle workers, the OS's threads and libtest's own main
    # thread show none and are left out.
    ours = re.compile(r"\b(it|gatehouse\w*)::")
    report = []
    for thread in threads:
        frames = [f[:240] for f in thread[1:] if ours.search(f) and "it::main" not in f]
        if frames:
            report.append("\n".join([thread[0], *frames[:12]]))
    return "\n".join(report) or "(no thread in the project's code)"


def main():
    limit, log_path = float(sys.argv[1]), sys.argv[2]
    command = sys.argv[sys.argv.index("--") + 1:]
    finished, slow = set(), []
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        reader = threading.Thread(target=tee, args=(child.stdout, log, finished, slow), daemon=True)
        reader.start()

        # The command runs in a session of its own (so that its whole group can be stopped):
        # an interrupt or a TERM sent to the test command must stop it too.
        def stop(signum, _frame):
            kill_group(child.pid)
            sys.exit(128 + signum)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            status = child.wait(timeout=limit)
            reader.join()
            return status
        except subprocess.TimeoutExpired:
            pass
        report = [f"\nwatchdog: the tests ran past their limit of {limit:.0f} s and are stopped."]
        report.append("still running: " + (", ".join(t for t in slow if t not in finished)
                                           or "(none over 60 s named by libtest)"))
        for pid in [child.pid, *descendants(child.pid)]:
            line = cmdline(pid)
            if "/deps/" in line:
                report.append(f"\ntest process {pid}: {line}\n{stacks(pid)}")
        text = "\n".join(report) + "\n"
        sys.stdout.write(text)
        sys.stdout.flush()
        log.write(text.encode())
        kill_group(child.pid)
        child.wait()
        return 124


if __name__ == "__main__":
    sys.exit(main())
