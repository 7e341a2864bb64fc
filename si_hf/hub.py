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

import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

import yaml

from .manifest import sha256_file

logger = logging.getLogger("si_hf")

STATE_FILE = "hub_state.json"
PLOT_FILE = "accuracy_by_level.png"
CARD_FILE = "README.md"
# The card templates: the top-level model_cards/ directory, installed as the package `si_hf.model_cards`
# (pyproject.toml maps it into si_hf; see card_template).
TEMPLATES = "si_hf.model_cards"
# Transient failures (5xx, 429, timeouts, refused connections) are retried this often, waiting
# BACKOFF_SECONDS, then twice as long each time (2 + 4 + ... + 32 s in all by default).
RETRIES = 5
BACKOFF_SECONDS = 2.0
# Recipe fields that name this machine's files, not what was computed: left out of published recipes.
LOCAL_FIELDS = ("output_dir", "overwrite_output_dir", "num_threads")
INIT_FROM = re.compile(r"^(?P<repo>[\w.-]+(?:/[\w.-]+)?)@round-(?P<round>\d+)$")


class HubError(RuntimeError):
    """A Hub operation that failed (after retries where retrying could help)."""


def parse_init_from(text: str) -> tuple[str, int]:
    """`namespace/name@round-3` -> ("namespace/name", 3)."""
    match = INIT_FROM.match(text or "")
    if not match:
        raise ValueError("expected REPO@round-<k>, e.g. my-name/copy-tiny@round-3")
    return match["repo"], int(match["round"])


def revision_of(k: int) -> str:
    return f"round-{k}"


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


def read_summary(out, last: int) -> list[dict]:
    path = Path(out) / "summary.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [row for row in rows if row["round"] <= last]


def imported_from(out) -> dict | None:
    """{"from": "REPO@round-k", "last_round": k} once `init_from` fetched rounds 0..k into `out`."""
    return read_state(out).get("imported")


def parent_of(out, k: int) -> str | None:
    """`REPO@round-j` when round k is the first round after rounds started from the Hub."""
    imported = imported_from(out)
    return imported["from"] if imported and k == imported["last_round"] + 1 else None


def published_recipe(recipe: dict) -> str:
    return yaml.safe_dump({k: v for k, v in recipe.items() if k not in LOCAL_FIELDS}, sort_keys=False)


