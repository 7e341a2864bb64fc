"""When does self-improvement collapse? Label quality carried from one round to the next, fitted.

A run's state after round k is a vector of errors in [0, 1], read from its record (STATES); its first
component is the error a collapse is judged on:
- `next_level` (the default): 1 - the accuracy of round k's model at the level after the highest one it
  trained on, on the held-out set: the error of the labels the next round starts from, before filters;
- `next_two_levels`: that error and the one at the level after it. How far past its range a model still
  holds decides how fast its errors pile up (copy with the length filter alone: seed 0, whose models were
  about 0.5 wrong two levels out, collapsed in 4 rounds; seeds 1 and 2, about 0.2 wrong, still held at 9);
- `kept_labels`: 1 - the accuracy of round k's kept labels (the first sweep showed it blind to a run
  that stalls because its labels stop passing the filters: the few it keeps are right).

The law is a map e_{k+1} = f(e_k), linear in log-odds: logit f(e)_i = a_i + sum_j B_ij logit e_j (for one
error, logit e' = alpha + beta logit e), fitted by least squares on the consecutive rounds of many runs
(corruption sweeps: scripts/sweep_corruption.py). Errors are clipped to [EPS, 1 - EPS] first, about one
miss in the smallest held-out sets, so that a perfect round has a finite log-odds; rounds with an error
at either bound are left out of the fit (they fit any such law) unless `fit_law(..., bounds=True)`.
Its one interior fixed point z* = (I - B)^-1 a says what runs do: when it is unstable (for one error,
beta > 1) its first error is the critical error, below which errors die out round after round and above
which they grow to 1 (the error avalanche); when it is stable every run settles there. Iterating f
from a measured state predicts whether a run sustains, or the round where its accuracy falls below a
collapse level and stays there. The parameters' uncertainty is a bootstrap over whole runs.

Reads only the records (summary.jsonl) of finished runs; accuracies there are analysis columns.
"""

import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np

from .cards import STATE_TEXT, png_bytes
from .records import SUMMARY_FILE, RoundRecord, parse_summary, read_summary, without_timing

EPS = 0.005


def level_error(record: RoundRecord, ahead: int) -> float | None:
    """1 - the round's accuracy `ahead` levels after its highest trained one (None: not a numbered
    level, or not evaluated)."""
    top = record.levels_trained.split("-")[-1]
    accuracy = record.accuracy_by_level.get(str(int(top) + ahead)) if top.isdigit() else None
    return None if accuracy is None else 1.0 - accuracy


def next_level_error(record: RoundRecord) -> float | None:
    """1 - the round's accuracy at the level after its highest trained one."""
    return level_error(record, 1)


def kept_label_error(record: RoundRecord) -> float | None:
    """1 - the round's kept-label accuracy (None in round 0 and for a round that kept nothing)."""
    accuracy = record.labels.label_accuracy_kept if record.labels else None
    return None if accuracy is None else 1.0 - accuracy


STATES = {"next_level": (next_level_error,), "next_two_levels": (next_level_error, lambda r: level_error(r, 2)),
          "kept_labels": (kept_label_error,)}


def state_of(record: RoundRecord, state: str = "next_level") -> tuple[float, ...] | None:
    """The round's state (STATES); None when any of its errors is missing."""
    values = tuple(read(record) for read in STATES[state])
    return None if None in values else values


def vectors(records: list[RoundRecord], state: str = "next_level") -> list[tuple[float, ...] | None]:
    """The run's state by round (index = round number)."""
    return [state_of(rec, state) for rec in records]


def errors(records: list[RoundRecord], state: str = "next_level") -> list[float | None]:
    """The run's judged error (its state's first) by round."""
    return judged(vectors(records, state))


def judged(series: list) -> list[float | None]:
    """The error a collapse is judged on, by round, from states that are vectors or single errors."""
    return [None if e is None else float(np.atleast_1d(e)[0]) for e in series]


def logit(error) -> np.ndarray:
    e = np.clip(np.asarray(error, dtype=float), EPS, 1.0 - EPS)
    return np.log(e / (1.0 - e))


