"""On-disk cache of log-Mel features: one memory-mapped float32 array plus a JSON index.

Layout, with ``key = recipe.key()``::

    cache_dir/<key>/features.f32   all utterances' frames, (total_frames, n_mels) float32, C order
    cache_dir/<key>/index.json     recipe, manifest fingerprint, one entry per utterance
                                   (utt_id, label, speaker, subset, offset, frames), skipped files

The folder name is the recipe's hash, so a cache built with another recipe is
never read by mistake. The index also records a fingerprint of the manifest
(its bytes and the absolute path, size and modification time of every audio
file it names, so spelling the data folder another way finds the same cache);
``build`` rebuilds when the fingerprint differs. Storing frames as rows keeps
each utterance contiguous on disk, so reading one is a single slice.

A build writes into a private staging folder ``.<key>.partial-<host>-<pid>.<random>``
beside the cache and renames it into place, so readers never see a half-written
cache. Several processes may build the same cache at once: whichever finishes
first installs its folder, and a later one that finds a usable cache of the same
manifest there keeps it and discards its own copy (the contents are identical),
so nobody deletes files another process is about to read. Staging folders left
by a killed build are removed by the next build (see :mod:`jemfast._leftovers`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import check_choice, check_int
from .._leftovers import owner_tag, stale_leftovers
from .audio import DEFAULT_MIN_SAMPLES, AudioError, load_audio
from .features import FeatureRecipe, logmel
from .importers import ON_ERROR_CHOICES
from .manifest import ManifestRow, read_manifest

logger = logging.getLogger(__name__)

DEFAULT_RECIPE = FeatureRecipe()  # frozen: one shared default is safe
INDEX_NAME = "index.json"
FEATURES_NAME = "features.f32"
INDEX_FORMAT = 1
# Staging folders of a build and folders of a replaced cache on their way out; <owner> is <host>-<pid>
# (a bare <pid> in older versions) and the random suffix, absent in older versions, keeps them unique.
_LEFTOVER_PATTERN = re.compile(r"\.[0-9a-f]{16}\.(?:partial|replaced)-(?P<owner>[A-Za-z0-9_-]+?)(?:\.[A-Za-z0-9_]+)?")
# Rename attempts before giving up when other processes keep swapping the cache folder under us.
_INSTALL_ATTEMPTS = 10


@dataclass(frozen=True)
class CacheEntry:
    """Where one utterance lives in the feature array: rows [offset, offset + frames)."""

    utt_id: str
    label: str
    speaker: str
    subset: str
    offset: int
    frames: int


@dataclass(frozen=True)
class SkippedUtterance:
    """An utterance left out of the cache because its audio could not be used."""

    utt_id: str
    path: str
    reason: str
    detail: str


def describe_skipped(skipped: list[SkippedUtterance], limit: int = 10) -> str:
    """The skipped files as ``path (reason: detail)``, separated by semicolons; the first ``limit`` of them."""
    text = "; ".join(f"{s.path} ({s.reason}: {s.detail})" for s in skipped[:limit])
    if len(skipped) > limit:
        text += f"; and {len(skipped) - limit} more (listed in {INDEX_NAME})"
    return text


def manifest_fingerprint(manifest_path: str | os.PathLike, rows: list[ManifestRow]) -> str:
    """Hash of the manifest's bytes and of (absolute path, size, mtime) of each audio file it names.

    Audio paths are resolved (absolute, symlinks followed) before hashing, so the
    fingerprint does not depend on how the manifest's folder was spelled
    (``c9``, ``./c9``, ``/data/c9``) or on the working directory.
    """
    manifest_path = Path(manifest_path)
    digest = hashlib.sha256(manifest_path.read_bytes())
    base = manifest_path.parent
    for row in rows:
        path = row.resolved_path(base).resolve()
        try:
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def _extract_one(job: tuple[int, str, float | None, float | None, dict, int]):
    """Worker: features (frames, n_mels) of one row, or the AudioError that stopped it."""
    index, path, start, end, recipe_dict, min_samples = job
    recipe = FeatureRecipe.from_dict(recipe_dict)
    try:
        wave = load_audio(path, recipe.sample_rate, start=start, end=end, min_samples=min_samples)
        features = _finite_logmel(path, wave, recipe)
    except AudioError as exc:
        return index, None, (exc.reason, exc.detail)
    return index, np.ascontiguousarray(features.T), None


def _finite_logmel(path: str, wave: np.ndarray, recipe: FeatureRecipe) -> np.ndarray:
    """Features of ``wave``; AudioError naming ``path`` when any is NaN or infinite.

    In-range audio can still give non-finite features (digital silence with
    ``cmvn_eps=0`` divides zero by zero); one such utterance would poison
    every training step later, far from the file that caused it.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # the result is checked below
        features = logmel(wave, recipe)
    bad = int(np.size(features) - np.count_nonzero(np.isfinite(features)))
    if bad:
        raise AudioError(path, "non_finite", f"{bad} of {features.size} feature values are NaN or infinite")
    return features


