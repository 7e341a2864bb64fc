"""Unsupervised label filters: pure functions that never see the true answer.

A filter takes the task and a list of `Label`s (and keyword options) and returns a keep-mask (list
of bools). Filters are named in FILTERS; a recipe lists them in order as specs, a name with optional
options: `length`, `length_relative`, `length_relative:threshold=3`.

Majority vote needs the labels of K models for the same prompts, so it is not a FILTERS entry:
`majority_vote(label_sets, tau)` keeps a prompt when enough models agree, and `vote_labels` turns
the agreed outputs into labels the other filters can then run on. A recipe names it as the spec
`majority_vote` or `majority_vote:tau=0.6` (with `num_seeds` > 1); `select_labels` runs the vote
first, then the other specs one by one.
"""

import difflib
import inspect
import math
from collections import Counter, defaultdict

import yaml

from .labeling import Label
from .tasks import Task


def length_filter(task: Task, labels: list[Label]) -> list[bool]:
    """Keep labels that ended with EOS and whose form is plausible for the prompt."""
    return [lab.finished and task.plausible(lab.prompt, lab.completion) for lab in labels]


def length_relative_filter(task: Task, labels: list[Label], threshold: int = 2) -> list[bool]:
    """The batch-relative length rule (the paper's filter for forward addition): drop a label whose
    completion is at least `threshold` tokens shorter than the longest finished completion in its
    batch; labels without EOS are dropped too. A batch is the labels whose prompts have the same
    length (what the labeler decodes together), so one call may hold several levels."""
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ValueError(f"length_relative: threshold must be a positive integer, got {threshold!r}")
    lengths = [task.num_tokens(lab.completion) for lab in labels]
    longest: dict[int, int] = defaultdict(int)
    for lab, n in zip(labels, lengths):
        if lab.finished:
            key = task.num_tokens(lab.prompt)
            longest[key] = max(longest[key], n)
    return [lab.finished and n > longest[task.num_tokens(lab.prompt)] - threshold for lab, n in zip(labels, lengths)]


def confidence_filter(task: Task, labels: list[Label], threshold: float = 0.9) -> list[bool]:
    """Keep labels that the labeling model chose with probability >= threshold at every token: a
    self-assessed filter (the model's own probabilities, never the true answer)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"confidence: threshold must be a number in [0, 1], got {threshold!r}")
    if any(lab.confidence is None for lab in labels):
        raise ValueError("confidence: labels carry no confidence; score them with si_hf.confidence.score_labels")
    return [lab.finished and lab.confidence >= threshold for lab in labels]


def pieces_filter(task: Task, labels: list[Label], max_piece: int | None = None) -> list[bool]:
    """Keep labels equal to what the same model answers on shorter pieces of the prompt, put together
    by the task's structure (copy and reverse of s1 s2 ..., a sum cut into low and high parts with the
    model's own carry): pieces of at most `max_piece` (default: the recipe's base_max_level) lie
    where the model is reliable, so a wrong long answer rarely matches them. Never reads the truth."""
    _check_composed("pieces", labels, max_piece)
    return [lab.finished and lab.composed != "" and lab.completion == lab.composed for lab in labels]


def _check_composed(name: str, labels: list[Label], max_piece) -> None:
    if max_piece is not None and (isinstance(max_piece, bool) or not isinstance(max_piece, int) or max_piece < 1):
        raise ValueError(f"{name}: max_piece must be a positive integer, got {max_piece!r}")
    if any(lab.composed is None for lab in labels):
        raise ValueError(f"{name}: labels carry no composed answer; fill it with si_hf.consistency.compose_labels")


def composed_labels(task: Task, labels: list[Label], keep: list[bool], max_piece: int
                    ) -> tuple[list[Label], list[bool], dict]:
    """Compositional labels (the `compose` step): a prompt the task cuts into pieces of at most
    `max_piece` takes as its label the answer the same model's answers to the pieces imply
    (`Label.composed`), and is dropped when they imply none; any other prompt keeps the model's own
    label. For multiplication this labels the pairs one digit past the square from products inside it.
    Returns the labels, the keep-mask (starting from `keep`) and the counts {"filter", "in", "out",
    "composed"}. Reads the prompts and the model's outputs, never the truth."""
    _check_composed(COMPOSE_STEP, labels, max_piece)
    out, mask, composed = [], [], 0
    for lab, kept in zip(labels, keep):
        if task.pieces(lab.prompt, max_piece) in (None, [lab.prompt]):
            out.append(lab)
            mask.append(kept)
            continue
        out.append(Label(lab.prompt, lab.composed, lab.composed != "", composed=lab.composed, swapped=lab.swapped))
        mask.append(kept and lab.composed != "")
        composed += kept and lab.composed != ""
    stats = {"filter": COMPOSE_STEP, "in": sum(keep), "out": sum(mask), "composed": composed}
    return out, mask, stats


