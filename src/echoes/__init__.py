"""echoes: train and compare temporal neural architectures on the same data, every run tracked."""

import os

# torch's OpenMP threads spin ~300,000 times before sleeping when they wait for each other.
# When the cores are shared, a spinning thread waits for a partner that is not running and
# every small parallel step (one per reservoir time step, several per LSTM step) stalls. A
# short spin was fastest both idle and under load (benchmarks/omp_wait_policy.py, see
# BENCHMARKS.md). libgomp reads it once, when torch loads: echoes must be imported first
# (the CLI is). A wait policy or spin count the user set wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
