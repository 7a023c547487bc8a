"""Run one job worker's command and record how it exited.

Standalone on purpose (standard library only, started by path, not as ``nubis``'s module), so it
adds no import time to a worker. The local backend starts ``python worker_exit.py EXIT_FILE CMD...``
as the leader of the worker's process group: the platform signals the group, the command gets
the signal, and this wrapper (which ignores it) writes the command's exit code to ``EXIT_FILE``
(negative: killed by that signal). A control plane that was down when the worker ended still
learns from the file whether it succeeded.
"""

import os
import signal
import subprocess
import sys


def _record(path: str, code: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(str(code))
    os.replace(tmp, path)


def main() -> int:
    exit_file, argv = sys.argv[1], sys.argv[2:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # a Python handler (not SIG_IGN, which the child would inherit): the child keeps the default
        signal.signal(sig, lambda *_: None)
    try:
        child = subprocess.Popen(argv)
    except OSError as exc:
        print(f"error: cannot run {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        _record(exit_file, 127)
        return 127
    code = child.wait()
    _record(exit_file, code)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
