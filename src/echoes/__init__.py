"""echoes: train and compare temporal neural architectures on the same data, every run tracked.

```python
from echoes import train, load_model
result = train(model="esn", data="uea:BasicMotions")
result.model.predict(sequences)
```
"""

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

_API = ("Model", "RunResult", "compare", "create_model", "load_data", "load_model", "train")


def __getattr__(name: str):  # the API loads torch: only when asked for, so `import echoes` stays light
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'echoes' has no attribute {name!r}")


__all__ = list(_API)