def remove_stale_staging(cache_dir: str | os.PathLike) -> list[Path]:
    """Delete staging and replaced-cache folders under ``cache_dir`` whose build was killed.

    A folder is stale when its owner process is gone or it was not modified
    for an hour (:func:`jemfast._leftovers.is_stale`); live builds of other
    processes are left alone. Returns the folders removed.
    """
    removed = []
    for path in stale_leftovers(cache_dir, _LEFTOVER_PATTERN, folders=True):
        shutil.rmtree(path, ignore_errors=True)  # another build may be removing it at the same time
        logger.info("removed %s, left by a feature cache build that did not finish", path)
        removed.append(path)
    return removed


def _folder_identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, mtime) of a folder, None when absent: tells whether it was replaced meanwhile."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


def _private_sibling(directory: Path, kind: str) -> Path:
    """A fresh hidden name beside ``directory`` that names its owner (see :data:`_LEFTOVER_PATTERN`)."""
    return directory.parent / f".{directory.name}.{kind}-{owner_tag()}.{secrets.token_hex(4)}"


def _move_aside_and_delete(directory: Path) -> None:
    """Remove ``directory`` by renaming it to a private name first, then deleting that.

    The rename is atomic, so two processes never delete the same files at once
    (which fails with FileNotFoundError in one of them), and a process that
    renames its own build into ``directory`` meanwhile is not disturbed.
    """
    aside = _private_sibling(directory, "replaced")
    try:
        os.rename(directory, aside)
    except FileNotFoundError:  # someone else moved it first
        return
    shutil.rmtree(aside, ignore_errors=True)


def _install(staging: Path, directory: Path, usable_existing: Callable[[], FeatureCache | None]):
    """Rename the finished ``staging`` folder to ``directory``.

    When ``directory`` exists, ``usable_existing()`` decides: a cache it returns
    is kept (another process finished the same build first) and returned;
    otherwise the old folder is moved aside and deleted and the rename retried.
    Returns None when ``staging`` was installed.
    """
    for _ in range(_INSTALL_ATTEMPTS):
        try:
            os.rename(staging, directory)  # refuses a non-empty destination: no silent merge
            return None
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        existing = usable_existing()
        if existing is not None:
            return existing
        _move_aside_and_delete(directory)
    raise OSError(f"could not move {staging} to {directory}: other processes kept replacing it")


