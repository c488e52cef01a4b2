"""Command line: ``python -m jaxspect {demo,simulate,reconstruct}`` (also installed as ``jaxspect``).

The parser and the subcommands live in :mod:`jaxspect._cli`.
"""

from __future__ import annotations

import sys

from ._cli import main as main

if __name__ == "__main__":
    sys.exit(main())
