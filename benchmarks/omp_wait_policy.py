"""OpenMP's wait policy on shared cores: spinning waits against sleeping ones.

    .venv/bin/python benchmarks/omp_wait_policy.py [--repeats 5]

torch's 2 OpenMP threads spin while they wait for each other. When other processes
compete for the cores, a spinning thread waits for a partner that is not running, and
every small parallel step (one per time step of a reservoir, several per LSTM step)
stalls. Each round starts one fresh process per setting (OpenMP reads it once, when
torch loads) that times an ESN harvest (256 sequences × 100 steps × 64 features, 500
units) and three LSTM training steps (32 × 100 × 6, 128 units); rounds interleave the
settings; medians. The answer depends on the load, printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import bench_utils
import numpy as np

CHILD = r"""
import json, time, warnings
import torch
from torch import nn
from echoes.models import create_model
warnings.filterwarnings("ignore")
torch.manual_seed(0)
esn = create_model("esn", input_size=64, num_classes=5, seed=0)
x, n = torch.randn(256, 100, 64), torch.full((256,), 100)
esn.features(x, n)
t0 = time.perf_counter(); esn.features(x, n); harvest = time.perf_counter() - t0
lstm = nn.LSTM(6, 128, batch_first=True)
opt = torch.optim.AdamW(lstm.parameters())
xs = torch.randn(32, 100, 6)
def step():
    out, _ = lstm(xs); loss = out[:, -1].pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
step()
t0 = time.perf_counter()
for _ in range(3):
    step()
print(json.dumps({"harvest": harvest, "lstm": time.perf_counter() - t0}))
"""


SETTINGS = {"libgomp default": {}, "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
            "GOMP_SPINCOUNT=10000 (echoes' default)": {"GOMP_SPINCOUNT": "10000"}}


def run(setting: dict[str, str]) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in bench_utils.OPENMP_WAIT_VARIABLES}
    env.update(setting)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {bench_utils.machine()} (this process; each child runs with its setting)\n")
    _, out = bench_utils.interleaved({k: lambda _, v=v: run(v) for k, v in SETTINGS.items()},
                                     args.repeats)
    rows = []
    for name, runs in out.items():
        rows.append([name] + [f"{np.median([o[w] for o in runs]):.3f}" for w in ("harvest", "lstm")])
    print(bench_utils.markdown_table(["setting (2 torch threads)", "ESN harvest s (256 × 100 steps)",
                                      "3 LSTM training steps s"], rows))
    print(f"\n{args.repeats} rounds; finished with {bench_utils.load()}")


if __name__ == "__main__":
    main()
