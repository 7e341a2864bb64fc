"""Two processes on the CPU (`accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml`, gloo):
labeling, confidence and evaluation split between them give what one process gives, and a whole run
(DDP training with the global batch split in two) leaves the same rounds as a single-process run,
written by the main process alone. The same run under FSDP (recipes/accelerate/fsdp.yaml, version 2,
two CPU processes) leaves the same round data and evaluation too."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from si_hf.config import RecipeError
from si_hf.distributed import map_split, mean_over_processes, per_device_batch_size, process_state
from si_hf.manifest import finished_rounds

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU_2PROC = REPO_ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"
FSDP = REPO_ROOT / "recipes" / "accelerate" / "fsdp.yaml"

# The micro recipe, smaller still: one round after round 0.
TINY = dict(base_steps=40, base_warmup_steps=10, base_decay_steps=20, round_steps=6, round_decay_steps=3,
            labels_per_round=48, eval_size=16, num_rounds=1, num_threads=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_2proc(script, *args, timeout=300, config=CPU_2PROC) -> subprocess.CompletedProcess:
    # No GPU in sight: si_hf.distributed.process_state connects the two processes over gloo on the CPU.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("ACCELERATE_USE_CPU", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
           "--main_process_port", str(_free_port()), str(script), *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_one_process_is_a_plain_call():
    assert map_split(lambda xs: [x * 2 for x in xs], range(5), groups=list("aabbb")) == [0, 2, 4, 6, 8]
    assert mean_over_processes(1.5) == 1.5
    assert process_state().num_processes == 1


def test_batch_size_is_global():
    assert per_device_batch_size(32, 1) == 32
    assert per_device_batch_size(32, 2) == 16
    with pytest.raises(RecipeError, match="global batch.*divisible.*processes \\(3\\)"):
        per_device_batch_size(32, 3)


def test_fsdp_on_the_cpu_needs_version_2(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("FSDP version 1 is only refused on the CPU")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # checked before any process group is made
    with pytest.raises(RecipeError, match="fsdp_version: 2"):
        process_state()


def test_labeling_and_evaluation_split_between_two_processes(trained_copy_model, tokenizer, tmp_path):
    """A fixed model: labels, confidences and the eval table of two processes equal one process's, and each
    process computed about half of every level's rows."""
    import runpy

    worker = REPO_ROOT / "tests" / "distributed_worker.py"
    trained_copy_model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    _launch_2proc(worker, tmp_path / "model", tmp_path / "two.json")
    two = json.loads((tmp_path / "two.json").read_text())
    one = json.loads(json.dumps(runpy.run_path(str(worker))["compute"](trained_copy_model, tokenizer)))

    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert two["distributed_type"] == "DistributedType.MULTI_CPU"
    n = len(one["labels"])
    shares = two["shares"]
    assert sorted(shares[0] + shares[1]) == list(range(n))
    assert abs(len(shares[0]) - len(shares[1])) <= 6  # every level split in two: at most one row apart each
    # The comparison is meaningful: rows finish or not, some labels are right, others wrong.
    finished = [f for _, _, f in one["labels"]]
    assert any(finished) and not all(finished)
    assert 0 < one["eval"]["exact_match"] < 1

    assert two["labels"] == one["labels"]
    assert two["confidence"] == pytest.approx(one["confidence"], abs=1e-6)
    assert two["eval"] == one["eval"]