# -- cards -----------------------------------------------------------------------------------------
def plot_accuracy(summary: list[dict]) -> bytes:
    """PNG: accuracy by level, one line per round (later rounds darker)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    for i, rec in enumerate(summary):
        names = list(rec["accuracy_by_level"])  # evaluation order; pair levels read "4x5"
        accs = [rec["accuracy_by_level"][name] for name in names]
        xs = [int(n) for n in names] if all(n.isdigit() for n in names) else names
        color = cmap(0.9 - 0.8 * i / max(1, len(summary) - 1))
        ax.plot(xs, accs, marker="o", markersize=3, color=color, label=f"round {rec['round']}")
    ax.set_xlabel("level")
    ax.set_ylabel("exact match")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"accuracy by level, rounds {summary[0]['round']}-{summary[-1]['round']}")
    ax.legend(fontsize="small", ncol=max(1, (len(summary) + 11) // 12), loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # same rounds -> same bytes
    return buf.getvalue()


def card_template(name: str) -> str:
    """The text of a card template (`model_card.md`, `dataset_card.md`), from the installed package
    data; a source tree imported without installing it reads the top-level model_cards/ directly."""
    try:
        folder = resources.files(TEMPLATES)
    except ModuleNotFoundError:
        folder = Path(__file__).resolve().parents[1] / "model_cards"
    return folder.joinpath(name).read_text(encoding="utf-8")


def count_parameters(model_dir: Path) -> str:
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(path, "pt") as fh:
            for name in fh.keys():
                n = 1
                for dim in fh.get_slice(name).get_shape():
                    n *= dim
                total += n
    return f"{total / 1e6:.2f}M" if total >= 1e5 else f"{total / 1e3:.1f}K"


def hub_url(repo_id: str, repo_type: str = "model", revision: str | None = None) -> str:
    from huggingface_hub import constants

    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return f"{constants.ENDPOINT}/{prefix}{repo_id}" + (f"/tree/{revision}" if revision else "")


def render_model_card(recipe: dict, summary: list[dict], k: int, model_dir, *, model_repo: str | None = None,
                      data_repo: str | None = None, parent: str | None = None,
                      shown_dir=None) -> tuple[str, bytes]:
    """The card (README.md text) and its plot (PNG bytes) of round k. `summary` holds rounds 0..k;
    without `model_repo` the card shows how to load the local round from `shown_dir` (default
    `model_dir`, where the checkpoint is read now)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .rounds import summary_table

    model_dir = Path(model_dir)
    record = summary[-1]
    task = recipe["task"]
    rev = revision_of(k)
    eval_results = [
        EvalResult(task_type="text-generation", dataset_type=f"si-hf/{task}", dataset_name=f"{task} held-out",
                   dataset_config=f"level_{lvl}", dataset_split="test", metric_type="exact_match",
                   metric_name=f"exact match, level {lvl}", metric_value=acc)
        for lvl, acc in record["accuracy_by_level"].items()
    ]
    name = model_repo or f"{task}-round-{k}"
    card_data = ModelCardData(
        model_name=name, library_name="transformers", pipeline_tag="text-generation",
        tags=["si-hf", "self-improvement", "length-generalization", "easy-to-hard", task, rev],
        datasets=[data_repo] if data_repo else None, eval_results=eval_results,
    )
    if parent is None and k > 0:
        parent = f"{model_repo}@round-{k - 1}" if model_repo else f"round-{k - 1} (this run)"
    pretrained = recipe.get("model_name_or_path")
    if parent is None:
        parent_text = (f"none: round 0 fine-tunes `{pretrained}` on ground truth" if pretrained
                       else "none: round 0 trains from scratch on ground truth")
    elif "@" in parent:
        repo, j = parse_init_from(parent)
        parent_text = f"[{parent}]({hub_url(repo, revision=revision_of(j))})"
    else:
        parent_text = parent
    labels = record.get("labels")
    if labels:
        kept_acc = labels.get("label_accuracy_kept")
        labels = {**labels,
                  "label_accuracy_kept_text": "n/a (nothing kept)" if kept_acc is None else f"{kept_acc:.3f}",
                  "kept_fraction_text": f"{labels['kept'] / labels['labeled']:.1%}" if labels["labeled"] else "n/a"}
    if model_repo:
        model_ref, revision_arg = f'"{model_repo}"', f', revision="{rev}"'
        model_arg, revision_flag = model_repo, f" --revision {rev}"
        data_ref = (f"[{data_repo}]({hub_url(data_repo, 'dataset', rev)}), revision `{rev}` (config `round_{k}`)"
                    if data_repo else "not published")
        data_load = f'load_dataset("{data_repo}", revision="{rev}", split="train")' if data_repo else None
        data_import = "load_dataset"
    else:
        shown = Path(shown_dir or model_dir)
        model_ref, revision_arg, model_arg, revision_flag = f'"{shown}"', "", str(shown), ""
        data_ref = f"`{shown.parent / 'data'}` (`datasets.load_from_disk`)"
        data_load = f'load_from_disk("{shown.parent / "data"}")'
        data_import = "load_from_disk"
    card = ModelCard.from_template(
        card_data,
        template_str=card_template("model_card.md"),
        title=f"{name} (round {k})" if model_repo else name,
        round=k, task=task, parent=parent_text, levels_trained=record["levels_trained"], data_ref=data_ref,
        frontier=record["frontier"], threshold=recipe.get("frontier_threshold"), labels=labels,
        num_hidden_layers=recipe.get("num_hidden_layers"), hidden_size=recipe.get("hidden_size"),
        position_encoding={"nope": "no positional encoding (NoPE)", "rope": "RoPE"}.get(
            recipe.get("position_encoding"), recipe.get("position_encoding")),
        num_parameters=count_parameters(model_dir), pretrained=pretrained, lora_r=recipe.get("lora_r"),
        plot_file=PLOT_FILE, summary_table=summary_table(summary), model_ref=model_ref, revision_arg=revision_arg,
        data_load=data_load, data_import=data_import, model_arg=model_arg, revision_flag=revision_flag,
        eval_levels=f"{recipe.get('eval_min_level')}-{recipe.get('eval_max_level')}",
        recipe_yaml=published_recipe(recipe),
    )
    return str(card), plot_accuracy(summary)