class FeatureCache:
    """Read access to a built cache. Use :meth:`build` or :meth:`open`, not the constructor.

    ``cache[i]`` is utterance i's features, (n_mels, frames) float32 (a
    read-only view of the memory map); ``cache.entries[i]`` its metadata.
    """

    def __init__(self, directory: Path, recipe: FeatureRecipe, index: dict) -> None:
        self.directory = Path(directory)
        self.recipe = recipe
        self.entries: list[CacheEntry] = [CacheEntry(**e) for e in index["entries"]]
        self.skipped: list[SkippedUtterance] = [SkippedUtterance(**s) for s in index["skipped"]]
        self.manifest_path: str = index["manifest"]
        self.fingerprint: str = index["fingerprint"]
        self.total_frames: int = int(index["total_frames"])
        self._position = {e.utt_id: i for i, e in enumerate(self.entries)}
        self._array: np.memmap | None = None

    # -- construction -------------------------------------------------------------------------

    @staticmethod
    def directory_for(cache_dir: str | os.PathLike, recipe: FeatureRecipe) -> Path:
        """The folder that holds the cache of ``recipe`` under ``cache_dir``."""
        return Path(cache_dir) / recipe.key()

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, recipe: FeatureRecipe = DEFAULT_RECIPE) -> FeatureCache:
        """Open the cache of ``recipe`` under ``cache_dir``.

        Raises FileNotFoundError if no cache was built with this recipe there,
        and ValueError if the stored recipe differs (a corrupt or foreign folder).
        """
        if not isinstance(recipe, FeatureRecipe):
            raise TypeError(f"recipe must be a FeatureRecipe, got {type(recipe).__name__}")
        directory = cls.directory_for(cache_dir, recipe)
        index_path = directory / INDEX_NAME
        if not index_path.is_file():
            raise FileNotFoundError(
                f"no feature cache for recipe {recipe.key()} under {cache_dir} (looked for {index_path}); "
                "build it with FeatureCache.build"
            )
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("format") != INDEX_FORMAT:
            raise ValueError(f"{index_path}: index format {index.get('format')!r}, expected {INDEX_FORMAT}")
        stored = FeatureRecipe.from_dict(index["recipe"])
        if stored != recipe:
            raise ValueError(f"{index_path}: cache was built with {stored}, not {recipe}")
        expected_bytes = int(index["total_frames"]) * recipe.n_mels * 4
        actual_bytes = (directory / FEATURES_NAME).stat().st_size
        if actual_bytes != expected_bytes:
            raise ValueError(f"{directory / FEATURES_NAME}: {actual_bytes} bytes, index expects {expected_bytes}")
        return cls(directory, recipe, index)

    @classmethod
    def build(
        cls,
        manifest_path: str | os.PathLike,
        cache_dir: str | os.PathLike,
        recipe: FeatureRecipe = DEFAULT_RECIPE,
        workers: int | None = None,
        on_error: str = "raise",
        min_samples: int = DEFAULT_MIN_SAMPLES,
        progress: bool = True,
        rebuild: bool = False,
    ) -> FeatureCache:
        """Extract features of every utterance of a manifest into ``cache_dir/<recipe.key()>``.

        ``workers``: processes for extraction (None: all CPU cores, 0 or 1: in
        this process). ``on_error``: ``"raise"`` stops at the first missing,
        unreadable, empty or too-short file, or one whose samples or features
        are NaN, infinite or out of range, with an :class:`AudioError` naming
        it; ``"skip"`` leaves such files out and records each with its reason
        in ``cache.skipped`` (and the index). An existing cache with the same
        manifest fingerprint is reused unless ``rebuild``; with ``on_error="raise"``
        a reused cache must have no skipped utterances. A usable cache of the
        same manifest that a concurrent build installs first is kept, even with
        ``rebuild``. Several manifests may share one ``cache_dir`` only with
        different recipes; give each split its own ``cache_dir``. Staging
        folders of killed builds under ``cache_dir`` are removed first.
        """
        workers = _check_build_args(recipe, on_error, workers)
        manifest_path = Path(manifest_path)
        rows = read_manifest(manifest_path)
        if not rows:
            raise ValueError(f"{manifest_path}: manifest has no utterances")
        fingerprint = manifest_fingerprint(manifest_path, rows)
        directory = cls.directory_for(cache_dir, recipe)
        remove_stale_staging(directory.parent)

        if not rebuild:
            existing = cls._reuse_existing(cache_dir, recipe, fingerprint, on_error)
            if existing is not None:
                return existing
        # With rebuild, the folder there now is the one to replace; a different one that appears
        # during the build was installed by a concurrent build and is kept if usable.
        replaceable = _folder_identity(directory) if rebuild else None

        def usable_existing() -> FeatureCache | None:
            if replaceable is not None and _folder_identity(directory) == replaceable:
                return None
            return cls._usable(cache_dir, recipe, fingerprint, on_error)

        base = manifest_path.parent
        jobs = [
            (i, str(row.resolved_path(base)), row.start, row.end, recipe.to_dict(), min_samples)
            for i, row in enumerate(rows)
        ]
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = _private_sibling(directory, "partial")
        staging.mkdir()  # fails rather than share a folder, should two names ever collide
        try:
            index = _write_staging(staging, manifest_path, rows, jobs, recipe, fingerprint, workers, progress, on_error)
            kept = _install(staging, directory, usable_existing)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        if kept is not None:
            logger.info("kept feature cache %s, built meanwhile by another process", directory)
            return kept
        skipped = index["skipped"]
        if skipped:
            logger.warning(
                "%s: skipped %d of %d utterances (recorded in %s): %s",
                manifest_path,
                len(skipped),
                len(rows),
                directory / INDEX_NAME,
                describe_skipped([SkippedUtterance(**s) for s in skipped]),
            )
        logger.info(
            "built feature cache %s: %d utterances, %d frames", directory, len(index["entries"]), index["total_frames"]
        )
        return cls(directory, recipe, index)

    @classmethod
    def _reuse_existing(
        cls, cache_dir: str | os.PathLike, recipe: FeatureRecipe, fingerprint: str, on_error: str
    ) -> FeatureCache | None:
        """Reuse step of :meth:`build`: the usable cache already there, logged with its skipped files; else None."""
        existing = cls._usable(cache_dir, recipe, fingerprint, on_error, warn=True)
        if existing is None:
            return None
        directory = cls.directory_for(cache_dir, recipe)
        logger.info("reusing feature cache %s (%d utterances)", directory, len(existing))
        if existing.skipped:
            logger.warning(
                "feature cache %s leaves out %d of %d utterances, skipped when it was built: %s",
                directory,
                len(existing.skipped),
                len(existing.skipped) + len(existing),
                describe_skipped(existing.skipped),
            )
        return existing

    @classmethod
    def _usable(
        cls, cache_dir: str | os.PathLike, recipe: FeatureRecipe, fingerprint: str, on_error: str, warn: bool = False
    ) -> FeatureCache | None:
        """The cache under ``cache_dir`` if it opens, matches ``fingerprint`` and suits ``on_error``; else None.

        A strict build (``on_error="raise"``) accepts no cache with skipped utterances.
        ``warn`` logs why a cache that is there cannot be used.
        """
        directory = cls.directory_for(cache_dir, recipe)
        if not (directory / INDEX_NAME).is_file():
            return None
        try:
            existing = cls.open(cache_dir, recipe)
        except (ValueError, OSError, KeyError) as exc:
            if warn:
                logger.warning("rebuilding unusable feature cache %s: %s", directory, exc)
            return None
        if existing.fingerprint != fingerprint or (on_error == "raise" and existing.skipped):
            return None
        return existing

    # -- access -------------------------------------------------------------------------------

    @property
    def array(self) -> np.ndarray:
        """All frames, (total_frames, n_mels) float32, memory-mapped read-only."""
        if self._array is None:
            self._array = np.memmap(
                self.directory / FEATURES_NAME,
                dtype=np.float32,
                mode="r",
                shape=(self.total_frames, self.recipe.n_mels),
            )
        return self._array

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> np.ndarray:
        """Features of utterance ``i``: (n_mels, frames) float32, read-only view."""
        entry = self.entries[i]
        return self.array[entry.offset : entry.offset + entry.frames].T

    def features(self, utt_id: str) -> np.ndarray:
        """Features of the utterance named ``utt_id``, (n_mels, frames) float32."""
        if utt_id not in self._position:
            raise KeyError(f"utterance {utt_id!r} is not in the cache {self.directory}")
        return self[self._position[utt_id]]

    @property
    def utt_ids(self) -> list[str]:
        return [e.utt_id for e in self.entries]

    def subsets(self) -> list[str]:
        """Distinct non-empty subset names, in order of first appearance."""
        return list(dict.fromkeys(e.subset for e in self.entries if e.subset))

    def __getstate__(self) -> dict:
        # DataLoader workers receive the cache by pickling; each reopens the memory map.
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"FeatureCache({str(self.directory)!r}, utterances={len(self)}, frames={self.total_frames}, "
            f"skipped={len(self.skipped)})"
        )


