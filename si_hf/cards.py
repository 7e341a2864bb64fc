"""What a run shows a reader: the model and dataset cards of each round, their plots, and the summary
table of a run. Pure rendering from round records; nothing here trains, loads a model or talks to the
Hub (links to it are only spelled).
"""

import dataclasses
import io
from importlib import resources
from pathlib import Path

import yaml

from .records import LabelStats, RoundRecord, parse_init_from, round_name

PLOT_FILE = "accuracy_by_level.png"
LEVEL_MAP_FILE = "accuracy_by_level_and_round.png"
CARD_FILE = "README.md"
# The card templates: the top-level model_cards/ directory, installed as the package `si_hf.model_cards`
# (pyproject.toml maps it into si_hf; see card_template).
TEMPLATES = "si_hf.model_cards"
# Recipe fields that name this machine's files, not what was computed: left out of published recipes.
LOCAL_FIELDS = ("output_dir", "overwrite_output_dir", "num_threads")
ENCODING_NAMES = {"nope": "no positional encoding (NoPE)", "rope": "RoPE", "alibi": "ALiBi"}  # as a card writes them


def png_bytes(fig) -> bytes:
    """A matplotlib Figure as PNG bytes (the cards' plots, the summary's and the seeds')."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: same rounds -> same bytes
    return buf.getvalue()


def published_recipe(recipe: dict) -> str:
    return yaml.safe_dump({k: v for k, v in recipe.items() if k not in LOCAL_FIELDS}, sort_keys=False)


def plot_accuracy(summary: list[RoundRecord]) -> bytes:
    """PNG: accuracy by level, one line per round (later rounds darker)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    for i, rec in enumerate(summary):
        names = list(rec.accuracy_by_level)  # evaluation order; pair levels read "4x5"
        accs = [rec.accuracy_by_level[name] for name in names]
        xs = [int(n) for n in names] if all(n.isdigit() for n in names) else names
        color = cmap(0.9 - 0.8 * i / max(1, len(summary) - 1))
        ax.plot(xs, accs, marker="o", markersize=3, color=color, label=f"round {rec.round}")
    ax.set_xlabel("level")
    ax.set_ylabel("exact match")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"accuracy by level, rounds {summary[0].round}-{summary[-1].round}")
    ax.legend(fontsize="small", ncol=max(1, (len(summary) + 11) // 12), loc="center left", bbox_to_anchor=(1.0, 0.5))
    return png_bytes(fig)


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


def render_model_card(recipe: dict, summary: list[RoundRecord], k: int, model_dir, *, model_repo: str | None = None,
                      data_repo: str | None = None, parent: str | None = None,
                      shown_dir=None) -> tuple[str, dict[str, bytes]]:
    """The card (README.md text) and its plots (PNG bytes by file name) of round k. `summary` holds rounds 0..k;
    without `model_repo` the card shows how to load the local round from `shown_dir` (default
    `model_dir`, where the checkpoint is read now)."""
    from huggingface_hub import ModelCard

    model_dir = Path(model_dir)
    record = summary[-1]
    name = model_repo or f"{recipe['task']}-{round_name(k)}"
    refs = _load_refs(k, model_repo, data_repo, Path(shown_dir or model_dir))
    encoding = recipe.get("position_encoding")
    card = ModelCard.from_template(
        _model_card_data(recipe["task"], k, name, record, data_repo),
        template_str=card_template("model_card.md"),
        title=f"{name} (round {k})" if model_repo else name,
        round=k, task=recipe["task"], parent=_parent_text(recipe, k, model_repo, parent),
        levels_trained=record.levels_trained, frontier=record.frontier,
        threshold=recipe.get("frontier_threshold"), labels=_labels_text(record.labels),
        num_hidden_layers=recipe.get("num_hidden_layers"), hidden_size=recipe.get("hidden_size"),
        position_encoding=ENCODING_NAMES.get(encoding, encoding),
        num_parameters=count_parameters(model_dir), pretrained=recipe.get("model_name_or_path"),
        lora_r=recipe.get("lora_r"), plot_file=PLOT_FILE, level_map_file=LEVEL_MAP_FILE,
        summary_table=summary_table(summary),
        eval_levels=f"{recipe.get('eval_min_level')}-{recipe.get('eval_max_level')}",
        recipe_yaml=published_recipe(recipe), **refs,
    )
    return str(card), {name: render(summary) for name, render in CARD_PLOTS.items()}


def _model_card_data(task: str, k: int, name: str, record: RoundRecord, data_repo: str | None):
    """The card's metadata: tags, the dataset and one exact-match result per evaluated level."""
    from huggingface_hub import EvalResult, ModelCardData

    eval_results = [
        EvalResult(task_type="text-generation", dataset_type=f"si-hf/{task}", dataset_name=f"{task} held-out",
                   dataset_config=f"level_{lvl}", dataset_split="test", metric_type="exact_match",
                   metric_name=f"exact match, level {lvl}", metric_value=acc)
        for lvl, acc in record.accuracy_by_level.items()
    ]
    return ModelCardData(
        model_name=name, library_name="transformers", pipeline_tag="text-generation",
        tags=["si-hf", "self-improvement", "length-generalization", "easy-to-hard", task, round_name(k)],
        datasets=[data_repo] if data_repo else None, eval_results=eval_results,
    )


def _parent_text(recipe: dict, k: int, model_repo: str | None, parent: str | None) -> str:
    """Where round k came from: the round before it (a Hub link when published), or the ground truth."""
    if parent is None and k > 0:
        parent = f"{model_repo}@{round_name(k - 1)}" if model_repo else f"{round_name(k - 1)} (this run)"
    pretrained = recipe.get("model_name_or_path")
    if parent is None:
        return (f"none: round 0 fine-tunes `{pretrained}` on ground truth" if pretrained
                else "none: round 0 trains from scratch on ground truth")
    if "@" in parent:
        repo, j = parse_init_from(parent)
        if Path(repo).is_dir():  # a run on the machine that trained this round (si_hf.branch)
            return f"`{parent}` (a run on the machine that trained this round)"
        return f"[{parent}]({hub_url(repo, revision=round_name(j))})"
    return parent


def _labels_text(labels: LabelStats | None) -> dict | None:
    """The round's label counts with the kept accuracy and kept share as the card prints them."""
    if labels is None:
        return None
    kept_acc, share = labels.label_accuracy_kept, labels.kept_fraction
    return {**dataclasses.asdict(labels),
            "label_accuracy_kept_text": "n/a (nothing kept)" if kept_acc is None else f"{kept_acc:.3f}",
            "kept_fraction_text": "n/a" if share is None else f"{share:.1%}"}


def _load_refs(k: int, model_repo: str | None, data_repo: str | None, shown: Path) -> dict:
    """How the card tells a reader to load the model and the data: from the Hub at revision round-k,
    or from the local round directory."""
    rev = round_name(k)
    if not model_repo:
        return dict(model_ref=f'"{shown}"', revision_arg="", model_arg=str(shown), revision_flag="",
                    data_ref=f"`{shown.parent / 'data'}` (`datasets.load_from_disk`)",
                    data_load=f'load_from_disk("{shown.parent / "data"}")', data_import="load_from_disk")
    data_ref = (f"[{data_repo}]({hub_url(data_repo, 'dataset', rev)}), revision `{rev}` (config `round_{k}`)"
                if data_repo else "not published")
    return dict(model_ref=f'"{model_repo}"', revision_arg=f', revision="{rev}"', model_arg=model_repo,
                revision_flag=f" --revision {rev}", data_ref=data_ref, data_import="load_dataset",
                data_load=f'load_dataset("{data_repo}", revision="{rev}", split="train")' if data_repo else None)


def write_model_card(model_dir, recipe: dict, summary: list[RoundRecord], k: int, **repos):
    """Writes README.md and the plots into a round's model directory."""
    card, plots = render_model_card(recipe, summary, k, model_dir, **repos)
    Path(model_dir, CARD_FILE).write_text(card)
    for name, png in plots.items():
        Path(model_dir, name).write_bytes(png)


def render_dataset_card(recipe: dict, summary: list[RoundRecord], rounds: list[int], *, data_repo: str,
                        model_repo: str, row_counts: dict[int, int] | None = None) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    latest = max(rounds)
    by_round = {rec.round: rec for rec in summary}
    rows = []
    for j in rounds:
        rec = by_round.get(j)
        labels = rec.labels if rec else None
        kept_acc = labels.label_accuracy_kept if labels else None
        rows.append({
            "round": j,
            "levels": rec.levels_trained if rec else "?",
            "rows": (row_counts or {}).get(j, labels.kept if labels else "?"),
            "label_accuracy": "ground truth" if not labels else ("n/a" if kept_acc is None else f"{kept_acc:.3f}"),
            "kept": f"{labels.kept}/{labels.labeled}" if labels else "",
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


def evaluated_levels(summary: list[RoundRecord]) -> list[str]:
    """Every level name any round evaluated, in evaluation order."""
    return list(dict.fromkeys(lvl for rec in summary for lvl in rec.accuracy_by_level))


def summary_table(summary: list[RoundRecord]) -> str:
    """Markdown table: one row per round, one accuracy column per evaluated level."""
    levels = evaluated_levels(summary)
    head = ["round", "trained", "frontier", *[f"@{lvl}" for lvl in levels], "label acc", "kept/labeled", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in summary:
        lab, acc = rec.labels, rec.accuracy_by_level
        accs = [f"{acc[lvl]:.3f}" if lvl in acc else "" for lvl in levels]
        label_acc = "" if not lab or lab.label_accuracy_kept is None else f"{lab.label_accuracy_kept:.3f}"
        kept = "" if not lab else f"{lab.kept}/{lab.labeled}"
        row = [str(rec.round), rec.levels_trained, str(rec.frontier), *accs, label_acc, kept,
               f"{rec.wall_seconds:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    for rec in summary:
        corruption = rec.labels.corruption if rec.labels else None
        if corruption:
            notes.append(f"Round {rec.round}: {corruption['corrupted']} kept labels corrupted on purpose "
                         f"({corruption['mode']}, fraction {corruption['fraction']}).")
    if summary and summary[-1].prediction:
        notes.append(f"After round {summary[-1].round} the law of sustainability predicts: "
                     f"{prediction_text(summary[-1].prediction)}.")
    if summary and summary[-1].stopped:
        stopped = summary[-1].stopped
        notes.append(f"Stopped after round {stopped['round']} ({stopped['rule']}): {stopped['reason']}.")
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)


def plot_summary(summary: list[RoundRecord]) -> bytes:
    """PNG: the frontier and the label accuracy (kept labels) per round; corrupted rounds marked."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg, no display needed

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    rounds = [rec.round for rec in summary]
    ax.plot(rounds, [rec.frontier for rec in summary], marker="o", color="tab:blue", label="frontier")
    ax.set_xlabel("round")
    ax.set_ylabel("frontier", color="tab:blue")
    ax.grid(alpha=0.3)
    acc = ax.twinx()
    points = [(rec.round, rec.labels.label_accuracy_kept) for rec in summary
              if rec.labels and rec.labels.label_accuracy_kept is not None]
    if points:
        acc.plot(*zip(*points), marker="s", color="tab:orange", label="label accuracy (kept)")
    acc.set_ylim(-0.02, 1.02)
    acc.set_ylabel("label accuracy (kept labels)", color="tab:orange")
    for rec in summary:
        if rec.labels and rec.labels.corruption:
            ax.axvline(rec.round, color="tab:red", linestyle="--", alpha=0.6)
    title = "frontier and label accuracy by round"
    if summary and summary[-1].stopped:
        title += f" (stopped: {summary[-1].stopped['rule']})"
    ax.set_title(title)
    return png_bytes(fig)


def plot_level_map(summary: list[RoundRecord]) -> bytes:
    """PNG: accuracy by level (rows) x round (columns) as a heat map: where a run holds, where it breaks."""
    from matplotlib.figure import Figure

    levels = evaluated_levels(summary)
    grid = [[rec.accuracy_by_level.get(lvl, float("nan")) for rec in summary] for lvl in levels]
    fig = Figure(figsize=(max(4, 0.4 * len(summary) + 2), max(3, 0.25 * len(levels) + 1.5)), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
    ax.set_xticks(range(len(summary)), [str(rec.round) for rec in summary])
    ax.set_yticks(range(len(levels)), levels, fontsize="small")
    ax.set(xlabel="round", ylabel="level", title="exact match by level and round")
    fig.colorbar(image, ax=ax, label="exact match")
    return png_bytes(fig)


# The errors the law of sustainability can carry (si_hf.sustainability.STATES), as a reader reads them.
# A state of several errors is judged on its first.
STATE_TEXT = {"next_level": "accuracy at the next level", "next_two_levels": "accuracy at the next level",
              "kept_labels": "kept-label accuracy"}


def prediction_text(p: dict) -> str:
    """A prediction (see `prediction`) in words."""
    below = f"{STATE_TEXT[p['state']]} below {p['collapse_accuracy']}"
    if p["collapses_after"] is None:
        return f"it sustains over the {p['rounds_left']} round(s) left"
    after = p["collapses_after"]
    return f"{below} already" if after == 0 else f"{below} in about {after} more round(s)"


CARD_PLOTS = {PLOT_FILE: plot_accuracy, LEVEL_MAP_FILE: plot_level_map}  # the pictures a model card shows
