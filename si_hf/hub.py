"""Rounds on the Hub: publish every finished round, and start a run from a published one.

The model repo gets one commit per round on `main` (safetensors weights, config with `auto_map`, the
modeling code, tokenizer, eval.json, card and plot), with a branch and a tag `round-<k>` on it, so
`main` is always the latest round. The dataset repo gets one commit per round too: the round's rows
as config `round_<k>` (data/round_<k>/), with the card's default config set to round k, so
`load_dataset(repo, revision="round-<k>")` is round k's data. Everything goes through
huggingface_hub's commit API. What was pushed is recorded in <output_dir>/hub_state.json, so
rerunning the same command pushes what is missing without retraining. The token comes from HF_TOKEN
or `hf auth login`, read by huggingface_hub; it is never written anywhere.
"""

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from .cards import CARD_FILE, CARD_PLOTS, hub_url, published_recipe, render_dataset_card, render_model_card
from .errors import HubError, RecipeError
from .manifest import finished_rounds, sha256_file, staged_round
from .records import (
    RECORD_FILE,
    SUMMARY_FILE,
    RoundRecord,
    parse_init_from,
    parse_summary,
    read_summary,
    round_dir,
    round_name,
    summary_text,
    write_record,
    write_summary,
)

logger = logging.getLogger("si_hf")

STATE_FILE = "hub_state.json"
# Transient failures (5xx, 429, timeouts, refused connections) are retried this often, waiting
# BACKOFF_SECONDS, then twice as long each time (2 + 4 + ... + 32 s in all by default).
RETRIES = 5
BACKOFF_SECONDS = 2.0


def data_path(k: int) -> str:
    return f"data/round_{k}/train-00000-of-00001.parquet"


# -- retries ---------------------------------------------------------------------------------------
def is_transient(err: BaseException) -> bool:
    """Worth retrying: a 5xx, 408 or 429 answer, a timeout or a connection that failed."""
    from huggingface_hub.errors import HfHubHTTPError

    response = getattr(err, "response", None)
    if isinstance(err, HfHubHTTPError) and response is not None:
        return response.status_code in (408, 429) or response.status_code >= 500
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & {"TimeoutException", "NetworkError", "RemoteProtocolError", "TimeoutError",
                         "ConnectionError"})


def describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip(": ")


def with_retries(what: str, fn):
    """`fn()`, retried with exponential backoff on transient failures; HubError naming `what` after."""
    for attempt in range(RETRIES + 1):
        try:
            return fn()
        except HubError:
            raise
        except Exception as err:
            if not is_transient(err):
                if isinstance(err, OSError) or type(err).__module__.startswith("httpx"):  # the Hub said no
                    raise HubError(f"{what} failed: {describe(err)}") from err
                raise  # a bug, not the Hub: keep its traceback
            if attempt == RETRIES:
                raise HubError(f"{what} failed {RETRIES + 1} times; last error: {describe(err)}") from err
            wait = BACKOFF_SECONDS * 2**attempt
            logger.warning("%s failed (%s); retrying in %.1fs (%d/%d)", what, describe(err), wait, attempt + 1,
                           RETRIES)
            time.sleep(wait)


# -- local state -----------------------------------------------------------------------------------
def read_state(out) -> dict:
    path = Path(out) / STATE_FILE
    state = json.loads(path.read_text()) if path.is_file() else {}
    state.setdefault("pushed", {})
    return state


def write_state(out, state: dict):
    path = Path(out) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def imported_from(out) -> dict | None:
    """{"from": "REPO@round-k", "last_round": k} once `init_from` fetched rounds 0..k into `out`."""
    return read_state(out).get("imported")


def parent_of(out, k: int) -> str | None:
    """`REPO@round-j` when round k is the first round after rounds started from the Hub."""
    imported = imported_from(out)
    return imported["from"] if imported and k == imported["last_round"] + 1 else None


