"""Works when installed: the core install (`pip install echoes`) trains and compares; an optional
package that is missing is one line naming the extra that installs it."""

import importlib.util
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from echoes.utils import MissingExtra, require

ROOT = Path(__file__).resolve().parents[1]


def _uea():
    from echoes.api import load_data

    load_data(data="uea:BasicMotions")


def _speech(tmp_path):
    from echoes.data.speech.sphere import read_audio

    read_audio(tmp_path / "a.wav")


def _video_frames(tmp_path):
    from echoes.data.video.decode import decode_clip

    decode_clip(tmp_path / "clip.avi", 4, 32)


def _video_model():
    from echoes.models import create_model

    create_model("r2plus1d_18", input_size=3 * 112 * 112, num_classes=2, weights="none")


def _tensorboard(tmp_path):
    from echoes.config import TrackingConfig
    from echoes.tracking import tracker

    with tracker(TrackingConfig(enabled=False, tensorboard=True, results_dir=str(tmp_path)), "run"):
        pass


@pytest.mark.parametrize("blocked, extra, use", [
    ("aeon", "uea", lambda tmp: _uea()),
    ("soundfile", "speech", _speech),
    ("av", "video", _video_frames),
    ("torchvision", "video", lambda tmp: _video_model()),
    ("tensorboard", "tensorboard", _tensorboard),
])
def test_a_missing_optional_package_names_its_extra(tmp_path, monkeypatch, blocked, extra, use):
    monkeypatch.setitem(sys.modules, blocked, None)  # as if not installed: importing it fails
    with pytest.raises(MissingExtra) as e:
        use(tmp_path)
    message = str(e.value)
    assert f"'{blocked}' is not installed" in message and f"pip install 'echoes[{extra}]'" in message
    assert "\n" not in message


def test_require_returns_the_module_and_tells_a_broken_install_from_a_missing_one(tmp_path, monkeypatch):
    assert require("json", "report").dumps([1]) == "[1]"
    (tmp_path / "halfinstalled").mkdir()
    (tmp_path / "halfinstalled" / "__init__.py").write_text("import echoes_test_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = r"^sweeps: 'halfinstalled' is installed but does not import \(ModuleNotFoundError: "
    with pytest.raises(MissingExtra, match=broken + r".*echoes_test_absent_dependency.*echoes\[sweep\]'$"):
        require("halfinstalled", "sweep")
    with pytest.raises(MissingExtra, match=r"^sweeps: 'echoes_test_absent' is not installed — "):
        require("echoes_test_absent.sub", "sweep")


# --- the built wheel, installed with the core dependencies only ---------------------------------------------------

def _requirements(dist: metadata.Distribution) -> list[str]:
    """Names of the distributions `dist` needs, extras left out (what `pip install` of it pulls)."""
    from packaging.requirements import Requirement

    names = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def _core_site(wheel_metadata: metadata.PathDistribution, folder: Path) -> Path:
    """A site folder holding links to exactly the distributions a core install of the wheel gets, taken
    from this environment (no download: torch alone is gigabytes)."""
    folder.mkdir()
    todo, seen = _requirements(wheel_metadata), set()
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # an optional dependency of a dependency
            continue
        if dist.metadata["Name"].lower() in seen:
            continue
        seen.add(dist.metadata["Name"].lower())
        todo += _requirements(dist)
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or []}:
            if top not in ("..", "__pycache__") and not top.endswith(".pth") and not (folder / top).exists():
                (folder / top).symlink_to(site / top)
    return folder


@pytest.fixture(scope="module")
def core_install(tmp_path_factory):
    """The wheel built from this checkout, installed in a fresh venv that sees the core dependencies only."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # a copy: building writes build/ and egg-info beside the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []  # else PyPI's setuptools
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *offline, "-q", "-w", str(tmp / "dist"),
                    str(source)], check=True, capture_output=True, timeout=600)
    [wheel] = (tmp / "dist").glob("echoes-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    purelib = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    [info] = Path(purelib).glob("echoes-*.dist-info")
    core = _core_site(metadata.PathDistribution(info), tmp / "core")
    (Path(purelib) / "core-deps.pth").write_text(f"{core}\n")
    return venv


def _outside(*command, cwd):
    """A command of the installed venv, blind to this checkout's sources."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_core_install_runs_a_packaged_suite_from_any_folder(core_install, tmp_path, tiny_npz, migrated_store):
    (tmp_path / "echoes-runs").mkdir()
    shutil.copyfile(migrated_store, tmp_path / "echoes-runs" / "mlflow.db")
    where = _outside(core_install / "bin" / "python", "-c", "import echoes, importlib.util as u; "
                     "print(echoes.__file__); print([m for m in ('aeon', 'av', 'torchvision', 'soundfile', "
                     "'optuna', 'plotly', 'kaleido', 'tensorboard') if u.find_spec(m)])", cwd=tmp_path)
    assert where.stdout.splitlines() == [f"{where.stdout.split(chr(10))[0]}", "[]"], where.stderr
    assert where.stdout.startswith(str(core_install))  # the wheel, without the extras

    echoes = core_install / "bin" / "echoes"
    p = _outside(echoes, "compare", "quick", "seeds=[0]", "models=[{name: esn, units: 30}, "
                "{name: lstm, hidden_size: 8}]", f"datasets=[npz:{tiny_npz}]", "train.epochs=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "no report: the HTML/PNG report: 'plotly' is not installed — pip install 'echoes[report]'" in p.stdout
    [folder] = (tmp_path / "echoes-runs" / "compare").glob("quick-*")
    rows = (folder / "runs.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",finished," in r for r in rows[1:])

    p = _outside(echoes, "train", "data=uea:BasicMotions", "tracking=false", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == ("echoes: error: UEA/UCR datasets (uea:): 'aeon' is not installed — "
                                "pip install 'echoes[uea]'")
