"""init_from a run directory on this machine (si_hf.branch): the rounds before the branch are copied, not
computed again; the branch continues under its own recipe; a wrong source is refused by name."""

import contextlib
import io
import json

import pytest
from datasets import load_from_disk

from conftest import SMALL
from si_hf import SIForCausalLM
from si_hf.labeling import greedy_label
from si_hf.manifest import read_manifest
from si_hf.records import read_record, read_summary, without_timing
from si_hf.tasks import get_task
from si_hf.tokenization import task_tokenizer

pytestmark = pytest.mark.slow


def _run(main, argv) -> tuple[int, str, str]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def source(tmp_path_factory, write_recipe, run_rounds_main):
    root = tmp_path_factory.mktemp("branch")
    argv = write_recipe(root, name="source", num_rounds=2, num_threads=1, **SMALL)
    assert _run(run_rounds_main, argv)[0] == 0
    return root


def test_a_branch_copies_the_shared_rounds_and_trains_only_its_own(source, run_rounds_main, write_recipe):
    src = source / "source"
    argv = write_recipe(source, name="branch", num_rounds=2, num_threads=1, corrupt_round=2, corrupt_fraction=0.5,
                        **SMALL) + ["--init_from", f"{src}@round-1"]
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 0, err
    out = source / "branch"
    assert log.count("train_runtime") == 1  # round 2 only
    for k in (0, 1):
        assert without_timing(read_record(out, k)) == without_timing(read_record(src, k))
        assert (out / f"round-{k}" / "data" / "data-00000-of-00001.arrow").read_bytes() == (
            src / f"round-{k}" / "data" / "data-00000-of-00001.arrow").read_bytes()
    assert read_manifest(out / "round-1")["parent"] == f"{src}@round-0"
    assert read_manifest(out / "round-2")["parent"] == f"{src}@round-1"
    assert read_record(out, 2).labels.corruption["fraction"] == 0.5  # its own recipe from round 2 on
    assert [rec.round for rec in read_summary(out)] == [0, 1, 2]
    card = (out / "round-2" / "model" / "README.md").read_text()
    assert f"`{src}@round-1` (a run on the machine that trained this round)" in card
    assert json.loads((out / "hub_state.json").read_text())["imported"] == {"from": f"{src}@round-1", "last_round": 1}
    rc, log, _ = _run(run_rounds_main, argv)  # a rerun: the lineage holds, nothing to do
    assert rc == 0 and "are finished" in log


@pytest.mark.parametrize("change, message", [
    ({"init_from_round": 2, "num_rounds": 2}, "num_rounds must be more than 2"),
    ({"init_from_round": 5, "num_rounds": 6}, "is not a finished round"),
    ({"task": "reverse"}, "its task is 'copy'"),
])
def test_a_source_that_does_not_fit_is_refused_by_name(source, run_rounds_main, write_recipe, change, message):
    k = change.pop("init_from_round", 1)
    argv = write_recipe(source, name="refused", **{**SMALL, "num_rounds": 3, **change})
    rc, _, err = _run(run_rounds_main, argv + ["--init_from", f"{source / 'source'}@round-{k}"])
    assert rc == 2 and message in err, err
    assert not list((source / "refused").glob("round-*"))


def test_a_corrupted_source_round_is_named(tmp_path, source, run_rounds_main, write_recipe):
    import shutil

    copy = tmp_path / "source"
    shutil.copytree(source / "source", copy)
    weights = copy / "round-1" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    argv = write_recipe(tmp_path, name="branch", num_rounds=2, **SMALL) + ["--init_from", f"{copy}@round-1"]
    rc, _, err = _run(run_rounds_main, argv)
    assert rc == 4 and str(weights) in err and "corrupted" in err, err


def test_a_vote_starts_its_lineages_from_other_runs_rounds(source, run_rounds_main, write_recipe):
    """lineages_from: lineage 1 starts from another run's round; round 2's labels are exactly what both
    round-1 models wrote (a unanimous vote of 2), and a rerun goes on from this run's own lineage 1."""
    other = source / "other"
    argv = write_recipe(source, name="other", seed=1, num_rounds=1, num_threads=1, **SMALL)
    assert _run(run_rounds_main, argv)[0] == 0
    vote = dict(num_rounds=2, num_threads=1, num_seeds=2, filters=["majority_vote:tau=1.0"], **SMALL)
    argv = write_recipe(source, name="vote", **vote) + ["--init_from", f"{source / 'source'}@round-1",
                                                      "--lineages_from", f"{other}@round-1"]
    rc, log, err = _run(run_rounds_main, argv)
    assert rc == 0, err
    out = source / "vote"
    assert log.count("train_runtime") == 2  # round 2, both lineages
    data = load_from_disk(str(out / "round-2" / "data"))
    assert len(data) > 0
    tok = task_tokenizer(get_task("copy"))
    bounds = [len(p) - 1 for p in data["prompt"]]
    for run in (source / "source", other):
        model = SIForCausalLM.from_pretrained(run / "round-1" / "model")
        assert [lab.completion for lab in greedy_label(model, tok, data["prompt"], bounds)] == data["completion"]
    assert (out / "round-2" / "models" / "seed-1" / "model.safetensors").is_file()
    rc, log, err = _run(run_rounds_main, argv + ["--num_rounds", "3"])  # resumes lineage 1 from round-2/models
    assert rc == 0 and "continuing with round 3" in log, err
    assert (out / "round-3" / "models" / "seed-1" / "model.safetensors").is_file()


def test_a_lineage_source_that_does_not_fit_is_refused_by_name(tmp_path, source, run_rounds_main, write_recipe):
    import shutil

    vote = dict(num_rounds=2, num_seeds=2, filters=["majority_vote"], **SMALL)
    start = ["--init_from", f"{source / 'source'}@round-1", "--lineages_from"]
    argv = write_recipe(tmp_path, name="vote", **vote) + start + [f"{tmp_path / 'missing'}@round-1"]
    rc, _, err = _run(run_rounds_main, argv)
    assert rc == 2 and "lineages_from" in err and "missing@round-1" in err, err
    copy = tmp_path / "copy"
    shutil.copytree(source / "source", copy)
    weights = copy / "round-1" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    rc, _, err = _run(run_rounds_main, argv[:-1] + [f"{copy}@round-1"])
    assert rc == 4 and str(weights) in err, err
    assert not list((tmp_path / "vote").glob("round-*"))