# -- publishing ------------------------------------------------------------------------------------
class Publisher:
    """Pushes the finished rounds of one output directory to a model repo and a dataset repo."""

    def __init__(self, recipe, out, log=print):
        from huggingface_hub import HfApi
        from huggingface_hub.utils import disable_progress_bars

        self.recipe = recipe.to_dict() if hasattr(recipe, "to_dict") else dict(recipe)
        self.out = Path(out)
        self.api = HfApi()
        self.log = log
        if self.recipe.get("disable_tqdm"):
            disable_progress_bars()
        self.model_repo = self.recipe["hub_model_id"]
        self.data_repo = self.recipe.get("hub_dataset_id") or self.model_repo
        self.private = bool(self.recipe.get("hub_private"))

    def connect(self):
        """Creates both repos if needed; their full ids (with the namespace) replace the given ones."""
        from huggingface_hub import get_token

        if get_token() is None:
            raise HubError("push_to_hub needs a Hub token with write access: set HF_TOKEN or run `hf auth login`")
        for repo_type, attr in (("model", "model_repo"), ("dataset", "data_repo")):
            repo = getattr(self, attr)
            url = with_retries(f"creating the {repo_type} repo {repo}", lambda repo=repo, repo_type=repo_type:
                               self.api.create_repo(repo, repo_type=repo_type, private=self.private, exist_ok=True))
            setattr(self, attr, url.repo_id)
        return self

    # what is already there
    def first_own_round(self) -> int:
        imported = imported_from(self.out)
        return imported["last_round"] + 1 if imported else 0

    def parent_of(self, k: int) -> str | None:
        return parent_of(self.out, k)

    def key(self, repo_type: str) -> str:
        return f"{repo_type} {self.model_repo if repo_type == 'model' else self.data_repo}"

    def is_pushed(self, k: int) -> bool:
        pushed = read_state(self.out)["pushed"]
        return all(str(k) in pushed.get(self.key(t), {}) for t in ("dataset", "model"))

    def mark(self, repo_type: str, k: int, oid: str):
        state = read_state(self.out)
        state["pushed"].setdefault(self.key(repo_type), {})[str(k)] = oid
        write_state(self.out, state)

    def missing_rounds(self) -> list[int]:
        return [k for k in finished_rounds(self.out) if k >= self.first_own_round() and not self.is_pushed(k)]

    def publish_missing(self):
        for k in self.missing_rounds():
            self.publish_round(k)

    def publish_round(self, k: int):
        """Pushes round k (dataset first: the model card points at it); HubError names what is missing."""
        summary = read_summary(self.out, k)
        try:
            if str(k) not in read_state(self.out)["pushed"].get(self.key("dataset"), {}):
                self.mark("dataset", k, self.push_data(k, summary))
            if str(k) not in read_state(self.out)["pushed"].get(self.key("model"), {}):
                self.mark("model", k, self.push_model(k, summary))
        except HubError as err:
            missing = [f"{t} repo {self.model_repo if t == 'model' else self.data_repo}" for t in ("dataset", "model")
                       if str(k) not in read_state(self.out)["pushed"].get(self.key(t), {})]
            raise HubError(
                f"round {k} was not pushed to the {' and the '.join(missing)}: {err}. The round is complete "
                f"on disk in {round_dir(self.out, k)}; rerun the same command to push what is missing "
                "(nothing is trained again)."
            ) from err
        self.log(f"[round {k}] pushed to {hub_url(self.model_repo, revision=round_name(k))} and "
                 f"{hub_url(self.data_repo, 'dataset', round_name(k))}")

    def push_model(self, k: int, summary: list[RoundRecord]) -> str:
        from huggingface_hub import CommitOperationAdd

        rd = round_dir(self.out, k)
        model_dir = rd / "model"
        card, plots = render_model_card(self.recipe, summary, k, model_dir, model_repo=self.model_repo,
                                      data_repo=self.data_repo, parent=self.parent_of(k))
        weights = sorted(model_dir.glob("*.safetensors"))[0]

        def operations():
            ops = [CommitOperationAdd(p.name, str(p)) for p in sorted(model_dir.iterdir())
                   if p.is_file() and p.name != CARD_FILE and p.name not in CARD_PLOTS]
            ops += [
                CommitOperationAdd(RECORD_FILE, str(rd / RECORD_FILE)),
                CommitOperationAdd(SUMMARY_FILE, summary_text(summary).encode()),
                CommitOperationAdd("recipe.yaml", published_recipe(self.recipe).encode()),
                CommitOperationAdd(CARD_FILE, card.encode()),
            ]
            ops += [CommitOperationAdd(name, png) for name, png in plots.items()]
            return ops

        return self.commit_round("model", self.model_repo, k, operations, weights.name, sha256_file(weights))

    def push_data(self, k: int, summary: list[RoundRecord]) -> str:
        from datasets import load_from_disk
        from huggingface_hub import CommitOperationAdd

        with tempfile.TemporaryDirectory() as tmp:
            def parquet(j: int) -> Path:
                path = Path(tmp) / f"round_{j}.parquet"
                if not path.exists():
                    load_from_disk(str(round_dir(self.out, j) / "data")).to_parquet(str(path))
                return path

            def operations():
                present = set(self.api.list_repo_files(self.data_repo, repo_type="dataset"))
                # Rounds this repo lacks (those of a run started with init_from elsewhere) come along.
                rounds = [j for j in range(k + 1) if j == k or data_path(j) in present
                          or (round_dir(self.out, j) / "data").is_dir()]
                ops = [CommitOperationAdd(data_path(j), str(parquet(j))) for j in rounds
                       if j == k or data_path(j) not in present]
                counts = {j: load_from_disk(str(round_dir(self.out, j) / "data")).num_rows for j in rounds
                          if (round_dir(self.out, j) / "data").is_dir()}
                card = render_dataset_card(self.recipe, summary, rounds, data_repo=self.data_repo,
                                           model_repo=self.model_repo, row_counts=counts)
                return ops + [CommitOperationAdd(CARD_FILE, card.encode())]

            return self.commit_round("dataset", self.data_repo, k, operations, data_path(k), sha256_file(parquet(k)))

    def commit_round(self, repo_type: str, repo: str, k: int, operations, marker: str, marker_sha: str) -> str:
        """One commit on main holding round k, then the branch and the tag round-k on it. A round-k
        already there counts as pushed when its `marker` file is ours (a rerun after a lost answer)."""
        name = round_name(k)
        what = f"round {k} to the {repo_type} repo {repo}"
        refs = with_retries(f"listing the revisions of {repo}",
                            lambda: self.api.list_repo_refs(repo, repo_type=repo_type))
        existing = {r.name: r.target_commit for r in refs.branches} | {r.name: r.target_commit for r in refs.tags}
        oid = existing.get(name)
        if oid is not None:
            infos = with_retries(f"reading {marker} of {repo}@{name}", lambda: self.api.get_paths_info(
                repo, [marker], revision=oid, repo_type=repo_type))
            remote_sha = infos[0].lfs.sha256 if infos and getattr(infos[0], "lfs", None) else None
            if remote_sha != marker_sha:
                raise HubError(f"the {repo_type} repo {repo} already has a {name} that this run did not make; "
                               f"not pushing over it (choose another hub_model_id / hub_dataset_id)")
        else:
            oid = with_retries(f"pushing {what}", lambda: self.api.create_commit(
                repo, operations(), commit_message=f"Round {k}", repo_type=repo_type).oid)
        with_retries(f"creating the branch {name} of {repo}", lambda: self.api.create_branch(
            repo, branch=name, revision=oid, repo_type=repo_type, exist_ok=True))
        with_retries(f"creating the tag {name} of {repo}", lambda: self.api.create_tag(
            repo, tag=name, revision=oid, repo_type=repo_type, exist_ok=True))
        return oid