def _check_build_args(recipe: FeatureRecipe, on_error: str, workers: int | None) -> int:
    """Argument check of :meth:`FeatureCache.build`; returns ``workers`` with None resolved to the CPU count."""
    if not isinstance(recipe, FeatureRecipe):
        raise TypeError(f"recipe must be a FeatureRecipe, got {type(recipe).__name__}")
    check_choice("on_error", on_error, ON_ERROR_CHOICES)
    if workers is None:
        return os.cpu_count() or 1
    return check_int("workers", workers, minimum=0)


def _write_staging(
    staging: Path,
    manifest_path: Path,
    rows: list[ManifestRow],
    jobs: list[tuple],
    recipe: FeatureRecipe,
    fingerprint: str,
    workers: int,
    progress: bool,
    on_error: str,
) -> dict:
    """Staging step of a build: write the features and ``index.json`` into ``staging``; returns the index.

    Raises ValueError if every utterance was skipped.
    """
    entries, skipped, offset = _write_features(
        staging / FEATURES_NAME, rows, jobs, workers, progress, manifest_path.name, on_error
    )
    if not entries:
        raise ValueError(f"{manifest_path}: all {len(rows)} utterances were skipped; first: {skipped[0]}")
    index = dict(
        format=INDEX_FORMAT,
        key=recipe.key(),
        recipe=recipe.to_dict(),
        manifest=str(manifest_path.resolve()),
        fingerprint=fingerprint,
        total_frames=offset,
        entries=entries,
        skipped=skipped,
    )
    (staging / INDEX_NAME).write_text(json.dumps(index, indent=1), encoding="utf-8")
    return index


