"""Rounds on the Hub through the real huggingface_hub, transformers, datasets and evaluate clients,
against a local Hub on loopback (tests/hub_server.py, started by the `local_hub` fixture): publish,
list, pull by revision, evaluate, load three ways, continue from a round, survive a failed push.

The clients read HF_ENDPOINT when imported, so runs and client scenarios are separate processes
(scripts/run_rounds.py, scripts/evaluate_round.py, tests/hub_clients.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import load_file
from synthetic_records import round_record

from conftest import LOCAL_HUB_TOKEN
from si_hf import cards, hub, records
from si_hf.config import RESUMABLE_CHANGES, RecipeError, parse_recipe
from si_hf.records import read_record, without_timing

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_REPO = "si-tests/copy-rounds"
DATA_REPO = "si-tests/copy-rounds-data"
CONTINUED_REPO = "si-tests/copy-continued"
METRIC_SPACE = "si-tests/level_exact_match"
# Small and quick, yet it learns level 1; no filter, so every round keeps all its labels and rounds
# differ in their rows.
HUB_RECIPE = dict(hidden_size=32, intermediate_size=64, base_steps=100, base_warmup_steps=5, base_decay_steps=30,
                  learning_rate=1e-2, num_rounds=2, round_steps=5, round_decay_steps=2, labels_per_round=40,
                  filters=[], eval_max_level=6, eval_size=10)
# scripts/run_rounds.py with the retries' waits cut to nothing (the retries themselves still happen).
RUN_ROUNDS = ("import runpy, sys\nimport si_hf.hub\nsi_hf.hub.BACKOFF_SECONDS = 0.0\n"
              "sys.exit(runpy.run_path(sys.argv[1])['main'](sys.argv[2:]))\n")


def run_rounds(local_hub, argv, home="runs"):
    return subprocess.run([sys.executable, "-c", RUN_ROUNDS, str(REPO_ROOT / "scripts" / "run_rounds.py"), *argv],
                          env=local_hub.env(home), capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


def clients(local_hub, scenario: str, args: dict, home: str, result_dir: Path) -> dict:
    result = result_dir / f"{scenario}.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "hub_clients.py"), scenario, json.dumps(args),
                           str(result)], env=local_hub.env(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(result.read_text())


def files_under(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- the scenario, run once for the module ----------------------------------------------------------
@pytest.fixture(scope="module")
def published(local_hub, tmp_path_factory, write_recipe):
    """A 2-round run pushing both repos, whose last model push fails (every try answers 503) and is
    completed by rerunning the same command."""
    root = tmp_path_factory.mktemp("published")
    argv = write_recipe(root, name="run", **HUB_RECIPE) + [
        "--push_to_hub", "true", "--hub_model_id", MODEL_REPO, "--hub_dataset_id", DATA_REPO]
    out = root / "run"
    # Model commits of rounds 0 and 1 go through; every try of round 2's fails.
    local_hub.fail(rf"^/api/models/{MODEL_REPO}/commit/", method="POST", skip=2)
    failed = run_rounds(local_hub, argv)
    local_hub.clear_faults()
    state_after_failure = json.loads((out / "hub_state.json").read_text())
    files_after_failure = files_under(out / "round-2")
    requests_before = len(local_hub.requests())
    rerun = run_rounds(local_hub, argv)
    commits_in_rerun = [r for r in local_hub.requests()[requests_before:] if "/commit/" in r]
    return SimpleNamespace(root=root, out=out, argv=argv, failed=failed, rerun=rerun,
                           state_after_failure=state_after_failure, files_after_failure=files_after_failure,
                           commits_in_rerun=commits_in_rerun)


@pytest.fixture(scope="module")
def seen(local_hub, published):
    """What a user with si_hf installed gets back from the Hub."""
    return clients(local_hub, "with_si_hf", {"model_repo": MODEL_REPO, "data_repo": DATA_REPO,
                                             "out": str(published.out), "rounds": [0, 1, 2],
                                             "metric_space": METRIC_SPACE},
                   "with_si_hf", published.root)


# -- publishing ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_round_has_a_branch_and_a_tag(published, seen):
    assert published.rerun.returncode == 0, published.rerun.stderr[-3000:]
    for refs in (seen["model_refs"], seen["data_refs"]):
        assert set(refs["branches"]) == {"main", "round-0", "round-1", "round-2"}
        assert set(refs["tags"]) == {"round-0", "round-1", "round-2"}
        for k in range(3):
            assert refs["tags"][f"round-{k}"] == refs["branches"][f"round-{k}"]
        assert len({refs["tags"][f"round-{k}"] for k in range(3)}) == 3  # one commit per round
        assert refs["branches"]["main"] == refs["tags"]["round-2"]  # main is the latest round
    state = json.loads((published.out / "hub_state.json").read_text())
    for repo_type, repo, refs in (("model", MODEL_REPO, seen["model_refs"]),
                                  ("dataset", DATA_REPO, seen["data_refs"])):
        assert state["pushed"][f"{repo_type} {repo}"] == {str(k): refs["tags"][f"round-{k}"] for k in range(3)}


@pytest.mark.slow
def test_download_by_revision_gives_that_rounds_weights_and_rows(published, seen):
    for k in range(3):
        got = seen["rounds"][str(k)]
        assert got["same_weights"] and got["same_rows"] and got["same_rows_by_config"], k
        assert got["commit"] == seen["model_refs"]["tags"][f"round-{k}"]
        assert {"model.safetensors", "config.json", "configuration_si.py", "modeling_si.py", "tokenizer.json",
                "tokenizer_config.json", "README.md", "accuracy_by_level.png", "eval.json"} <= set(got["files"])
        assert got["auto_map"]["AutoModelForCausalLM"] == "modeling_si.SIForCausalLM"
        assert got["eval"] == json.loads((published.out / f"round-{k}" / "eval.json").read_text())
        assert got["summary_rounds"] == list(range(k + 1))
    weights = [load_file(str(published.out / f"round-{k}" / "model" / "model.safetensors")) for k in range(3)]
    assert not all(torch.equal(weights[1][n], weights[2][n]) for n in weights[1])  # revisions really differ
    assert seen["main_is_last_round"] and seen["data_main_rows_are_last_round"]


@pytest.mark.slow
def test_auto_classes_load_without_remote_code_when_si_hf_is_imported(seen):
    auto = seen["auto"]
    assert auto["is_si_hf"] and auto["causal"].startswith("si_hf.") and auto["same_logits"]
    assert auto["tokens"] == ["<bos>", "1", "2", "3", "4", "="]


@pytest.mark.slow
def test_remote_code_loads_in_a_process_without_si_hf(local_hub, published):
    got = clients(local_hub, "without_si_hf", {"model_repo": MODEL_REPO, "data_repo": DATA_REPO,
                                               "out": str(published.out), "round": 1},
                  "without_si_hf", published.root)
    assert got["si_hf_importable"] is False and got["si_hf_modules"] == []
    assert got["class"].startswith("transformers_modules.") and got["class"].endswith("modeling_si.SIForCausalLM")
    assert got["same_weights"] and got["generated"] >= 1
    assert got["tokens"] == ["<bos>", "1", "2", "3", "4", "="]
    assert got["rows"] == 40 and got["levels"] == [5]  # round 1 labels level base_max_level + 1


@pytest.mark.slow
def test_card_renders_with_its_table_and_plot(published, seen):
    for k in range(3):
        card, record = seen["rounds"][str(k)]["card"], seen["rounds"][str(k)]["eval"]
        assert card["library_name"] == "transformers" and card["datasets"] == [DATA_REPO]
        assert card["metrics"] == {f"level_{lvl}": acc for lvl, acc in record["accuracy_by_level"].items()}
        text = card["text"]
        assert "![accuracy by level of every round so far](accuracy_by_level.png)" in text
        assert "| round | trained | frontier | @1 |" in text
        assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and
                line.split("|")[1].strip().isdigit()] == [str(j) for j in range(k + 1)]  # every round so far
        assert f'from_pretrained("{MODEL_REPO}", revision="round-{k}", trust_remote_code=True)' in text
        assert f'load_dataset("{DATA_REPO}", revision="round-{k}", split="train")' in text
        assert f"scripts/evaluate_round.py --model {MODEL_REPO} --revision round-{k}" in text
        assert f"| frontier | level {record['frontier']} " in text
        assert seen["rounds"][str(k)]["plot_is_png"]
    assert f"[{MODEL_REPO}@round-1]" in seen["rounds"]["2"]["card"]["text"]  # the parent round
    assert "| kept fraction | 40/40 (100.0%) |" in seen["rounds"]["2"]["card"]["text"]
    # The local round directory has the same card.
    assert (published.out / "round-2" / "model" / "README.md").read_text() == seen["rounds"]["2"]["card"]["readme"]


# -- faults ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failed_push_names_what_is_missing_and_a_rerun_pushes_it(published):
    failed = published.failed
    assert failed.returncode == 3, failed.stdout[-2000:] + failed.stderr[-3000:]
    err = failed.stderr
    assert f"round 2 was not pushed to the model repo {MODEL_REPO}" in err
    assert "failed 6 times" in err and "503" in err and "rerun the same command" in err
    # Locally the round is complete, and its data did reach the Hub before the model push failed.
    assert {"eval.json", "model/model.safetensors", "model/README.md", "data/dataset_info.json"} <= set(
        published.files_after_failure)
    assert "2" in published.state_after_failure["pushed"][f"dataset {DATA_REPO}"]
    assert "2" not in published.state_after_failure["pushed"][f"model {MODEL_REPO}"]
    # The rerun trains nothing, leaves the round alone, and pushes only what was missing.
    assert "train_runtime" not in published.rerun.stdout
    assert files_under(published.out / "round-2") == published.files_after_failure
    assert published.commits_in_rerun == [f"POST /api/models/{MODEL_REPO}/commit/main"]
    assert "[round 2] pushed to" in published.rerun.stdout


@pytest.mark.slow
def test_the_token_is_written_nowhere(local_hub, published):
    token = LOCAL_HUB_TOKEN.encode()
    for run in (published.failed, published.rerun):
        assert LOCAL_HUB_TOKEN not in run.stdout + run.stderr
    for path in published.out.rglob("*"):
        assert not path.is_file() or token not in path.read_bytes(), path
    for kind in ("models", "datasets"):  # git objects are compressed: read them through git below
        for path in (local_hub.repos / kind).rglob("*"):
            assert not path.is_file() or token not in path.read_bytes(), path
    for repo in (local_hub.repos / "models" / MODEL_REPO, local_hub.repos / "datasets" / DATA_REPO):
        history = subprocess.run(["git", "-C", str(repo), "log", "--all", "-p", "--text"], capture_output=True,
                                 check=True).stdout
        assert b"Round 2" in history and token not in history


def test_transient_failures_are_retried_then_reported(monkeypatch):
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    monkeypatch.setattr(hub, "BACKOFF_SECONDS", 0.0)

    def http_error(status):
        response = httpx2.Response(status, request=httpx2.Request("POST", "http://127.0.0.1:9/api/x"))
        try:
            hf_raise_for_status(response)
        except HfHubHTTPError as err:
            return err

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise [http_error(503), httpx2.ConnectError("connection refused")][len(calls) - 1]
        return "done"

    assert hub.with_retries("pushing round 1", flaky) == "done" and len(calls) == 3

    def timeout():
        calls.append(1)
        raise httpx2.ReadTimeout("timed out")

    calls.clear()
    with pytest.raises(hub.HubError, match=r"pushing round 4 failed 6 times; last error: ReadTimeout"):
        hub.with_retries("pushing round 4", timeout)
    assert len(calls) == hub.RETRIES + 1

    def forbidden():
        calls.append(1)
        raise http_error(403)

    calls.clear()
    with pytest.raises(hub.HubError, match="creating the model repo x/y failed"):
        hub.with_retries("creating the model repo x/y", forbidden)
    assert len(calls) == 1  # not worth retrying

    def bug():
        raise TypeError("a bug, not the Hub")

    with pytest.raises(TypeError):  # keeps its traceback instead of passing for a push failure
        hub.with_retries("pushing round 5", bug)


def test_unreachable_hub_fails_before_training(tmp_path, write_recipe):
    argv = write_recipe(tmp_path, name="run", **HUB_RECIPE) + ["--push_to_hub", "true", "--hub_model_id", "a/b"]
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": LOCAL_HUB_TOKEN}
    env.pop("HF_HUB_OFFLINE")
    code = RUN_ROUNDS.replace("BACKOFF_SECONDS = 0.0", "BACKOFF_SECONDS = 0.0; si_hf.hub.RETRIES = 1")
    proc = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "scripts" / "run_rounds.py"), *argv],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "creating the model repo a/b failed 2 times" in proc.stderr
    assert not (tmp_path / "run" / "round-0").exists() and LOCAL_HUB_TOKEN not in proc.stdout + proc.stderr


# -- pulling and evaluating ------------------------------------------------------------------------
@pytest.mark.slow
def test_metric_loads_from_the_hub(seen):
    assert seen["metric"]["space"] == METRIC_SPACE
    assert seen["metric"]["value"] == {"exact_match": 0.5, "by_level": {"1": 0.0, "2": 1.0},
                                       "count_by_level": {"1": 1, "2": 1}}


@pytest.mark.slow
def test_evaluate_round_pulls_a_round_and_reproduces_its_table(local_hub, published, seen):
    out = published.root / "evaluations"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "evaluate_round.py"), "--model", MODEL_REPO, "--revision",
         "round-2", "--eval_size", "10", "--batch_size", "256", "--metric", METRIC_SPACE, "--output_dir", str(out)],
        env=local_hub.env("evaluate"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commit = seen["model_refs"]["tags"]["round-2"]
    assert f"Downloaded {MODEL_REPO}@round-2 (commit {commit[:12]})" in proc.stdout
    assert "| level | problems | exact match | recorded in training |" in proc.stdout
    saved = json.loads((out / "si-tests--copy-rounds@round-2.json").read_text())
    recorded = json.loads((published.out / "round-2" / "eval.json").read_text())
    # Same held-out sets, same weights, greedy decoding: the training-time numbers come back exactly.
    assert any(acc > 0 for acc in recorded["accuracy_by_level"].values())
    assert saved["commit"] == commit
    assert {str(k): v for k, v in saved["accuracy_by_level"].items()} == recorded["accuracy_by_level"]
    assert saved["frontier"] == recorded["frontier"]
    assert (out / "si-tests--copy-rounds@round-2.md").read_text().count("\n| ") == 6 + 1


# -- starting from the Hub -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_continues_from_a_hub_round(local_hub, published, write_recipe):
    root = published.root
    argv = write_recipe(root, name="continued", **HUB_RECIPE) + [
        "--init_from", f"{MODEL_REPO}@round-1", "--push_to_hub", "true", "--hub_model_id", CONTINUED_REPO]
    proc = run_rounds(local_hub, argv, home="continued")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out, source = root / "continued", published.out
    assert proc.stdout.count("train_runtime") == 1 and "continuing with round 2" in proc.stdout
    for k in (0, 1):  # fetched, not trained
        assert json.loads((out / f"round-{k}" / "eval.json").read_text()) == json.loads(
            (source / f"round-{k}" / "eval.json").read_text())
        assert files_under(out / f"round-{k}" / "data").keys() >= {"data-00000-of-00001.arrow"}
    # Round 2 from the Hub's round 1 is the round 2 of the original run.
    assert without_timing(read_record(out, 2)) == without_timing(read_record(source, 2))
    a, b = (load_file(str(d / "round-2" / "model" / "model.safetensors")) for d in (out, source))
    assert all(torch.equal(a[n], b[n]) for n in a)
    # Only its own round is pushed; its dataset repo gets every round's data, and its card the parent.
    state = json.loads((out / "hub_state.json").read_text())
    assert state["imported"] == {"from": f"{MODEL_REPO}@round-1", "last_round": 1}
    assert state["pushed"][f"model {CONTINUED_REPO}"].keys() == {"2"}
    data_repo = local_hub.repos / "datasets" / CONTINUED_REPO
    tree = subprocess.run(["git", "-C", str(data_repo), "ls-tree", "-r", "--name-only", "round-2"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert [p for p in tree if p.endswith(".parquet")] == [hub.data_path(k) for k in range(3)]
    card = (out / "round-2" / "model" / "README.md").read_text()
    assert f"| parent | [{MODEL_REPO}@round-1](" in card


# -- pieces ----------------------------------------------------------------------------------------
def test_init_from_and_push_settings_are_checked(tmp_path, write_recipe):
    assert records.parse_init_from("me/copy-tiny@round-3") == ("me/copy-tiny", 3)
    for bad in ("me/copy-tiny", "me/copy-tiny@3", "me/copy-tiny@round-x", "@round-1"):
        with pytest.raises(ValueError):
            records.parse_init_from(bad)
    argv = write_recipe(tmp_path, name="r")
    with pytest.raises(RecipeError, match="init_from"):
        parse_recipe(argv + ["--init_from", "me/copy-tiny"])
    with pytest.raises(RecipeError, match="hub_model_id"):
        parse_recipe(argv + ["--push_to_hub", "true"])
    recipe = parse_recipe(argv + ["--push_to_hub", "true", "--hub_model_id", "me/x", "--hub_private", "true"])
    assert recipe.hub_dataset_id is None and recipe.hub_private is True
    assert {"push_to_hub", "hub_model_id", "hub_dataset_id", "hub_private"} <= set(RESUMABLE_CHANGES)


def test_local_card_has_the_table_the_plot_and_local_load_lines(tmp_path, make_model):
    model_dir = tmp_path / "round-1" / "model"
    make_model().save_pretrained(model_dir)
    records = [round_record(k, 3 + k, {"1": 1.0, "5": 0.5 * k}, labels=None if k == 0 else {"level": "5"})
               for k in range(2)]
    recipe = parse_recipe(["--task", "copy"]).to_dict()
    cards.write_model_card(model_dir, recipe, records, 1)
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "transformers" and card.data.datasets is None
    assert {r.dataset_config: r.metric_value for r in card.data.eval_results} == {"level_1": 1.0, "level_5": 0.5}
    assert "| 1 | 5 | 4 | 1.000 | 0.500 | 0.875 | 8/10 | 1 |" in card.text
    assert "| label accuracy (kept labels) | 0.875 |" in card.text and "| kept fraction | 8/10 (80.0%) |" in card.text
    assert f'from_pretrained("{model_dir}", trust_remote_code=True)' in card.text
    assert f'load_from_disk("{model_dir.parent / "data"}")' in card.text
    assert "output_dir" not in card.text.split("## Recipe")[1]  # a path of this machine stays here
    assert (model_dir / cards.PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    assert cards.plot_accuracy(records) == (model_dir / cards.PLOT_FILE).read_bytes()  # same rounds, same bytes
    assert cards.plot_level_map(records) == (model_dir / cards.LEVEL_MAP_FILE).read_bytes()
    assert f"![accuracy by level and round]({cards.LEVEL_MAP_FILE})" in card.text


# -- the real Hub ----------------------------------------------------------------------------------
def real_hub_reason() -> str | None:
    if not os.environ.get("HF_TOKEN"):
        return "HF_TOKEN is not set"
    import urllib.request

    try:
        urllib.request.urlopen("https://huggingface.co/api/models?limit=1", timeout=10).close()
    except OSError as err:
        return f"the Hub does not answer: {err}"
    return None


# The Hub's clients in this process are offline (conftest), so every call goes through a subprocess.
REAL_HUB = """import json, sys
from huggingface_hub import HfApi
api, what, repo = HfApi(), sys.argv[1], sys.argv[2]
if what == "whoami":
    print(api.whoami()["name"])
elif what == "tags":
    tags = [sorted(t.name for t in api.list_repo_refs(repo, repo_type=kind).tags) for kind in ("model", "dataset")]
    print(json.dumps(tags))
else:
    for t in ("model", "dataset"):
        api.delete_repo(repo, repo_type=t, missing_ok=True)
"""


@pytest.mark.slow
def test_smoke_against_the_real_hub(tmp_path, write_recipe):
    reason = real_hub_reason()
    if reason:
        pytest.skip(f"real-Hub smoke test: {reason}")
    import uuid

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT")}
    env["HF_HOME"] = str(tmp_path / "hf_home")

    def real_hub(what, repo=""):
        proc = subprocess.run([sys.executable, "-c", REAL_HUB, what, repo], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip()

    repo = f"{real_hub('whoami')}/si-hf-smoke-{uuid.uuid4().hex[:8]}"
    argv = write_recipe(tmp_path, name="run", **{**HUB_RECIPE, "num_rounds": 0}) + [
        "--push_to_hub", "true", "--hub_model_id", repo, "--hub_private", "true"]
    try:
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "run_rounds.py"), *argv], env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(real_hub("tags", repo)) == [["round-0"], ["round-0"]]
    finally:
        real_hub("delete", repo)
