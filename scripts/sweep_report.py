"""Summarise a sweep: python scripts/sweep_report.py multirun/<date>_<time>

Prints every job's swept overrides and metric, best first (failed jobs last, with their error), and
writes sweep_report.md and sweep_report.png (metric against each swept parameter) into the sweep folder.
"""

import argparse
import sys
from pathlib import Path

from stylegan_transfer.sweeps import report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder (hydra.sweep.dir)")
    args = parser.parse_args()
    if not args.sweep_dir.is_dir():
        print(
            f"error: {args.sweep_dir} is not a folder; pass the multirun folder of a sweep", file=sys.stderr
        )
        return 2
    table, png = report(args.sweep_dir)
    print(table)
    print(f"\nwritten: {args.sweep_dir / 'sweep_report.md'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