def path_filter(task: Task, labels: list[Label]) -> list[bool]:
    """Mazes: keep a label only if it walks the prompt's own edges from S to E, a check read from the
    prompt alone (never the stored path). In a tree only the answer passes it, so with this filter a
    maze run measures the loop with exact labels; without it, with the model's own."""
    if labels and not hasattr(task, "follows_edges"):
        raise ValueError(f"path: task {task.name!r} has no edges to follow (the maze tasks do)")
    return [lab.finished and task.follows_edges(lab.prompt, lab.completion) for lab in labels]


def commute_filter(task: Task, labels: list[Label]) -> list[bool]:
    """Keep labels whose result equals the same model's result with the operands swapped (b+a for a+b,
    b*a for a*b: the product after the chain of thought). Reads the model's outputs, never the truth."""
    if any(lab.swapped is None for lab in labels):
        raise ValueError("commute: labels carry no swapped answer; fill it with si_hf.consistency.swap_labels")
    return [lab.finished and lab.swapped != "" and task.result(lab.completion) == task.result(lab.swapped)
            for lab in labels]


FILTERS = {"length": length_filter, "length_relative": length_relative_filter, "confidence": confidence_filter,
           "pieces": pieces_filter, "path": path_filter, "commute": commute_filter}

# Steps that decide the label itself, not only whether to keep it (the loop runs them in `select_labels`,
# not `apply_filters`): name -> options. The vote reads the labels of several models.
VOTE_FILTER = "majority_vote"
DEFAULT_TAU = 0.7  # the paper: ceil(0.7 * 5) = 4 of 5 models
COMPOSE_STEP = "compose"
MULTI_MODEL_FILTERS = {VOTE_FILTER: ("tau",)}
LABEL_STEPS = {**MULTI_MODEL_FILTERS, COMPOSE_STEP: ("max_piece",)}


def parse_filter_spec(spec) -> tuple[str, dict]:
    """`name` or `name:key=value,key=value` (values read as YAML scalars: 2, 0.5, true) -> (name, options).
    A `(name, options)` pair is returned as is. Raises ValueError for an unknown name or a bad option."""
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        name, options = spec[0], dict(spec[1])
    elif isinstance(spec, str):
        name, _, rest = spec.partition(":")
        name, options = name.strip(), {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"filter {spec!r}: options look like key=value, got {item!r}")
            try:
                options[key.strip()] = _scalar(yaml.safe_load(value.strip()))
            except yaml.YAMLError:
                raise ValueError(f"filter {spec!r}: cannot read the value of {key.strip()!r}") from None
    else:
        raise ValueError(f"a filter is a name like 'length' or 'length_relative:threshold=2', got {spec!r}")
    if name in LABEL_STEPS:
        unknown = sorted(set(options) - set(LABEL_STEPS[name]))
        if unknown:
            raise ValueError(f"filter {spec!r}: unknown option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(LABEL_STEPS[name])}")
        if name == COMPOSE_STEP:
            try:
                _check_composed(COMPOSE_STEP, [], options.get("max_piece"))
            except ValueError as err:
                raise ValueError(f"filter {spec!r}: {err}") from None
        if "tau" in options:
            tau = options["tau"]
            if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < tau <= 1.0:
                raise ValueError(f"filter {spec!r}: tau must be a number in (0, 1], got {tau!r}")
        return name, options
    if name not in FILTERS:
        known = [*FILTERS, *LABEL_STEPS]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown filter {name!r}{hint}; known: {', '.join(known)}")
    known = list(inspect.signature(FILTERS[name]).parameters)[2:]  # after (task, labels)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"filter {spec!r}: unknown option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(known) or 'none'}")
    try:  # option values checked when the recipe is read, not rounds later: a dry run over no labels
        FILTERS[name](None, [], **options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"filter {spec!r}: {err}") from None
    return name, options