def write_model_card(model_dir, recipe: dict, summary: list[dict], k: int, **repos):
    """Writes README.md and the plot into a round's model directory."""
    card, png = render_model_card(recipe, summary, k, model_dir, **repos)
    Path(model_dir, CARD_FILE).write_text(card)
    Path(model_dir, PLOT_FILE).write_bytes(png)


def render_dataset_card(recipe: dict, summary: list[dict], rounds: list[int], *, data_repo: str,
                        model_repo: str, row_counts: dict[int, int] | None = None) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    latest = max(rounds)
    by_round = {rec["round"]: rec for rec in summary}
    rows = []
    for j in rounds:
        rec, labels = by_round.get(j, {}), by_round.get(j, {}).get("labels")
        kept_acc = labels.get("label_accuracy_kept") if labels else None
        rows.append({
            "round": j,
            "levels": rec.get("levels_trained", "?"),
            "rows": (row_counts or {}).get(j, labels["kept"] if labels else "?"),
            "label_accuracy": "ground truth" if not labels else ("n/a" if kept_acc is None else f"{kept_acc:.3f}"),
            "kept": f"{labels['kept']}/{labels['labeled']}" if labels else "",
        })
    configs = [{"config_name": f"round_{j}", "data_files": [{"split": "train", "path": f"data/round_{j}/*.parquet"}],
                **({"default": True} if j == latest else {})} for j in rounds]
    card_data = DatasetCardData(
        pretty_name=f"{data_repo} (self-improvement rounds)", task_categories=["text-generation"],
        tags=["si-hf", "self-improvement", "synthetic", recipe["task"]], configs=configs,
    )
    card = DatasetCard.from_template(
        card_data, template_str=card_template("dataset_card.md"), title=f"{data_repo}: rounds 0-{latest}",
        task=recipe["task"], base_levels=f"{recipe['base_min_level']}-{recipe['base_max_level']}",
        filters=", ".join(recipe.get("filters") or []) or "none", latest=latest, rows=rows, data_repo=data_repo,
        model_repo=model_repo, model_url=hub_url(model_repo),
    )
    return str(card)


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
        from .rounds import finished_rounds

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
            from .rounds import round_dir

            missing = [f"{t} repo {self.model_repo if t == 'model' else self.data_repo}" for t in ("dataset", "model")
                       if str(k) not in read_state(self.out)["pushed"].get(self.key(t), {})]
            raise HubError(
                f"round {k} was not pushed to the {' and the '.join(missing)}: {err}. The round is complete "
                f"on disk in {round_dir(self.out, k)}; rerun the same command to push what is missing "
                "(nothing is trained again)."
            ) from err
        self.log(f"[round {k}] pushed to {hub_url(self.model_repo, revision=revision_of(k))} and "
                 f"{hub_url(self.data_repo, 'dataset', revision_of(k))}")

    def push_model(self, k: int, summary: list[dict]) -> str:
        from huggingface_hub import CommitOperationAdd

        from .rounds import round_dir

        rd = round_dir(self.out, k)
        model_dir = rd / "model"
        card, png = render_model_card(self.recipe, summary, k, model_dir, model_repo=self.model_repo,
                                      data_repo=self.data_repo, parent=self.parent_of(k))
        weights = sorted(model_dir.glob("*.safetensors"))[0]

        def operations():
            ops = [CommitOperationAdd(p.name, str(p)) for p in sorted(model_dir.iterdir())
                   if p.is_file() and p.name not in (CARD_FILE, PLOT_FILE)]
            ops += [
                CommitOperationAdd("eval.json", str(rd / "eval.json")),
                CommitOperationAdd("summary.jsonl", "".join(json.dumps(r) + "\n" for r in summary).encode()),
                CommitOperationAdd("recipe.yaml", published_recipe(self.recipe).encode()),
                CommitOperationAdd(PLOT_FILE, png),
                CommitOperationAdd(CARD_FILE, card.encode()),
            ]
            return ops

        return self.commit_round("model", self.model_repo, k, operations, weights.name, sha256_file(weights))

    def push_data(self, k: int, summary: list[dict]) -> str:
        from datasets import load_from_disk
        from huggingface_hub import CommitOperationAdd

        from .rounds import round_dir

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
        name = revision_of(k)
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


