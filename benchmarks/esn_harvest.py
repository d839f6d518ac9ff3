"""How close the ESN state harvest runs to the machine's matrix-multiply rate, and when a sparse W pays.

    .venv/bin/python benchmarks/esn_harvest.py [--repeats 7] [--quick]

1. Rate: the float32 product W [N, N] × H [N, B] — the harvest's one product per
   step — timed alone, T times in a row, against ``esn.features`` on a [B, T, F]
   batch (input projection, recurrence, nonlinearity, leak, masking, pooling). Both
   are counted in the same dense floating-point operations: T·B·(2N² + 2NF) for the
   harvest. Target: the harvest reaches ≥ 50% of the bare product's rate.
2. Sparse vs dense W: harvest time with a dense W and with a CSR W, over units ×
   connectivity × batch size; speed-up > 1 means sparse is faster. This sets
   ``SPARSE_MAX_CONNECTIVITY`` / ``SPARSE_MIN_UNITS`` in echoes/models/reservoir.py.
Rounds interleave the candidates; times are medians.
"""

from __future__ import annotations

import argparse
import warnings

import bench_utils
import torch

from echoes.models import create_model


def esn(units: int, features: int, connectivity: float, sparse: bool):
    return create_model("esn", input_size=features, num_classes=2, units=units,
                        connectivity=connectivity, sparse=sparse, seed=0)


def rate(units: int, batch: int, steps: int, features: int, repeats: int) -> list[list[str]]:
    x = torch.randn(batch, steps, features)
    lengths = torch.full((batch,), steps)
    dense, sparse = esn(units, features, 0.1, False), esn(units, features, 0.1, True)
    w, h = torch.randn(units, units), torch.randn(units, batch)
    out = torch.empty(units, batch)

    def products(_):
        for _ in range(steps):
            torch.mm(w, h, out=out)

    times, _ = bench_utils.interleaved({"product": products,
                            "dense": lambda _: dense.features(x, lengths),
                            "sparse": lambda _: sparse.features(x, lengths)}, repeats)
    product_flops = steps * 2 * units * units * batch
    harvest_flops = steps * batch * (2 * units * units + 2 * units * features)
    peak = product_flops / times["product"] / 1e9
    rows = [[f"{units}", f"{batch}", "W×H product alone (dense)", f"{times['product']:.4f}",
             f"{peak:.1f}", "100%"]]
    for name in ("dense", "sparse"):
        gflops = harvest_flops / times[name] / 1e9
        rows.append([f"{units}", f"{batch}", f"harvest, {name} W (connectivity 0.1)",
                     f"{times[name]:.4f}", f"{gflops:.1f}", f"{100 * gflops / peak:.0f}%"])
    return rows


def sparse_grid(units_list: list[int], connectivities: list[float], batches: list[int], steps: int,
                repeats: int) -> list[list[str]]:
    rows = []
    for units in units_list:
        for c in connectivities:
            dense, sparse = esn(units, 16, c, False), esn(units, 16, c, True)
            for batch in batches:
                x, lengths = torch.randn(batch, steps, 16), torch.full((batch,), steps)
                times, _ = bench_utils.interleaved({
                    name: lambda _, m=model, x=x, n=lengths: m.features(x, n)
                    for name, model in (("dense", dense), ("sparse", sparse))}, repeats)
                rows.append([f"{units}", f"{c:g}", f"{batch}", f"{times['dense'] * 1e3:.1f}",
                             f"{times['sparse'] * 1e3:.1f}", f"{times['dense'] / times['sparse']:.2f}×"])
            print(f"  units {units}, connectivity {c:g} done ({bench_utils.load()})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer sizes in the sparse grid")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"machine: {bench_utils.machine()}\n")
    rows = rate(500, 256, 100, 64, args.repeats) + rate(500, 32, 100, 64, args.repeats)
    print(bench_utils.markdown_table(["units", "batch", "what (T = 100 steps, F = 64)", "seconds", "GFLOP/s",
                          "of product rate"], rows))
    print()
    grid = sparse_grid([200, 500] if args.quick else [100, 200, 500, 1000],
                       [0.05, 0.1, 0.2] if args.quick else [0.02, 0.05, 0.1, 0.2],
                       [32, 256], 50, args.repeats)
    print(bench_utils.markdown_table(["units", "connectivity", "batch", "dense ms", "sparse ms",
                          "sparse speed-up"], grid))
    print(f"\nfinished with {bench_utils.load()}")


if __name__ == "__main__":
    main()