def _scalar(value):
    """A YAML scalar, with numbers YAML 1.1 leaves as strings (`1e-9`) read as floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_filters(task: Task, labels: list[Label], names: list, keep: list[bool] | None = None
                  ) -> tuple[list[bool], list[dict]]:
    """Run the named filters (specs, see `parse_filter_spec`) in order, starting from `keep` (default:
    every label); return the final keep-mask and per-filter counts {"filter", "in", "out"}.

    Each filter sees only the labels that survived the ones before it (a batch-relative rule after
    `length` compares with the longest plausible label, not with an overlong one)."""
    parsed = [(spec, *parse_filter_spec(spec)) for spec in names]  # refuse a bad spec before any work
    for spec, name, _ in parsed:
        if name in MULTI_MODEL_FILTERS:
            raise ValueError(f"filter {spec!r} needs the labels of several models: use `select_labels` "
                             "(or `vote_labels`), not apply_filters")
        if name in LABEL_STEPS:
            raise ValueError(f"{spec!r} changes the labels, not only which are kept: use `select_labels` "
                             "(or `composed_labels`), not apply_filters")
    keep = [True] * len(labels) if keep is None else [bool(k) for k in keep]
    if len(keep) != len(labels):
        raise ValueError(f"keep has {len(keep)} entries for {len(labels)} labels")
    stats = []
    for spec, name, options in parsed:
        alive = [i for i, k in enumerate(keep) if k]
        mask = FILTERS[name](task, [labels[i] for i in alive], **options)
        if len(mask) != len(alive):
            raise ValueError(f"filter {name!r} returned {len(mask)} decisions for {len(alive)} labels")
        for i, m in zip(alive, mask):
            keep[i] = bool(m)
        stats.append({"filter": spec if isinstance(spec, str) else name, "in": len(alive), "out": sum(keep)})
    return keep, stats


# -- majority vote over K models -------------------------------------------------------------------

def min_votes(k: int, tau: float) -> int:
    """ceil(tau * k) agreeing models, at least one (tau 0.7 of 5 -> 4; tau 1.0 -> all)."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau!r}")
    return max(1, math.ceil(tau * k - 1e-9))  # 0.6 * 5 is 3.0000000000000004 in floating point


def majority_vote(label_sets: list[list[Label]], tau: float = 0.7) -> tuple[list[bool], list[str | None]]:
    """Majority vote over K models' labels of the same prompts (label_sets[m][i]: model m, prompt i).

    A prompt is kept when at least ceil(tau * K) models produced the identical full output (chain of
    thought included) and finished it with EOS; unfinished outputs never vote. Returns the keep-mask
    and, per prompt, the most frequent finished completion (ties: the one the earliest model wrote;
    None when no model finished), whether kept or not."""
    if not label_sets:
        raise ValueError("majority_vote needs the labels of at least one model")
    n = len(label_sets[0])
    if any(len(labels) != n for labels in label_sets):
        raise ValueError(f"every model must label the same prompts; got {[len(ls) for ls in label_sets]} labels")
    need = min_votes(len(label_sets), tau)
    keep, chosen = [], []
    for i in range(n):
        column = [labels[i] for labels in label_sets]
        prompt = column[0].prompt
        if any(lab.prompt != prompt for lab in column):
            raise ValueError(f"prompt {i} differs between models: {[lab.prompt for lab in column]}")
        counts = Counter(lab.completion for lab in column if lab.finished)
        if not counts:
            keep.append(False)
            chosen.append(None)
            continue
        best, votes = counts.most_common(1)[0]  # most_common keeps first-seen order among ties
        keep.append(votes >= need)
        chosen.append(best)
    return keep, chosen


