"""A run started from a finished round of another run on this machine: `init_from: runs/a@round-3`.

Rounds 0..k of the source are copied into the new output directory (after their files are checked
against the source's manifests) and the run continues with round k+1 under its own recipe, which may
differ from the source's in what decides the later rounds (filters, corruption, steps per round, ...).
Several runs can so share the rounds before the one where they part, computed once. The copies get
manifests of this run, each naming its parent in the source (`runs/a@round-<j-1>`), and hub_state.json
records where they came from, as for rounds fetched from the Hub (si_hf.hub.import_rounds).

A run of K lineages (a majority vote) names with `lineages_from` the same round of K-1 other runs, whose
models start lineages 1..K-1 (read in place, not copied): the vote then trains no base again.
"""

import logging
import shutil
from pathlib import Path

from .errors import RecipeError
from .hub import check_rounds_left, check_same_base, mark_imported
from .manifest import MANIFEST, finished_rounds, staged_round, verify_round
from .records import SUMMARY_FILE, parse_init_from, read_summary, round_dir, round_name, write_summary

logger = logging.getLogger("si_hf")


def local_source(init_from: str | None) -> Path | None:
    """The run directory `init_from` names when it is one on this machine (else a Hub repo, or None)."""
    if not init_from:
        return None
    repo, _ = parse_init_from(init_from)
    return Path(repo) if Path(repo).is_dir() else None


def check_source(init_from: str, recipe) -> tuple[Path, int]:
    """The source run and round, or a RecipeError naming what does not fit."""
    import yaml

    source, k = local_source(init_from), parse_init_from(init_from)[1]
    if k not in finished_rounds(source):
        raise RecipeError(f"init_from={init_from!r}: {round_dir(source, k)} is not a finished round")
    check_rounds_left(init_from, recipe, k)
    if Path(recipe.output_dir).resolve() == source.resolve():
        raise RecipeError(f"init_from={init_from!r}: output_dir is the source run itself")
    check_same_base(init_from, recipe, yaml.safe_load((source / "recipe.yaml").read_text()))
    return source, k


def check_lineage_source(lineage_from: str, recipe):
    """A `lineages_from` entry: a finished round of a run on this machine that fits the recipe as init_from's
    does; its model (lineage 0's, checked against its manifest) starts a lineage."""
    if local_source(lineage_from) is None:
        raise RecipeError(f"lineages_from: {lineage_from!r} is not a run directory on this machine")
    verify_round(round_dir(*check_source(lineage_from, recipe)))


def branch_rounds(init_from: str, out, recipe) -> int:
    """Copies rounds 0..k of the local run `init_from` names into `out`, so the run resumes with round
    k+1. Returns k. An interrupted copy keeps the rounds it finished."""
    source, k = check_source(init_from, recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = finished_rounds(out)
    for j in (j for j in range(k + 1) if j not in done):
        verify_round(round_dir(source, j), quick=j != k)  # the last is the checkpoint training continues from
        parent = f"{source}@{round_name(j - 1)}" if j else None
        with staged_round(out, j, recipe.to_dict(), parent=parent) as tmp:
            shutil.copytree(round_dir(source, j), tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))
    if (source / SUMMARY_FILE).is_file():
        write_summary(out, read_summary(source, k))
    mark_imported(out, init_from, k)
    logger.info("Started from %s: rounds 0-%d copied into %s", init_from, k, out)
    return k
