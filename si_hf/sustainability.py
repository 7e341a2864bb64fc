"""When does self-improvement collapse? Label quality carried from one round to the next, fitted.

The law is a map from one round's kept-label error e_k = 1 - (kept-label accuracy) to the next
round's, e_{k+1} = f(e_k), here a quadratic f(e) = a + b e + c e^2 fitted by least squares on the
consecutive rounds of many runs (corruption sweeps: scripts/sweep_corruption.py). Its fixed points
e* = f(e*) in [0, 1] say what a run does: it settles at a stable one (|f'(e*)| < 1), and an unstable
one is the critical error above which errors grow round after round (the error avalanche); iterating
f from a measured error predicts whether a run sustains, or the round where its kept-label accuracy
falls below a collapse level. The parameters' uncertainty is a bootstrap over the runs.

Reads only the records (summary.jsonl) of finished runs; label accuracies there are analysis columns.
"""

import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np

from .cards import png_bytes
from .records import SUMMARY_FILE, RoundRecord, read_summary


@dataclasses.dataclass
class Law:
    coefficients: tuple[float, float, float]  # a, b, c of f(e) = a + b e + c e^2
    stderr: tuple[float, float, float]  # bootstrap standard deviations of a, b, c
    rmse: float  # of the fit on its own transitions
    transitions: int

    def __call__(self, error: float) -> float:
        a, b, c = self.coefficients
        return float(np.clip(a + b * error + c * error**2, 0.0, 1.0))

    def fixed_points(self) -> list[tuple[float, bool]]:
        """(e*, stable) for every fixed point in [0, 1], lowest first."""
        a, b, c = self.coefficients
        roots = np.roots([c, b - 1.0, a]) if abs(c) > 1e-12 else np.array([a / (1.0 - b)] if b != 1 else [])
        points = sorted(float(r.real) for r in np.atleast_1d(roots) if abs(r.imag) < 1e-9 and -1e-9 <= r.real <= 1)
        return [(max(e, 0.0), abs(b + 2 * c * e) < 1.0) for e in points]

    def critical_accuracy(self) -> float | None:
        """The kept-label accuracy below which errors grow (1 - the lowest unstable fixed point)."""
        unstable = [e for e, stable in self.fixed_points() if not stable]
        return 1.0 - unstable[0] if unstable else None

    def save(self, path):
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "Law":
        data = json.loads(Path(path).read_text())
        return cls(tuple(data["coefficients"]), tuple(data["stderr"]), data["rmse"], data["transitions"])

    def predict(self, error: float, rounds: int, collapse_accuracy: float = 0.5) -> int | None:
        """The number of rounds after which the kept-label accuracy first falls below
        `collapse_accuracy`, starting from `error`; None when it does not within `rounds`."""
        for n in range(1, rounds + 1):
            error = self(error)
            if 1.0 - error < collapse_accuracy:
                return n
        return None


def prediction(law: Law, record: RoundRecord, rounds_left: int, collapse_accuracy: float = 0.5) -> dict | None:
    """What the law says of a run after `record`'s round: None for a round without kept labels, else
    {"collapses_after": rounds from this one until kept-label accuracy < collapse_accuracy (None: it
    sustains over the rounds left), "critical_accuracy": ...}."""
    if record.labels is None or record.labels.label_accuracy_kept is None:
        return None
    after = law.predict(1.0 - record.labels.label_accuracy_kept, rounds_left, collapse_accuracy)
    return {"collapses_after": after, "critical_accuracy": law.critical_accuracy(),
            "collapse_accuracy": collapse_accuracy}


def kept_errors(records: list[RoundRecord]) -> list[float | None]:
    """Per round from 1 on: 1 - kept-label accuracy (None for a round that kept nothing)."""
    accuracies = [rec.labels.label_accuracy_kept if rec.labels else None for rec in records[1:]]
    return [None if acc is None else 1.0 - acc for acc in accuracies]


def transitions(series: list[list[float | None]]) -> np.ndarray:
    """(e_k, e_{k+1}) for every pair of consecutive measured rounds of every run, as an n x 2 array."""
    pairs = [(e, f) for errors in series for e, f in zip(errors, errors[1:]) if e is not None and f is not None]
    return np.array(pairs, dtype=float).reshape(-1, 2)


def fit_law(series: list[list[float | None]], bootstrap: int = 200, seed: int = 0) -> Law:
    """The quadratic map fitted on the runs' transitions; the bootstrap resamples whole runs."""
    pairs = transitions(series)
    if len(pairs) < 3:
        raise ValueError(f"a law needs at least 3 transitions between rounds, got {len(pairs)}")
    coefficients = _fit(pairs)
    rng, samples = np.random.default_rng(seed), []
    for _ in range(bootstrap):
        resampled = transitions([series[i] for i in rng.integers(0, len(series), len(series))])
        with contextlib.suppress(ValueError):  # a resample with too few distinct errors to fit
            samples.append(_fit(resampled))
    a, b, c = coefficients
    rmse = float(np.sqrt(np.mean((a + b * pairs[:, 0] + c * pairs[:, 0] ** 2 - pairs[:, 1]) ** 2)))
    stderr = tuple(float(s) for s in np.std(samples, axis=0)) if samples else (float("nan"),) * 3
    return Law(coefficients, stderr, rmse, len(pairs))


def _fit(pairs: np.ndarray) -> tuple[float, float, float]:
    if len(np.unique(pairs[:, 0])) < 3:
        raise ValueError("a quadratic law needs transitions from at least 3 different errors (runs that all kept "
                         "perfect labels say nothing about where errors lead)")
    c, b, a = np.polyfit(pairs[:, 0], pairs[:, 1], 2)
    return float(a), float(b), float(c)


def read_runs(directory) -> dict[str, list[RoundRecord]]:
    """Every finished run under `directory` (any depth), by its path relative to it."""
    root = Path(directory)
    return {str(path.parent.relative_to(root)): read_summary(path.parent)
            for path in sorted(root.rglob(SUMMARY_FILE))}


def plot_law(law: Law, series: list[list[float | None]]) -> bytes:
    """PNG: the measured transitions (e_k, e_k+1), the fitted map, the diagonal and the fixed points."""
    from matplotlib.figure import Figure

    pairs = transitions(series)
    top = max(0.05, float(pairs.max()) * 1.1) if len(pairs) else 1.0
    xs = np.linspace(0.0, min(1.0, top), 200)
    fig = Figure(figsize=(5, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(pairs[:, 0], pairs[:, 1], "o", color="tab:blue", alpha=0.7, label="measured rounds")
    ax.plot(xs, [law(x) for x in xs], color="tab:orange", label="fitted law")
    ax.plot(xs, xs, "--", color="gray", label="no change")
    for e, stable in law.fixed_points():
        if e <= xs[-1]:
            ax.plot([e], [e], "o" if stable else "x", color="black", markersize=9,
                    label=f"{'stable' if stable else 'critical'} {e:.3f}")
    ax.set(xlabel="kept-label error, round k", ylabel="kept-label error, round k+1", title="the law of sustainability")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return png_bytes(fig)