def expit(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def _matrix(values) -> tuple[tuple[float, ...], ...]:
    """Coefficients as rows (a_i, B_i1, ..., B_id), one per error; a flat (alpha, beta) is one row."""
    rows = np.atleast_2d(np.asarray(values, dtype=float))
    return tuple(tuple(float(v) for v in row) for row in rows)


@dataclasses.dataclass
class Law:
    coefficients: tuple  # rows (a_i, B_i1..B_id) of logit e'_i = a_i + sum_j B_ij logit e_j; (alpha, beta) for one
    stderr: tuple  # bootstrap standard deviations, the same shape
    rmse: float  # in error, of the fit on its own transitions
    transitions: int
    state: str = "next_level"  # the errors it carries (STATES)
    critical_range: tuple[float, float] | None = None  # 5th-95th percentile of the critical accuracy, bootstrap

    def __post_init__(self):
        self.coefficients, self.stderr = _matrix(self.coefficients), _matrix(self.stderr)

    @property
    def dims(self) -> int:
        return len(self.coefficients)

    def _parts(self) -> tuple[np.ndarray, np.ndarray]:
        rows = np.array(self.coefficients)
        return rows[:, 0], rows[:, 1:]

    def __call__(self, error):
        """The next round's state from this one's (a single error gives a single error back)."""
        a, b = self._parts()
        nxt = expit(a + b @ logit(np.atleast_1d(error)))
        return float(nxt[0]) if np.ndim(error) == 0 else tuple(float(e) for e in nxt)

    def fixed_points(self) -> list[tuple[float, bool]]:
        """(first error of z*, stable) for the interior fixed point, when there is one (0 and 1 are the
        limits beside it)."""
        a, b = self._parts()
        identity = np.eye(self.dims)
        if abs(np.linalg.det(identity - b)) < 1e-12:
            return []
        z = np.linalg.solve(identity - b, a)
        stable = self.growth()[0] < 1.0
        return [(float(expit(z[0])), stable)] if np.all(np.abs(z) < -float(logit(EPS))) else []  # inside the clip

    def growth(self) -> list[float]:
        """How much a small change in the state's log-odds grows a round, along each direction: the
        eigenvalues of B by size (one above 1: some error grows from anywhere near the fixed point)."""
        return sorted((float(abs(v)) for v in np.linalg.eigvals(self._parts()[1])), reverse=True)

    def critical_accuracy(self) -> float | None:
        """The accuracy below which errors grow round after round (1 - the unstable fixed point)."""
        unstable = [e for e, stable in self.fixed_points() if not stable]
        return 1.0 - unstable[0] if unstable else None

    def save(self, path):
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "Law":
        """A law saved by `save`; a ValueError names a file that is not one (or one of an older form)."""
        try:
            data = json.loads(Path(path).read_text())
            spread = data.get("critical_range")
            law = cls(**{**data, "critical_range": tuple(spread) if spread else None})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} is not a law written by scripts/fit_sustainability.py --save ({err})") from err
        if law.state not in STATES:
            raise ValueError(f"{path} is not a law of this si-hf: its state must be one of {', '.join(STATES)}")
        dims = len(STATES[law.state])
        if np.shape(law.coefficients) != (dims, dims + 1):
            raise ValueError(f"{path} is not a law of this si-hf: a {law.state} law needs {dims} row(s) of "
                             f"{dims + 1} coefficients (for one error: alpha, beta); fit it again")
        return law

    def predict(self, error, rounds: int, collapse_accuracy: float = 0.5) -> int | None:
        """Rounds from `error` (a state) until the run collapses (see `collapsed_after`; 0: it has
        already), the law iterated `rounds` times; None when it does not within them."""
        path = [error]
        for _ in range(rounds):
            path.append(self(path[-1]))
        return collapsed_after(judged(path), collapse_accuracy)


def prediction(law: Law, record: RoundRecord, rounds_left: int, collapse_accuracy: float = 0.5) -> dict | None:
    """What the law says of a run after `record`'s round: None when the round has no state (see STATES),
    else {"collapses_after": rounds from this one until the accuracy < collapse_accuracy (None: it
    sustains over the rounds left), "rounds_left", "critical_accuracy", "collapse_accuracy", "state"}."""
    state = state_of(record, law.state)
    if state is None:
        return None
    return {"collapses_after": law.predict(state, rounds_left, collapse_accuracy), "rounds_left": rounds_left,
            "critical_accuracy": law.critical_accuracy(), "collapse_accuracy": collapse_accuracy,
            "state": law.state}


