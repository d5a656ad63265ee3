"""Tiny stdlib-only job for fast runctl tests.

Prints each command-line argument as ``arg: <repr>``, then ``RUNCTL_JOB_ID=<value>``
(empty when unset), then ``line <i>`` for i in 1..N (``--lines N``, pausing
``--interval S`` seconds between lines, flushed), and finally exits with
``--exit-code C`` (default 0). Unknown arguments are accepted and only echoed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=0, help="number of 'line <i>' to print")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between lines")
    parser.add_argument("--exit-code", type=int, default=0, help="exit status to return")
    args, _unknown = parser.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for arg in argv:
        print(f"arg: {arg!r}", flush=True)
    print(f"RUNCTL_JOB_ID={os.environ.get('RUNCTL_JOB_ID', '')}", flush=True)
    args = parse_args(argv)
    for i in range(1, args.lines + 1):
        print(f"line {i}", flush=True)
        if args.interval > 0 and i < args.lines:
            time.sleep(args.interval)
    return int(args.exit_code)


if __name__ == "__main__":
    sys.exit(main())
