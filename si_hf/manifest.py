"""Round manifests: what makes a round directory count as finished, and the checks on resume.

A round is written into `.round-<k>.tmp` (see `staged_round`), then `manifest.json` is added (the
sha256 and size of every other file in the directory, the recipe's hash, the parent round), and
only then is the directory renamed to `round-<k>`. `is_finished` counts a round only when its manifest
is there and reads back; `verify_round` recomputes the checksums on resume and names the first file
that does not match. Nothing here trains or loads a model.

Runs written before manifests existed (every round directory without one, none with one) are adopted
once by `adopt_legacy_rounds`: their directories were renamed into place only when complete, too.
"""

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from .config import RESUMABLE_CHANGES
from .errors import RoundError
from .records import RECORD_FILE, round_dir, round_name, round_number, staging_dir

logger = logging.getLogger("si_hf")

MANIFEST = "manifest.json"
FORMAT = "si-hf-round-manifest/1"


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recipe_hash(recipe: dict) -> str:
    """sha256 of the recipe fields that decide what a run computes (not those a rerun may change)."""
    kept = {k: v for k, v in sorted(recipe.items()) if k not in RESUMABLE_CHANGES}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.relative_to(directory).as_posix() != MANIFEST)


def write_manifest(directory, k: int, recipe: dict, parent: str | None = None, parent_dir=None,
                   adopted: bool = False) -> dict:
    """Writes `directory/manifest.json` for round k: every file's sha256 and size (each file is flushed
    to disk first), the recipe hash, the parent round and the sha256 of the parent's manifest."""
    directory = Path(directory)
    files = {}
    for path in _files(directory):
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())  # the bytes hashed are on disk before the round can count as finished
        files[path.relative_to(directory).as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest = {"format": FORMAT, "round": k, "parent": parent, "recipe_sha256": recipe_hash(recipe), "files": files}
    parent_manifest = Path(parent_dir) / MANIFEST if parent_dir is not None else None
    if parent_manifest is not None and parent_manifest.is_file():
        manifest["parent_manifest_sha256"] = sha256_file(parent_manifest)
    if adopted:
        manifest["adopted"] = True  # written after the fact for a round older than manifests
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / MANIFEST)
    return manifest


def read_manifest(directory) -> dict | None:
    """The manifest of a round directory, or None when it is missing or unreadable."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(manifest.get("round"), int)
            or not isinstance(manifest.get("files"), dict)
            or not all(isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int)
                       for v in manifest["files"].values())):
        return None
    return manifest


def is_finished(directory, k: int) -> bool:
    """Whether `directory` holds finished round k: its manifest is there, reads back and names round k."""
    manifest = read_manifest(directory)
    return manifest is not None and manifest["round"] == k


def verify_round(directory, quick: bool = False):
    """Checks the files of a finished round against its manifest (sizes only when `quick`); raises
    RoundError naming the first file that is missing or whose checksum differs."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise RoundError(f"{directory / MANIFEST} is missing or unreadable: {directory} is not a finished round")
    for name, expected in sorted(manifest["files"].items()):
        path = directory / name
        fix = (f"Restore the file, or delete {directory} and every later round to compute them again "
               "(rerun the same command).")
        if not path.is_file():
            raise RoundError(f"{path} is missing (listed in {directory / MANIFEST}). {fix}")
        size = path.stat().st_size
        if size != expected["size"]:
            raise RoundError(f"{path} is corrupted: {size} bytes, its manifest says {expected['size']}. {fix}")
        if not quick and sha256_file(path) != expected["sha256"]:
            raise RoundError(f"{path} is corrupted: its sha256 does not match {directory / MANIFEST}. {fix}")


def verify_rounds(out, done: list[int]):
    """On resume: the last finished round in full (its checkpoint is what training continues from), the
    earlier ones by size (their data feeds the mixture)."""
    for k in done:
        verify_round(round_dir(out, k), quick=k != done[-1])


