"""benchmarks/defaults.py at tiny sizes: every row runs, the summary table and the target checks are written."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_defaults_benchmark_runs_small(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("defaults", None)
    import defaults

    assert {"esn", "lstm", "transformer", "lmu_fft"} <= set(defaults.sequence_models())
    assert "cnn_lstm" not in defaults.sequence_models()  # raw frames only
    reference = defaults.published()  # the bake off's results shipped with aeon: the default split's accuracy
    assert reference["uea:ArrowHead"] == (0.8685714285714285, "HIVE-COTE 2, bake off redux 2024")
    assert reference["uea:PickupGestureWiimoteZ"][1].startswith("WEASEL 2.0 on the _eq version")
    args = ["--small", "--models", "esn", "lstm", "--seeds", "0", "--out", str(tmp_path), "--tag", "t.1"]
    out = defaults.main(args)
    rows = [json.loads(line) for line in (tmp_path / "defaults-t.1.jsonl").read_text().splitlines()]
    assert {(r["data"], r["model"], r["seed"]) for r in rows} == {
        (d, m, 0) for d in ("synthetic:motion", "synthetic:recall") for m in ("esn", "lstm")}
    assert all(0 <= r["test_accuracy"] <= 1 and r["train_seconds"] > 0 for r in rows)
    assert [r for r in rows if r["model"] == "lstm"][0]["epochs"] >= 30  # the default (auto) budget
    text = (tmp_path / "defaults-t.1.md").read_text()
    assert "| synthetic:recall | lstm |" in text and ("every target met" in text or "missed:" in text)
    assert out["rows"] == rows
    again = defaults.main(args)  # everything recorded: nothing runs again
    assert again["rows"] == rows