def collapsed_after(series: list[float | None], collapse_accuracy: float = 0.5) -> int | None:
    """Rounds after the first of `series` until the run collapsed: its accuracy fell below
    collapse_accuracy and stayed below to the end of the series (a dip it climbs back from is not a
    collapse); 0 when it was below from the first round on; None when it did not collapse."""
    below = [e is None or 1.0 - e < collapse_accuracy for e in series]  # a round without a state breaks nothing
    return next((n for n, e in enumerate(series) if e is not None and all(below[n:])), None)


def transitions(series: list[list]) -> np.ndarray:
    """(e_k, e_{k+1}) for every pair of consecutive measured rounds of every run, as an n x 2d array
    (states of d errors; single errors count as d = 1)."""
    pairs = [np.concatenate([np.atleast_1d(e), np.atleast_1d(f)])
             for errs in series for e, f in zip(errs, errs[1:]) if e is not None and f is not None]
    return np.array(pairs, dtype=float).reshape(len(pairs), -1) if pairs else np.zeros((0, 2))


def informative(pairs: np.ndarray) -> np.ndarray:
    """The transitions that say where errors go: those from a state inside (EPS, 1 - EPS). A round at
    no error or at every error (clipped) fits any law that keeps 0 and 1 where they are."""
    start = pairs[:, :pairs.shape[1] // 2]
    return pairs[np.all((start > EPS) & (start < 1.0 - EPS), axis=1)]


def fit_law(series: list[list], state: str = "next_level", bootstrap: int = 200,
            seed: int = 0, bounds: bool = False) -> Law:
    """The log-odds map fitted on the runs' informative transitions (with `bounds`, on all of them: a run
    that stays at every error then counts as evidence that 1 holds it); the bootstrap resamples whole runs."""
    kept = (lambda pairs: pairs) if bounds else informative
    pairs = kept(transitions(series))
    if len(pairs) < 3:
        raise ValueError(f"a law needs at least 3 transitions from an error inside (0, 1), got {len(pairs)}")
    coefficients = _fit(pairs)
    rng, samples = np.random.default_rng(seed), []
    for _ in range(bootstrap):
        resampled = kept(transitions([series[i] for i in rng.integers(0, len(series), len(series))]))
        with contextlib.suppress(ValueError):  # a resample with too few distinct errors to fit
            samples.append(_fit(resampled))
    d = pairs.shape[1] // 2
    law = Law(coefficients, np.zeros_like(coefficients), 0.0, len(pairs), state)
    predicted = np.array([law(e) for e in pairs[:, :d]])  # each start as a state gives a state back
    rmse = float(np.sqrt(np.mean((predicted - pairs[:, d:]) ** 2)))
    stderr = np.std(samples, axis=0) if samples else np.full_like(coefficients, np.nan)
    critical = [c for c in (Law(s, np.zeros_like(s), 0, 0, state).critical_accuracy() for s in samples)
                if c is not None]
    # The range only when most resamples agree there is a critical accuracy at all.
    spread = tuple(float(q) for q in np.percentile(critical, [5, 95])) if len(critical) > len(samples) / 2 else None
    return Law(coefficients, stderr, rmse, len(pairs), state, spread)


def _fit(pairs: np.ndarray) -> np.ndarray:
    """Rows (a_i, B_i1..B_id) by least squares in log-odds."""
    d = pairs.shape[1] // 2
    x, y = logit(pairs[:, :d]), logit(pairs[:, d:])
    if len(np.unique(x[:, 0])) < 2 or len(pairs) < d + 2:
        raise ValueError("a law needs transitions from at least 2 different errors")
    design = np.hstack([np.ones((len(x), 1)), x])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    return solution.T


def read_runs(path) -> dict[str, list[RoundRecord]]:
    """Every finished run under the directory `path` (a summary.jsonl at any depth), by its path relative
    to it; or the one run whose summary `path` is (any .jsonl, e.g. a record kept under docs/)."""
    root = Path(path)
    if root.is_file():
        return {".": parse_summary(root.read_text())}
    return {str(p.parent.relative_to(root)): read_summary(p.parent) for p in sorted(root.rglob(SUMMARY_FILE))}


def distinct_runs(runs: dict[str, list[RoundRecord]]) -> dict[str, list[RoundRecord]]:
    """`runs` less those whose rounds all belong to a longer run (a sweep's shared rounds), so that they
    count once. Timings are not compared: a round copied into a branch is timed again."""
    untimed = {name: [without_timing(rec) for rec in recs] for name, recs in runs.items()}
    return {name: runs[name] for name, recs in untimed.items()
            if not any(len(other) > len(recs) and other[:len(recs)] == recs for other in untimed.values())}


def corruption_of(records: list[RoundRecord]) -> tuple[int, str, float] | None:
    """(round, mode, fraction) of the run's corrupted round; None for a run without one."""
    for rec in records:
        if rec.labels and rec.labels.corruption:
            return rec.round, rec.labels.corruption["mode"], rec.labels.corruption["fraction"]
    return None


def plot_law(law: Law, series: list[list], held_out: list[list] = ()) -> bytes:
    """PNG: the measured transitions of the judged error (e_k, e_k+1), the fitted map (for a state of
    several errors, its prediction from each measured round), the diagonal and the fixed point."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.5), dpi=100)
    ax = fig.add_subplot()
    for runs, style, label in ((series, "o", "fitted rounds"), (list(held_out), "s", "held-out rounds")):
        points = transitions(runs)
        if len(points):
            d = points.shape[1] // 2
            ax.plot(points[:, 0], points[:, d], style, alpha=0.6, label=label, markerfacecolor="none")
            if law.dims > 1:
                ax.plot(points[:, 0], [law(tuple(e))[0] for e in points[:, :d]], "+", color="tab:red",
                        label=f"law, from the {label}")
    if law.dims == 1:
        xs = np.linspace(0.0, 1.0, 400)
        ax.plot(xs, [law(x) for x in xs], color="tab:red", label="fitted law")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="no change")
    for e, stable in law.fixed_points():
        ax.plot([e], [e], "o" if stable else "x", color="black", markersize=10,
                label=f"{'stable' if stable else 'critical'} error {e:.3f}")
    name = STATE_TEXT[law.state].replace("accuracy", "error")
    ax.set(xlabel=f"{name}, round k", ylabel=f"{name}, round k+1", title="the law of sustainability")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return png_bytes(fig)


def phase_axes(outcomes: list[dict]) -> tuple[list[str], list[float]]:
    """The phase diagram's rows (modes) and columns (fractions), sorted."""
    return sorted({o["mode"] for o in outcomes}), sorted({o["fraction"] for o in outcomes})


def phase_strips(outcomes: list[dict]) -> list[tuple[float, float, int, dict]]:
    """Where each outcome goes in the phase diagram: (left edge, width, row, outcome). A cell (mode x
    fraction) holding several runs (seeds) is split into side-by-side strips, one a run, in order."""
    modes, fractions = phase_axes(outcomes)
    cells: dict[tuple[int, int], list[dict]] = {}
    for o in outcomes:
        cells.setdefault((fractions.index(o["fraction"]), modes.index(o["mode"])), []).append(o)
    return [(x - 0.45 + i * 0.9 / len(runs), 0.9 / len(runs), y, o)
            for (x, y), runs in cells.items() for i, o in enumerate(runs)]


def plot_phases(outcomes: list[dict]) -> bytes:
    """PNG: the phase diagram, corruption mode (rows) x fraction (columns) -> sustained or collapsed,
    one strip a run where a cell has several (seeds). Each outcome: mode, fraction, measured (rounds to
    collapse or None), and optionally predicted."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    modes, fractions = phase_axes(outcomes)
    fig = Figure(figsize=(1.1 * len(fractions) + 2.5, 0.8 * len(modes) + 1.6), dpi=100)
    ax = fig.add_subplot()
    for left, width, y, o in phase_strips(outcomes):
        measured = o["measured"]
        ax.add_patch(Rectangle((left, y - 0.45), width, 0.9, color="tab:green" if measured is None else "tab:red",
                               ec="white"))
        text = "S" if measured is None else f"C{measured}"
        if "predicted" in o:
            text += "\n(law:\n" + ("S" if o["predicted"] is None else f"C{o['predicted']}") + ")"
        ax.text(left + width / 2, y, text, ha="center", va="center", fontsize="x-small", color="white")
    ax.set_xticks(range(len(fractions)), [f"{f:g}" for f in fractions])
    ax.set_yticks(range(len(modes)), modes)
    ax.set(xlim=(-0.5, len(fractions) - 0.5), ylim=(-0.5, len(modes) - 0.5), xlabel="corrupted share of kept labels")
    ax.set_title("S: sustained, Cn: collapsed n rounds\nafter the corruption", fontsize="small")
    return png_bytes(fig)