# -- starting from the Hub -------------------------------------------------------------------------
def import_rounds(init_from: str, out, recipe) -> int:
    """Materializes rounds 0..k of `REPO@round-k` in `out` (round k's checkpoint, every round's data
    and records), so the run resumes with round k+1. Returns k."""
    import pyarrow.parquet as pq
    from datasets import Dataset
    from huggingface_hub import ModelCard, hf_hub_download, snapshot_download

    from .config import RecipeError
    from .manifest import write_manifest
    from .rounds import round_dir

    repo, k = parse_init_from(init_from)
    rev = revision_of(k)
    out = Path(out)
    if recipe.num_rounds <= k:
        raise RecipeError(f"init_from={init_from!r}: num_rounds must be more than {k} to continue after round {k}")
    snapshot = Path(with_retries(f"downloading {init_from}", lambda: snapshot_download(repo, revision=rev)))
    source = yaml.safe_load((snapshot / "recipe.yaml").read_text())
    for name in ("task", "base_min_level", "base_max_level"):
        if source.get(name) != getattr(recipe, name):
            raise RecipeError(f"init_from={init_from!r}: its {name} is {source.get(name)!r}, this recipe's is "
                              f"{getattr(recipe, name)!r}")
    summary = [json.loads(line) for line in (snapshot / "summary.jsonl").read_text().splitlines() if line.strip()]
    data_repos = ModelCard.load(snapshot / CARD_FILE).data.datasets or []
    if not data_repos:
        raise HubError(f"{init_from}: its card names no dataset repo, so its rounds' data cannot be fetched")
    out.mkdir(parents=True, exist_ok=True)
    for j in range(k + 1):
        tmp = out / f".round-{j}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        # The round's one parquet file, read as is (load_dataset refuses a round that kept no label).
        path = with_retries(f"downloading round {j} of {data_repos[0]}@{rev}", lambda j=j: hf_hub_download(
            data_repos[0], data_path(j), repo_type="dataset", revision=rev))
        Dataset(pq.read_table(path)).save_to_disk(str(tmp / "data"), num_shards=1)
        (tmp / "eval.json").write_text(json.dumps(summary[j], indent=2))
        if j == k:
            (tmp / "model").mkdir()
            for path in snapshot.iterdir():
                if path.is_file() and path.name not in ("eval.json", "summary.jsonl", "recipe.yaml"):
                    shutil.copy(path, tmp / "model" / path.name)
        write_manifest(tmp, j, recipe.to_dict(), parent=f"{repo}@round-{j - 1}" if j else None)  # counts as finished
        if round_dir(out, j).exists():  # left by an import that was interrupted
            shutil.rmtree(round_dir(out, j))
        os.replace(tmp, round_dir(out, j))
    (out / "summary.jsonl").write_text("".join(json.dumps(row) + "\n" for row in summary[: k + 1]))
    state = read_state(out)
    state["imported"] = {"from": init_from, "last_round": k}
    write_state(out, state)
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
