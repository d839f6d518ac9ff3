"""echoes: train and compare temporal neural architectures on the same data, every run tracked."""

import os

# OpenMP threads that spin while waiting for a descheduled partner stall every small
# parallel step on a shared machine: with 2 threads at load ~6, reservoir harvests ran
# 5-10× and LSTM epochs 2-3× faster with sleeping waits (see BENCHMARKS.md). Read once,
# when torch loads, so it holds when echoes is imported first (the CLI); a value set
# by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
