"""Never lose a round: kills at chosen points then a rerun, manifests, corrupted or missing files, a full
disk, determinism, and what a run leaves on disk (safetensors only, no implicit remote code).

The kills use the test hook of si_hf.killpoints (`SI_HF_TEST_KILL_AT=<point>:<round>`): the process
sends itself SIGKILL there. The first kill runs scripts/run_rounds.py in a fresh subprocess; the later
ones fork this (already imported) process and call the same `main`, which costs no start-up.
"""

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from si_hf.errors import RoundError
from si_hf.killpoints import ENV as KILL_ENV
from si_hf.manifest import MANIFEST, finished_rounds, read_manifest, sha256_file, verify_round, write_manifest
from si_hf.records import read_record, read_summary, without_timing

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]

# The micro recipe, smaller still: a whole 2-round run is a few seconds of one core.
SMALL = dict(base_steps=60, base_warmup_steps=10, base_decay_steps=20, round_steps=10, round_decay_steps=5,
             labels_per_round=64, eval_size=20, label_batch_size=32, num_rounds=2, num_threads=1)


def _run(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _fork_run(main, argv, kill_at: str, timeout: float = 600) -> int:
    """Runs `main(argv)` in a forked child with the kill hook set; returns the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: run, then leave without running any of pytest's clean-up
        rc = 70
        try:
            os.environ[KILL_ENV] = kill_at
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                rc = main(argv)
        finally:
            os._exit(rc)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the run to be killed at {kill_at} did not end in {timeout}s")
        time.sleep(0.1)


def _killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _fingerprint(out: Path, rounds=range(3)) -> dict:
    """What must not depend on how a run got there: the data's arrow bytes, the weights' bytes, the eval
    records and the summary rows (wall times left out)."""
    fp = {}
    for k in rounds:
        d = out / f"round-{k}"
        for path in sorted((d / "data").glob("*.arrow")) + [d / "model" / "model.safetensors"]:
            fp[str(path.relative_to(out))] = sha256_file(path)
        fp[f"round-{k}/eval.json"] = without_timing(read_record(out, k))
    fp["summary.jsonl"] = [without_timing(rec) for rec in read_summary(out)]
    return fp


@pytest.fixture(scope="module")
def reference(tmp_path_factory, write_recipe, run_rounds_main):
    """An uninterrupted run of the small recipe (rounds 0-2)."""
    root = tmp_path_factory.mktemp("resume")
    argv = write_recipe(root, name="ref", **SMALL)
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 0, log + err
    return root / "ref"


def _copy(reference: Path, tmp_path: Path, write_recipe, name="copy", **overrides) -> tuple[Path, list[str]]:
    """A copy of the reference run under tmp_path, and the argv that resumes it."""
    argv = write_recipe(tmp_path, name=name, **{**SMALL, **overrides})
    out = tmp_path / name
    shutil.copytree(reference, out)
    return out, argv


# -- determinism -----------------------------------------------------------------------------------

def test_same_recipe_and_seed_give_identical_rounds(reference, tmp_path, write_recipe, run_rounds_main):
    argv = write_recipe(tmp_path, name="again", **SMALL)
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 0, log + err
    assert _fingerprint(tmp_path / "again") == _fingerprint(reference)
    assert len(_fingerprint(reference)) == 3 * 3 + 1  # one arrow file, weights and a record per round


# -- manifests ------------------------------------------------------------------------------------

def test_every_round_has_a_manifest_of_all_its_files(reference):
    assert finished_rounds(reference) == [0, 1, 2]
    recipe_hashes = set()
    for k in range(3):
        d = reference / f"round-{k}"
        manifest = read_manifest(d)
        assert manifest["round"] == k and manifest["parent"] == (f"round-{k - 1}" if k else None)
        listed = set(manifest["files"])
        on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()} - {MANIFEST}
        assert listed == on_disk
        assert {"eval.json", "model/model.safetensors", "data/data-00000-of-00001.arrow"} <= listed
        for name, entry in manifest["files"].items():
            assert entry == {"sha256": sha256_file(d / name), "size": (d / name).stat().st_size}
        if k:
            assert manifest["parent_manifest_sha256"] == sha256_file(reference / f"round-{k - 1}" / MANIFEST)
        recipe_hashes.add(manifest["recipe_sha256"])
        verify_round(d)
    assert len(recipe_hashes) == 1
    assert not list(reference.glob(".round-*.tmp"))


def test_a_round_without_a_valid_manifest_does_not_count_and_is_recomputed(reference, tmp_path, write_recipe,
                                                                           run_rounds_main):
    out, argv = _copy(reference, tmp_path, write_recipe)
    (out / "round-2" / MANIFEST).write_text("{not json")
    assert finished_rounds(out) == [0, 1]
    (out / "round-2" / MANIFEST).unlink()
    assert finished_rounds(out) == [0, 1]
    (out / "summary.jsonl").write_text("")  # the records are rebuilt from the finished rounds
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 0, log + err
    assert "round-2 has no valid manifest.json" in log and log.count("train_runtime") == 1
    assert finished_rounds(out) == [0, 1, 2]
    assert _fingerprint(out) == _fingerprint(reference)


def test_a_gap_in_the_finished_rounds_names_the_round(reference, tmp_path, write_recipe, run_rounds_main):
    out, argv = _copy(reference, tmp_path, write_recipe)
    (out / "round-1" / MANIFEST).unlink()
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 4 and "round-1" in err and "manifest" in err


def _edit_manifest(directory: Path, **changes):
    manifest = read_manifest(directory)
    (directory / MANIFEST).write_text(json.dumps({**manifest, **changes}, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize("round_k, changes, reason", [
    (2, {"recipe_sha256": "0" * 64}, "round-2 was computed under another recipe"),
    (1, {"parent": None}, "round-1 names None as its parent, not round-0"),
    (2, {"parent": "round-0"}, "round-2 names 'round-0' as its parent, not round-1"),
    (1, {"note": "another run's round 1"}, "round-2 was computed from another round-1"),
])
def test_rounds_of_two_runs_in_one_directory_are_refused(reference, tmp_path, write_recipe, run_rounds_main,
                                                        round_k, changes, reason):
    """Resuming (here: a run whose rounds are all finished) checks that the rounds form one chain under
    one recipe, as two runs written into one directory would not."""
    out, argv = _copy(reference, tmp_path, write_recipe)
    _edit_manifest(out / f"round-{round_k}", **changes)
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 4, log + err
    assert reason in err and "are not one run" in err and "every later round" in err
    assert "finished" not in log


def test_a_resume_with_another_thread_count_is_warned_about(reference, tmp_path, write_recipe, run_rounds_main,
                                                           caplog):
    out, argv = _copy(reference, tmp_path, write_recipe)
    rc, log, err = _run(run_rounds_main, argv + ["--num_threads", "2"])
    assert rc == 0 and "finished" in log, log + err
    assert "num_threads was 1 and is 2 now" in caplog.text and "depart" in caplog.text


def test_a_run_older_than_manifests_is_adopted(reference, tmp_path, write_recipe, run_rounds_main):
    out, argv = _copy(reference, tmp_path, write_recipe)
    for k in range(3):
        (out / f"round-{k}" / MANIFEST).unlink()
    summary = (out / "summary.jsonl").stat()
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 0, log + err
    assert "adopted" in log and "finished" in log and "train_runtime" not in log
    assert finished_rounds(out) == [0, 1, 2]
    assert all(read_manifest(out / f"round-{k}")["adopted"] for k in range(3))
    assert (out / "summary.jsonl").stat().st_mtime_ns == summary.st_mtime_ns  # complete: not rewritten
    assert _fingerprint(out) == _fingerprint(reference)


# -- kills, then the same command again -------------------------------------------------------------

def test_killed_runs_resume_to_the_uninterrupted_result(reference, tmp_path, write_recipe, run_rounds_main):
    argv = write_recipe(tmp_path, name="killed", **SMALL)
    out = tmp_path / "killed"

    # 1. Mid-training of round 1, in a fresh process running the script.
    env = {**os.environ, KILL_ENV: "train:1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "scripts/run_rounds.py", *argv], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "train_runtime" in proc.stdout  # round 0 trained to the end
    assert finished_rounds(out) == [0] and not (out / "round-1").exists()

    # 2. Mid-labeling of round 1 (resumed from round 0).
    assert _killed(_fork_run(run_rounds_main, argv, "label:1"))
    assert finished_rounds(out) == [0] and not (out / "round-1").exists()

    # 3. Mid-save of round 1: the checkpoint is in the temporary directory, the data is not.
    assert _killed(_fork_run(run_rounds_main, argv, "save:1"))
    tmp = out / ".round-1.tmp"
    assert (tmp / "model" / "model.safetensors").is_file() and not (tmp / "data").exists()
    assert not (tmp / MANIFEST).exists()
    assert finished_rounds(out) == [0] and not (out / "round-1").exists()

    # 4. Round 2 renamed into place, the summary not yet rewritten.
    assert _killed(_fork_run(run_rounds_main, argv, "saved:2"))
    assert finished_rounds(out) == [0, 1, 2] and not tmp.exists()
    assert [json.loads(line)["round"] for line in (out / "summary.jsonl").read_text().splitlines()] == [0, 1]

    # 5. The same command once more: nothing to train, the summary is complete again.
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 0, log + err
    assert "All 2 rounds" in log and "train_runtime" not in log
    assert _fingerprint(out) == _fingerprint(reference)
    assert (out / "summary.md").read_text().count("\n") == 2 + 3
    assert not list(out.glob(".round-*.tmp"))


# -- bad rounds on disk ---------------------------------------------------------------------------

def _flip_a_byte(path: Path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,name,reason", [
    ("flip", "model/model.safetensors", "corrupted"),
    ("delete", "model/model.safetensors", "missing"),
    ("truncate", "data/data-00000-of-00001.arrow", "corrupted"),
    ("flip", "eval.json", "corrupted"),
])
def test_a_damaged_last_round_is_named(reference, tmp_path, write_recipe, run_rounds_main, damage, name, reason):
    out, argv = _copy(reference, tmp_path, write_recipe)
    path = out / "round-2" / name
    if damage == "flip":
        _flip_a_byte(path)
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-10])
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    rc, log, err = _run(run_rounds_main, argv + ["--num_rounds", "3"])
    assert rc == 4, log + err
    assert str(path) in err and reason in err
    assert "train_runtime" not in log and not (out / "round-3").exists()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_earlier_rounds_are_checked_by_size(reference, tmp_path, write_recipe, run_rounds_main):
    out, argv = _copy(reference, tmp_path, write_recipe)
    path = out / "round-0" / "data" / "data-00000-of-00001.arrow"
    path.write_bytes(path.read_bytes() + b"\0")
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 4 and str(path) in err and "corrupted" in err


def test_a_bad_safetensors_file_with_a_matching_manifest_is_named(reference, tmp_path, write_recipe,
                                                                   run_rounds_main):
    out, argv = _copy(reference, tmp_path, write_recipe)
    weights = out / "round-2" / "model" / "model.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")  # not a safetensors file
    manifest = read_manifest(out / "round-2")
    write_manifest(out / "round-2", 2, {}, parent=manifest["parent"])  # the checksums now match the bad file
    _edit_manifest(out / "round-2", recipe_sha256=manifest["recipe_sha256"])  # and it is of this run's recipe
    rc, log, err = _run(run_rounds_main, argv + ["--num_rounds", "3"])
    assert rc == 4, log + err
    assert str(weights) in err and "cannot load the checkpoint of finished round 2" in err
    assert not (out / "round-3").exists()


def test_a_full_disk_while_saving_leaves_no_round(tmp_path, write_recipe, run_rounds_main, monkeypatch):
    from datasets import Dataset

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Dataset, "save_to_disk", full)
    argv = write_recipe(tmp_path, name="full", **{**SMALL, "num_rounds": 0, "base_steps": 5, "base_warmup_steps": 0,
                                                   "base_decay_steps": 2, "eval_max_level": 2})
    out = tmp_path / "full"
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 4, log + err
    assert "disk is full" in err and "round 0" in err
    assert not (out / "round-0").exists() and not list(out.glob(".round-*"))
    assert finished_rounds(out) == []


def test_staged_round_removes_its_directory_on_any_error(tmp_path):
    from si_hf.manifest import staged_round

    with pytest.raises(KeyError):
        with staged_round(tmp_path, 0, {}) as tmp:
            (tmp / "x").write_text("x")
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RoundError, match="(?i)disk is full"):
        with staged_round(tmp_path, 0, {}):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    with staged_round(tmp_path, 0, {}) as tmp:
        (tmp / "x").write_text("x")
    assert finished_rounds(tmp_path) == [0] and (tmp_path / "round-0" / "x").read_text() == "x"
    with pytest.raises(RoundError, match="already a finished round"):
        with staged_round(tmp_path, 0, {}):
            pass
    assert (tmp_path / "round-0" / "x").read_text() == "x" and not (tmp_path / ".round-0.tmp").exists()


# -- bad input on the command line ------------------------------------------------------------------

@pytest.mark.parametrize("text,field", [
    ("task: [copy\n  x: : y\n", "not valid YAML"),
    ("task: copy\nlearning_rat: 0.1\n", "did you mean 'learning_rate'"),
    ("task: copyy\n", "did you mean 'copy'"),
    ("base_min_level: 5\nbase_max_level: 3\n", "base_min_level"),
    ("eval_min_level: 7\neval_max_level: 6\n", "eval_min_level"),
    ("base_steps: -10\n", "base_steps"),
    ("base_warmup_steps: -1\n", "base_warmup_steps"),
    ("frontier_threshold: 1.5\n", "frontier_threshold"),
    ("newest_fraction: -0.5\n", "newest_fraction"),
    ("learning_rate: [0.1]\n", "learning_rate"),
    ("filters: [lenght]\n", "did you mean 'length'"),
])
def test_bad_recipes_exit_2_naming_the_field_and_write_nothing(tmp_path, run_rounds_main, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    rc, log, err = _run(run_rounds_main, ["--config", str(path), "--output_dir", str(tmp_path / "out")])
    assert rc == 2 and field.lower() in err.lower() and err.startswith("error: ")
    assert not (tmp_path / "out").exists()


# -- safety ---------------------------------------------------------------------------------------

def test_under_accelerate_launch_quiet_a_bad_recipe_is_one_line(tmp_path):
    """As the README says: accelerate's launcher turns every failure into exit code 1 (the codes come from
    `python scripts/run_rounds.py`), and with --quiet adds nothing to the run's one error line."""
    path = tmp_path / "bad.yaml"
    path.write_text("task: copyy\n")
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file",
                           str(REPO_ROOT / "accelerate_config.yaml"), str(REPO_ROOT / "scripts" / "run_rounds.py"),
                           "--config", str(path), "--output_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: task: Unknown task 'copyy'. Did you mean 'copy'? Known "
                                                "tasks: copy, forward_addition, maze_chain_15, maze_hops, "
                                                "maze_hops_15, maze_nodes, multiplication, reverse, reverse_addition."]


def test_round_directories_hold_safetensors_and_no_pickles(reference):
    from safetensors import safe_open

    files = [p for p in reference.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    for path in files:
        assert path.suffix not in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"), path
        head = path.read_bytes()[:2]
        assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), path  # a pickle
        assert not zipfile.is_zipfile(path), path  # torch.save's format
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as fh:
                assert list(fh.keys())


def test_remote_code_is_never_trusted_by_default():
    """Every `trust_remote_code=` the package and scripts pass is a literal False."""
    import ast

    sources = sorted((REPO_ROOT / "si_hf").rglob("*.py")) + sorted((REPO_ROOT / "scripts").glob("*.py"))
    seen = 0
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                seen += 1
                assert isinstance(node.value, ast.Constant) and node.value.value is False, \
                    f"{path}:{node.value.lineno}: trust_remote_code must be a literal False"
            if isinstance(node, ast.Dict):  # {"trust_remote_code": ...} passed on as **kwargs
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                        assert isinstance(value, ast.Constant) and value.value is False, f"{path}:{key.lineno}"
    assert seen >= 0
