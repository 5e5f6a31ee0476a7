"""``python -m benchmarks [SUITE ...] [--quick] [--json PATH] [--plot-dir DIR]``: see
:mod:`benchmarks.runner` and ``docs/benchmarks.md``."""

from benchmarks.runner import main

if __name__ == "__main__":
    main()