def vote_labels(label_sets: list[list[Label]], tau: float = 0.7) -> tuple[list[Label], list[bool], dict]:
    """Majority vote as labels: one label per prompt holding the chosen completion (unfinished when no
    model finished), the keep-mask, and the vote's counts {"filter": "majority_vote", "in", "out",
    "models", "min_votes"}. Pass the labels and mask on to `apply_filters(..., keep=mask)`."""
    keep, chosen = majority_vote(label_sets, tau)
    labels = [Label(first.prompt, c if c is not None else first.completion, c is not None)
              for first, c in zip(label_sets[0], chosen)]
    stats = {"filter": "majority_vote", "in": len(labels), "out": sum(keep), "models": len(label_sets),
             "min_votes": min_votes(len(label_sets), tau)}
    return labels, keep, stats


def select_labels(task: Task, label_sets: list[list[Label]], specs: list, score=None, max_piece: int | None = None
                  ) -> tuple[list[Label], list[bool], list[dict], list[list[bool]]]:
    """The recipe's filters over the labels of one or more models (label_sets[m][i]: model m, prompt i).

    With a `majority_vote[:tau=...]` spec the vote runs first, wherever it is listed (it decides the
    label: the completion that got the votes); without one there must be exactly one model. Then
    `score(labels) -> labels` (e.g. filling `confidence` with the first model) when given, then the
    other specs one by one, in order (`compose` takes its pieces up to `max_piece` where its spec names
    no size; labels it drops stay dropped, so list it before the filters that should see its labels).
    Returns the labels, the final keep-mask, one stats entry per step ({"filter", "in", "out", ...},
    the vote first) and the keep-mask after each step, parallel to the stats (for analysis columns
    computed by the caller). Never sees a true answer."""
    parsed = [(spec, *parse_filter_spec(spec)) for spec in specs]
    votes = [(spec, options) for spec, name, options in parsed if name == VOTE_FILTER]
    if len(votes) > 1:
        raise ValueError(f"at most one {VOTE_FILTER} filter, got {[spec for spec, _ in votes]}")
    stats, masks = [], []
    if votes:
        spec, options = votes[0]
        labels, keep, vote_stats = vote_labels(label_sets, options.get("tau", DEFAULT_TAU))
        stats.append({**vote_stats, "filter": spec if isinstance(spec, str) else VOTE_FILTER})
        masks.append(list(keep))
    elif len(label_sets) != 1:
        raise ValueError(f"{len(label_sets)} models' labels need a {VOTE_FILTER} filter to become one label set")
    else:
        labels, keep = list(label_sets[0]), None
    if score is not None:
        labels = score(labels)
    for spec, name, options in parsed:
        if name == VOTE_FILTER:
            continue
        if name == COMPOSE_STEP:
            size = options.get("max_piece") or max_piece
            if size is None:
                raise ValueError(f"{spec!r}: no max_piece (name one in the spec, or pass select_labels one)")
            labels, keep, step = composed_labels(task, labels, keep or [True] * len(labels), size)
            stats.append({**step, "filter": spec if isinstance(spec, str) else COMPOSE_STEP})
        else:
            keep, (step,) = apply_filters(task, labels, [spec], keep=keep)
            stats.append(step)
        masks.append(list(keep))
    if keep is None:
        keep = [True] * len(labels)
    return labels, keep, stats, masks
