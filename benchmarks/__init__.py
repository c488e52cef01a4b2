"""jaxspect's benchmark scripts (figures, not tests).

Run each as a module from the repository root, e.g. ``python -m benchmarks.projector`` or
``python -m benchmarks.gpu --quick``; jaxspect is then imported from this checkout (or from
wherever it is installed, when run elsewhere with the repository root on ``PYTHONPATH``).
The problems live in :mod:`benchmarks.problems`, shared timing / memory / subprocess helpers in
:mod:`benchmarks._harness`. Scripts use jaxspect's public API only.
"""