@pytest.fixture(scope="module")
def one_run(tmp_path_factory, write_recipe, run_rounds_main):
    """The tiny recipe run by one process."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("one")
    argv_one = write_recipe(root, name="one", **TINY)
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_rounds_main(argv_one) == 0
    return root / "one"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, write_recipe, one_run):
    """The same tiny recipe run by two processes (DDP) and by one."""
    root = tmp_path_factory.mktemp("distributed")
    argv_two = write_recipe(root, name="two", **TINY)
    proc = _launch_2proc(REPO_ROOT / "scripts" / "run_rounds.py", *argv_two)
    return one_run, root / "two", proc.stdout


def test_two_processes_run_the_loop_like_one(two_runs):
    from datasets import load_from_disk

    one, two, stdout = two_runs
    assert finished_rounds(two) == finished_rounds(one) == [0, 1]
    for k in (0, 1):
        rec_one = json.loads((one / f"round-{k}" / "eval.json").read_text())
        rec_two = json.loads((two / f"round-{k}" / "eval.json").read_text())
        # Each step of the two processes trains on the same rows (the global batch, split in two), so the
        # weights differ only by float summation order: same labels, same round data, same evaluation.
        assert load_from_disk(str(two / f"round-{k}" / "data")).to_list() == \
            load_from_disk(str(one / f"round-{k}" / "data")).to_list()
        for key in ("levels_trained", "frontier", "accuracy_by_level", "eval_size_by_level", "exact_match",
                    "labels", "train_steps", "stage"):
            assert rec_two[key] == rec_one[key], key
        assert rec_two["train_loss"] == pytest.approx(rec_one["train_loss"], rel=1e-4)  # the mean over both
    assert stdout.count("[round 1/1]") == 1  # only the main process logs the progress


def test_only_the_main_process_writes(two_runs):
    import torch
    from transformers import AutoModelForCausalLM

    one, two, _ = two_runs

    def tree(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".trainer" not in p.parts)

    assert tree(two) == tree(one)  # nothing twice, nothing half-written (no .round-<k>.tmp)
    assert not list(two.glob(".round-*"))
    assert len((two / "summary.jsonl").read_text().splitlines()) == 2
    a = AutoModelForCausalLM.from_pretrained(one / "round-1" / "model")
    b = AutoModelForCausalLM.from_pretrained(two / "round-1" / "model")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-4), name


def _fsdp_available() -> str | None:
    """Why FSDP2 cannot run here (None: it can)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        return "torch.distributed with gloo is not available on this platform"
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (FSDP2)
    except ImportError:
        return "this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)"
    return None


def test_fsdp_runs_the_loop_like_one_process(tmp_path, write_recipe, one_run):
    """recipes/accelerate/fsdp.yaml with two CPU processes: each round trains sharded, every process gathers
    the full weights, and the round data and evaluation are those of one process."""
    from datasets import load_from_disk

    reason = _fsdp_available()
    if reason:
        pytest.skip(reason)
    argv = write_recipe(tmp_path, name="fsdp", **TINY)
    proc = _launch_2proc(REPO_ROOT / "scripts" / "run_rounds.py", *argv, config=FSDP)
    fsdp, one = tmp_path / "fsdp", one_run
    # It trained sharded (not DDP): both rounds' weights were gathered from the two processes.
    assert proc.stdout.count("full weights gathered from 2 processes") == 2
    assert finished_rounds(fsdp) == finished_rounds(one) == [0, 1]
    for k in (0, 1):
        rec_one = json.loads((one / f"round-{k}" / "eval.json").read_text())
        rec_fsdp = json.loads((fsdp / f"round-{k}" / "eval.json").read_text())
        assert load_from_disk(str(fsdp / f"round-{k}" / "data")).to_list() == \
            load_from_disk(str(one / f"round-{k}" / "data")).to_list()
        for key in ("levels_trained", "frontier", "accuracy_by_level", "eval_size_by_level", "exact_match",
                    "labels", "train_steps", "stage"):
            assert rec_fsdp[key] == rec_one[key], key
        assert rec_fsdp["train_loss"] == pytest.approx(rec_one["train_loss"], rel=1e-4)
    assert proc.stdout.count("[round 1/1]") == 1  # only the main process logs the progress
    assert not list(fsdp.glob(".round-*"))

    def tree(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".trainer" not in p.parts)

    assert tree(fsdp) == tree(one)  # the same files, written once (by the main process)
    # The saved checkpoint is a plain full model (not a shard): it loads and matches one process's.
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(one / "round-1" / "model")
    b = AutoModelForCausalLM.from_pretrained(fsdp / "round-1" / "model")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert p.shape == q.shape and torch.allclose(p, q, atol=1e-4), name
