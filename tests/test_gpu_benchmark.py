"""benchmarks/gpu.py at tiny sizes on the CPU: every part runs and reports what it measured."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_benchmark_runs_small_on_cpu(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("gpu", None)
    import gpu

    results = gpu.main(["--small", "--device", "cpu", "--out", str(tmp_path), "--tag", "t",
                        "--models", "esn", "lstm", "lmu_fft"])
    saved = json.loads((tmp_path / "gpu-t.json").read_text())
    assert [r["model"] for r in saved["sequence"]] == ["esn (500 units)", "esn (500 units, fixed reservoir)",
                                                       "esn (2000 units)", "lstm", "lstm, batch 256", "lmu_fft"]
    for row in saved["sequence"]:
        assert 0 <= row["test_accuracy"] <= 1 and row["train_s"] > 0 and row["inference_ms_per_seq"] > 0
    assert saved["sequence"][0]["harvest_s"] > 0 and saved["sequence"][3]["harvest_s"] is None
    h = saved["harvest"]
    assert h["flops"] == h["steps"] * h["batch"] * (2 * h["units"] ** 2 + 2 * h["units"] * h["features"])
    assert h["bare_tflops"] > 0 and h["harvest_tflops"] > 0
    assert [r["model"] for r in saved["video_training"]] == gpu.VIDEO_MODELS
    assert all(r["clips_per_s"] > 0 for r in saved["video_training"])
    assert [r["backbone"] for r in saved["frame_extraction"]] == gpu.BACKBONES
    est = saved["frame_extraction"][0]["ucf101"]
    assert est["total_s"] == max(est["decode_s"], est["backbone_s"])
    text = (tmp_path / "gpu-t.md").read_text()
    assert "esn (500 units)" in text and "r2plus1d_18" in text and "of bare rate" in text
    assert results["device"] == "cpu"