def _write_features(
    path: Path,
    rows: list[ManifestRow],
    jobs: list[tuple],
    workers: int,
    progress: bool,
    name: str,
    on_error: str,
) -> tuple[list[dict], list[dict], int]:
    """Extraction step of a build: write every usable utterance's (frames, n_mels) float32 rows to ``path``.

    Returns the index entries, the skipped utterances and the total number of frames
    written; with ``on_error="raise"`` the first failing file raises :class:`AudioError`.
    """
    entries: list[dict] = []
    skipped: list[dict] = []
    offset = 0
    with open(path, "wb") as out:
        for index, features, error in _run_jobs(jobs, workers, progress, name):
            row = rows[index]
            if error is not None:
                reason, detail = error
                if on_error == "raise":
                    raise AudioError(jobs[index][1], reason, f"{detail} (utterance {row.utt_id!r})")
                skipped.append(dict(utt_id=row.utt_id, path=jobs[index][1], reason=reason, detail=detail))
                continue
            out.write(features.astype(np.float32, copy=False).tobytes())
            entries.append(
                dict(
                    utt_id=row.utt_id,
                    label=row.label,
                    speaker=row.speaker,
                    subset=row.subset,
                    offset=offset,
                    frames=int(features.shape[0]),
                )
            )
            offset += int(features.shape[0])
    return entries, skipped, offset


def _run_jobs(jobs: list[tuple], workers: int, progress: bool, name: str):
    """Yield the results of :func:`_extract_one` in job order, with a progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=f"features {name}", unit="utt", disable=not progress)
    try:
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                yield _extract_one(job)
                bar.update(1)
            return
        # fork where available, as torch's DataLoader does: spawn re-imports the caller's __main__,
        # which fails for interactive sessions and stdin scripts. Workers use numpy/librosa only,
        # never torch, so the parent's OpenMP state is not an issue.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with context.Pool(processes=min(workers, len(jobs))) as pool:
            chunksize = max(1, len(jobs) // (workers * 8))
            for result in pool.imap(_extract_one, jobs, chunksize=chunksize):
                yield result
                bar.update(1)
    finally:
        bar.close()
