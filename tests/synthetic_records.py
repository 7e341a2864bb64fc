"""Round records for tests that need one without running a round (si_hf.records.RoundRecord): the fields
a test names, plausible values for the rest."""

from si_hf.records import LabelStats, RoundRecord


def label_stats(**fields) -> LabelStats:
    defaults = dict(level="5", labeled=10, kept=8, label_accuracy_all=0.8, label_accuracy_kept=0.875, filters=[])
    return LabelStats(**{**defaults, **fields})


def round_record(k: int, frontier: int = 0, accuracy_by_level: dict | None = None, labels: dict | None = None,
                 **fields) -> RoundRecord:
    """Round k; `labels` are LabelStats fields (None in round 0, as the loop writes it)."""
    acc = accuracy_by_level or {}
    defaults = dict(levels_trained="1-4" if k == 0 else str(4 + k), exact_match=0.0,
                    eval_size_by_level={lvl: 100 for lvl in acc}, train_loss=0.1, train_steps=10, wall_seconds=1.0)
    return RoundRecord(round=k, frontier=frontier, accuracy_by_level=acc,
                       labels=None if labels is None else label_stats(**labels), **{**defaults, **fields})