def verify_lineage(out, done: list[int]):
    """On resume: the finished rounds form one chain under one recipe. Every manifest carries the
    recipe hash of round 0's, names round k-1 as its parent (`round-<k-1>`, or `REPO@round-<k-1>` for
    rounds fetched from the Hub) and, where it recorded one, the sha256 of that parent's manifest.
    Raises RoundError at the first round that breaks the chain (two runs written into one directory)."""
    manifests = {k: read_manifest(round_dir(out, k)) for k in done}
    recipe = manifests[done[0]]["recipe_sha256"]
    for k in done[1:]:
        here, manifest = round_dir(out, k), manifests[k]
        fix = (f"The rounds in {out} are not one run. Delete {here} and every later round to compute them again "
               f"from round {k - 1} (rerun the same command), or start afresh in another output_dir.")
        if manifest["recipe_sha256"] != recipe:
            raise RoundError(f"{here} was computed under another recipe than {round_dir(out, done[0])} "
                             f"(recipe_sha256 {manifest['recipe_sha256'][:12]}... against {recipe[:12]}...). {fix}")
        parent = manifest.get("parent")
        if _parent_round(parent) != k - 1:
            raise RoundError(f"{here} names {parent!r} as its parent, not {round_name(k - 1)}. {fix}")
        expected = manifest.get("parent_manifest_sha256")
        if expected is not None and expected != sha256_file(round_dir(out, k - 1) / MANIFEST):
            raise RoundError(f"{here} was computed from another {round_name(k - 1)} than the one in {out} "
                             f"(its parent_manifest_sha256 does not match). {fix}")


def _parent_round(parent: str | None) -> int | None:
    """k of a parent named `round-<k>` or `REPO@round-<k>`."""
    return round_number(parent.rpartition("@")[2]) if parent else None


def round_dirs(out) -> dict[int, Path]:
    """Every `round-<k>` directory of `out`, finished or not, by k."""
    out = Path(out)
    if not out.is_dir():
        return {}
    found = {round_number(d.name): d for d in out.glob("round-*") if d.is_dir()}
    return {k: d for k, d in sorted(found.items()) if k is not None}


def finished_rounds(out) -> list[int]:
    """The rounds whose directory holds a valid manifest (nothing else counts as finished)."""
    return [k for k, d in round_dirs(out).items() if is_finished(d, k)]


def unfinished_round_dirs(out) -> list[Path]:
    """`round-<k>` directories without a valid manifest: they do not count (and are replaced when the
    round is computed again)."""
    return [d for k, d in round_dirs(out).items() if not is_finished(d, k)]


def adopt_legacy_rounds(out, recipe: dict, log=logger.warning) -> list[int]:
    """Writes manifests for the rounds of a run older than manifests: only when no round directory of
    `out` has a manifest, for each `round-<k>` holding eval.json (renamed into place only once
    complete, by the code that wrote it). Returns the rounds adopted."""
    dirs = round_dirs(out)
    if not dirs or any((d / MANIFEST).exists() for d in dirs.values()):
        return []
    adopted = []
    for k in sorted(dirs):
        if not (dirs[k] / RECORD_FILE).is_file():
            break
        write_manifest(dirs[k], k, recipe, parent=round_name(k - 1) if k else None,
                       parent_dir=dirs.get(k - 1), adopted=True)
        adopted.append(k)
    if adopted:
        log(f"{out}: rounds {adopted[0]}-{adopted[-1]} predate round manifests; wrote one for each (adopted).")
    return adopted


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def staged_round(out, k: int, recipe: dict, parent: str | None = None):
    """Yields the empty `.round-<k>.tmp` to write round k into; on success adds the manifest and renames
    it to `round-<k>` (replacing a `round-<k>` without a valid manifest). On any error the temporary
    directory is removed and no round directory appears; a full disk becomes a RoundError saying so."""
    out = Path(out)
    tmp, final = staging_dir(out, k), round_dir(out, k)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        write_manifest(tmp, k, recipe, parent=parent, parent_dir=round_dir(out, k - 1) if k else None)
        if final.exists():
            if is_finished(final, k):
                raise RoundError(f"{final} is already a finished round; refusing to replace it")
            shutil.rmtree(final)  # left without a valid manifest: not a finished round
        os.replace(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            raise RoundError(f"the disk is full: cannot save round {k} into {out} ({err}). Round {k} was not "
                             f"saved and its temporary directory {tmp} was removed; free some space and rerun "
                             "the same command to continue.") from err
        raise
    try:  # the rename itself survives a crash once the directory entry is on disk
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