# -- starting from a finished round (of a Hub repo here; of a local run in si_hf.branch) ---------------
SHARED_WITH_SOURCE = ("task", "base_min_level", "base_max_level")  # what a continuation must share with its source


def check_rounds_left(init_from: str, recipe, k: int):
    if recipe.num_rounds <= k:
        raise RecipeError(f"init_from={init_from!r}: num_rounds must be more than {k} to continue after round {k}")


def check_same_base(init_from: str, recipe, source: dict):
    """A RecipeError when the source's recipe (a dict) has another task or base range than `recipe`."""
    for name in SHARED_WITH_SOURCE:
        if source.get(name) != getattr(recipe, name):
            raise RecipeError(f"init_from={init_from!r}: its {name} is {source.get(name)!r}, this recipe's is "
                              f"{getattr(recipe, name)!r}")


def mark_imported(out, init_from: str, k: int):
    """Records in hub_state.json that rounds 0..k came from `init_from` (read by `imported_from`)."""
    state = read_state(out)
    state["imported"] = {"from": init_from, "last_round": k}
    write_state(out, state)


def import_rounds(init_from: str, out, recipe) -> int:
    """Materializes rounds 0..k of `REPO@round-k` in `out` (round k's checkpoint, every round's data
    and records), so the run resumes with round k+1. Returns k."""
    import pyarrow.parquet as pq
    from datasets import Dataset
    from huggingface_hub import ModelCard, hf_hub_download, snapshot_download

    repo, k = parse_init_from(init_from)
    rev = round_name(k)
    out = Path(out)
    check_rounds_left(init_from, recipe, k)
    snapshot = Path(with_retries(f"downloading {init_from}", lambda: snapshot_download(repo, revision=rev)))
    check_same_base(init_from, recipe, yaml.safe_load((snapshot / "recipe.yaml").read_text()))
    summary = parse_summary((snapshot / SUMMARY_FILE).read_text())
    data_repos = ModelCard.load(snapshot / CARD_FILE).data.datasets or []
    if not data_repos:
        raise HubError(f"{init_from}: its card names no dataset repo, so its rounds' data cannot be fetched")
    out.mkdir(parents=True, exist_ok=True)
    done = finished_rounds(out)  # an import that was interrupted keeps what it had fetched
    for j in (j for j in range(k + 1) if j not in done):
        parent = f"{repo}@{round_name(j - 1)}" if j else None
        with staged_round(out, j, recipe.to_dict(), parent=parent) as tmp:
            # The round's one parquet file, read as is (load_dataset refuses a round that kept no label).
            path = with_retries(f"downloading round {j} of {data_repos[0]}@{rev}", lambda j=j: hf_hub_download(
                data_repos[0], data_path(j), repo_type="dataset", revision=rev))
            Dataset(pq.read_table(path)).save_to_disk(str(tmp / "data"), num_shards=1)
            write_record(tmp, summary[j])
            if j == k:
                (tmp / "model").mkdir()
                for path in snapshot.iterdir():
                    if path.is_file() and path.name not in (RECORD_FILE, SUMMARY_FILE, "recipe.yaml"):
                        shutil.copy(path, tmp / "model" / path.name)
    write_summary(out, summary[: k + 1])
    mark_imported(out, init_from, k)
    logger.info("Started from %s: rounds 0-%d fetched into %s", init_from, k, out)
    return k


