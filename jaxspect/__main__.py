"""Command line: ``python -m jaxspect demo`` (also installed as ``jaxspect``)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jaxspect", description="SPECT reconstruction in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="torso phantom -> projections -> back projection -> OSEM, with figures")
    demo.add_argument("--size", type=int, default=64, help="in-plane voxels (default 64, 9.6 mm each)")
    demo.add_argument("--slices", type=int, default=40, help="axial slices (default 40)")
    demo.add_argument("--views", type=int, default=64, help="number of views (default 64)")
    demo.add_argument("--rotation", choices=("bilinear", "three_pass"), default="bilinear")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        run_demo(n=args.size, nz=args.slices, nview=args.views, rotation=args.rotation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
