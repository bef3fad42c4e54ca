"""Run the real `fastgate` CLI, and append the names of every imported module to the file
given as the first argument each time the process gets SIGUSR2 (a test's window onto what
the request path imports).

    python tests/helpers/dump_modules.py OUT run -c FILE
"""
import signal
import sys


def _dump(*_):
    with open(sys.argv[1], "a") as f:
        f.write("\n".join(sorted(sys.modules)) + "\n===\n")


signal.signal(signal.SIGUSR2, _dump)

from fastgate.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
