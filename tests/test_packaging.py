"""A wheel install (not editable) holds every module and the card templates, and renders the cards."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from synthetic_records import round_record

from si_hf.cards import render_dataset_card, render_model_card
from si_hf.records import summary_text

REPO_ROOT = Path(__file__).resolve().parents[1]

RECIPE = {"task": "copy", "base_min_level": 1, "base_max_level": 4, "eval_min_level": 1, "eval_max_level": 3,
          "frontier_threshold": 0.99, "num_hidden_layers": 2, "hidden_size": 64, "position_encoding": "nope",
          "filters": ["length"]}
SUMMARY = [
    round_record(0, 2, {"1": 1.0, "2": 0.995, "3": 0.5}, wall_seconds=3.0),
    round_record(1, 3, {"1": 1.0, "2": 1.0, "3": 0.995}, labels={}, wall_seconds=2.0),
]

# Run by the installed copy, from a directory outside the checkout: prints both cards as JSON.
RENDER = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import si_hf
    from si_hf.cards import render_dataset_card, render_model_card
    from si_hf.records import parse_summary

    site, model_dir = Path(sys.argv[1]), Path(sys.argv[2])
    assert Path(si_hf.__file__).resolve().is_relative_to(site.resolve()), si_hf.__file__
    recipe, summary = json.loads(sys.argv[3]), parse_summary(sys.argv[4])
    card, _ = render_model_card(recipe, summary, 1, model_dir, model_repo="user/copy-rounds", data_repo="user/data")
    data = render_dataset_card(recipe, summary, [0, 1], data_repo="user/data", model_repo="user/copy-rounds")
    print(json.dumps({"model_card": card, "dataset_card": data, "si_hf": si_hf.__file__}))
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the sources (the build leaves nothing in the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    for name in ("si_hf", "model_cards"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(root / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (path,) = (root / "dist").glob("si_hf-*.whl")
    return path


def test_the_wheel_holds_every_module_and_the_card_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "si_hf").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    templates = {f"si_hf/model_cards/{p.name}" for p in (REPO_ROOT / "model_cards").iterdir() if p.is_file()}
    assert templates >= {"si_hf/model_cards/__init__.py", "si_hf/model_cards/model_card.md",
                         "si_hf/model_cards/dataset_card.md"}
    assert templates <= names, sorted(templates - names)
    assert not any(name.startswith("model_cards/") for name in names)  # no stray top-level package


def test_an_installed_wheel_renders_the_cards(wheel, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-c", RENDER, str(site), str(model_dir), json.dumps(RECIPE),
                           summary_text(SUMMARY)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed = json.loads(proc.stdout.splitlines()[-1])
    assert installed["si_hf"].startswith(str(site))
    card = installed["model_card"]
    assert "# user/copy-rounds (round 1)" in card and "Round 1 of a self-improvement run on the `copy` task" in card
    assert "| 1 | 5 | 3 | 1.000 | 1.000 | 0.995 | 0.875 | 8/10 | 2 |" in card
    assert "| 1 | 5 | 8 | 0.875 | 8/10 |" in installed["dataset_card"]
    # The same cards as the checkout renders.
    assert card == render_model_card(RECIPE, SUMMARY, 1, model_dir, model_repo="user/copy-rounds",
                                     data_repo="user/data")[0]
    assert installed["dataset_card"] == render_dataset_card(RECIPE, SUMMARY, [0, 1], data_repo="user/data",
                                                            model_repo="user/copy-rounds")