# -- the metric as a Space -------------------------------------------------------------------------
def push_metric(space_id: str, private: bool = False) -> str:
    """Publishes the shipped metric as a Space, loadable with `evaluate.load(space_id)`."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from .evaluation import METRIC_PATH

    api = HfApi()
    url = with_retries(f"creating the Space {space_id}", lambda: api.create_repo(
        space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True))
    name = url.repo_id.split("/")[-1]
    code = Path(METRIC_PATH, "level_exact_match.py").read_bytes()
    readme = (f"---\ntitle: {name}\nsdk: gradio\napp_file: app.py\ntags:\n- evaluate\n- metric\n---\n\n"
              f"# {name}\n\nExact match of whole answers, overall and per difficulty level (si-hf).\n\n"
              f"```python\nimport evaluate\n\nmetric = evaluate.load(\"{url.repo_id}\")\n"
              "metric.compute(predictions=[\"12\", \"3\"], references=[\"12\", \"4\"], levels=[2, 1])\n```\n")
    app = (f"import evaluate\nfrom evaluate.utils import launch_gradio_widget\n\n"
           f"launch_gradio_widget(evaluate.load(\"{url.repo_id}\"))\n")
    ops = lambda: [CommitOperationAdd(f"{name}.py", code), CommitOperationAdd("README.md", readme.encode()),  # noqa: E731
                   CommitOperationAdd("app.py", app.encode()),
                   CommitOperationAdd("requirements.txt", b"evaluate\ndatasets\n")]
    with_retries(f"pushing the metric to {url.repo_id}", lambda: api.create_commit(
        url.repo_id, ops(), commit_message="level_exact_match metric", repo_type="space"))
    return url.repo_id
