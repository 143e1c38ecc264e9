"""The `towerkit` command line (subcommands are registered by the foundation issue)."""

import sys


def main(argv=None) -> int:
    print("towerkit: no subcommands yet", file=sys.stderr)
    return 2
