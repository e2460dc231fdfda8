"""Importers that turn the paper's corpora into manifests (see :mod:`jemfast.data.manifest`).

* Kaldi data directories (``wav.scp``, ``utt2lang`` or ``utt2label``,
  ``utt2spk``, optional ``segments``), and AP17-OLR's train, dev and test
  directories with the 1 s, 3 s and full-length subsets.
* The CASIA emotion tree ``<root>/<speaker>/<emotion>/*.wav``.
* VoxCeleb-Enrichment age lists with a folder of wav files.

Every importer reads file headers (not samples) to fill the duration column;
a missing or unreadable file raises :class:`~jemfast.data.audio.AudioError`
naming it, or with ``on_error="skip"`` is left out and counted in the
returned :class:`ImportReport`.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import shlex
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._checks import check_choice
from .audio import AudioError, audio_info
from .manifest import ManifestRow, write_labels, write_manifest

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")
# What an importer (and FeatureCache.build) does with an unreadable file.
ON_ERROR_CHOICES = ("raise", "skip")

# Age-group boundaries (years): groups are [0, 30), [30, 40), [40, 50), [50, inf).
# They split VoxCeleb-Enrichment's speakers, mostly aged 20 to 70, into four
# groups of comparable size; the paper does not state its boundaries.
DEFAULT_AGE_BOUNDARIES: tuple[int, ...] = (30, 40, 50)

CASIA_EMOTIONS = ("angry", "fear", "happy", "neutral", "sad", "surprise")
# CASIA names the neutral folder "normal".
CASIA_FOLDER_TO_EMOTION = {"normal": "neutral", **{e: e for e in CASIA_EMOTIONS}}


@dataclass
class ImportReport:
    """What an import wrote and what it left out."""

    manifests: dict[str, Path] = field(default_factory=dict)
    labels: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _duration(path: Path, on_error: str, report: ImportReport) -> float | None:
    try:
        info = audio_info(path)
        if info.frames == 0:
            raise AudioError(path, "empty", "the file holds no samples")
    except AudioError as exc:
        if on_error == "raise":
            raise
        report.skipped.append((str(path), exc.reason))
        logger.warning("skipping %s", exc)
        return None
    return info.duration


def _write_split(out_dir: Path, split: str, rows: list[ManifestRow], report: ImportReport) -> None:
    path = out_dir / f"{split}.csv"
    write_manifest(path, rows)
    report.manifests[split] = path
    report.counts[split] = len(rows)


# --- Kaldi ----------------------------------------------------------------------------------


def _read_kaldi_map(path: Path) -> dict[str, str]:
    """Read a Kaldi ``key value...`` file into a dict (value is the rest of the line)."""
    mapping: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{line_no}: expected '<key> <value>', got {line!r}")
            if parts[0] in mapping:
                raise ValueError(f"{path}:{line_no}: duplicate key {parts[0]!r}")
            mapping[parts[0]] = parts[1].strip()
    return mapping


def _wav_scp_path(value: str, scp: Path, key: str) -> Path:
    if value.endswith("|"):
        raise ValueError(
            f"{scp}: entry {key!r} is a command pipe ({value!r}); only plain file paths are supported - "
            "convert the audio to wav or flac files first"
        )
    tokens = shlex.split(value)
    if len(tokens) != 1:
        raise ValueError(f"{scp}: entry {key!r} must be one file path, got {value!r}")
    path = Path(tokens[0])
    return path if path.is_absolute() else scp.parent / path


def read_kaldi_dir(
    data_dir: str | os.PathLike,
    subset: str = "",
    label_file: str | None = None,
    on_error: str = "raise",
    report: ImportReport | None = None,
) -> list[ManifestRow]:
    """Rows of a Kaldi data directory.

    Reads ``wav.scp`` (plain paths; relative ones against the directory),
    labels from ``label_file`` (default: ``utt2lang`` if present, else
    ``utt2label``), speakers from ``utt2spk`` (optional; the utterance id
    otherwise) and, if present, ``segments`` (``utt rec start end``, seconds).
    Every row gets ``subset``. Paths in the rows are absolute.
    """
    check_choice("on_error", on_error, ON_ERROR_CHOICES)
    data_dir = Path(data_dir)
    report = report if report is not None else ImportReport()
    scp = data_dir / "wav.scp"
    if not scp.is_file():
        raise FileNotFoundError(f"{data_dir}: not a Kaldi data directory (no wav.scp)")
    if label_file is None:
        label_file = next((n for n in ("utt2lang", "utt2label") if (data_dir / n).is_file()), None)
        if label_file is None:
            raise FileNotFoundError(f"{data_dir}: no utt2lang or utt2label file")
    labels = _read_kaldi_map(data_dir / label_file)
    speakers = _read_kaldi_map(data_dir / "utt2spk") if (data_dir / "utt2spk").is_file() else {}
    recordings = {key: _wav_scp_path(value, scp, key) for key, value in _read_kaldi_map(scp).items()}

    if (data_dir / "segments").is_file():
        segments = {}
        for utt, value in _read_kaldi_map(data_dir / "segments").items():
            parts = value.split()
            if len(parts) != 3:
                raise ValueError(f"{data_dir / 'segments'}: entry {utt!r} must be 'rec start end', got {value!r}")
            if parts[0] not in recordings:
                raise ValueError(f"{data_dir / 'segments'}: entry {utt!r} names recording {parts[0]!r}, not in wav.scp")
            segments[utt] = (parts[0], float(parts[1]), float(parts[2]))
    else:
        segments = {utt: (utt, None, None) for utt in recordings}

    missing_labels = sorted(set(segments) - set(labels))
    if missing_labels:
        raise ValueError(f"{data_dir / label_file}: no label for utterances {missing_labels[:5]} ...")
    rows = []
    durations: dict[str, float | None] = {}
    for utt in sorted(segments):
        rec, start, end = segments[utt]
        if rec not in durations:
            durations[rec] = _duration(recordings[rec], on_error, report)
        total = durations[rec]
        if total is None:
            continue
        if start is not None and end is not None and (end > total + 0.01 or end <= start):
            detail = f"segment {utt!r} [{start}, {end}] s of a {total:.3f} s file"
            error = AudioError(recordings[rec], "bad_segment", detail)
            if on_error == "raise":
                raise error
            report.skipped.append((str(recordings[rec]), error.reason))
            continue
        duration = total if start is None else end - start
        rows.append(
            ManifestRow(
                utt_id=utt,
                path=str(recordings[rec].resolve()),
                label=labels[utt],
                speaker=speakers.get(utt, utt),
                subset=subset,
                duration=duration,
                start=start,
                end=end,
            )
        )
    return rows


def import_kaldi_dir(
    data_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    subset: str = "",
    label_file: str | None = None,
    on_error: str = "raise",
) -> ImportReport:
    """Write the manifest of one Kaldi data directory (see :func:`read_kaldi_dir`)."""
    report = ImportReport()
    rows = read_kaldi_dir(data_dir, subset, label_file, on_error, report)
    manifest_path = Path(manifest_path)
    write_manifest(manifest_path, rows)
    report.manifests[manifest_path.stem] = manifest_path
    report.counts[manifest_path.stem] = len(rows)
    return report


def _subset_of(name: str) -> str:
    lowered = name.lower()
    for tag in ("1s", "3s"):
        if lowered.endswith(tag):
            return tag
    if lowered.endswith(("full", "all")):
        return "full"
    return ""


def import_ap17_olr(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    labels: Sequence[str] | None = None,
    on_error: str = "raise",
) -> ImportReport:
    """Write train/dev/test manifests and labels.txt for AP17-OLR (10 languages).

    ``root`` holds Kaldi data directories: ``train``; ``dev`` or ``dev_1s``,
    ``dev_3s``, ``dev_all``/``dev_full``; ``test`` or ``test_1s``,
    ``test_3s``, ``test_all``/``test_full``. The suffix gives each row's
    subset (``1s``, ``3s``, ``full``); utterance ids of different subsets are
    prefixed with the subset when they would collide. ``labels`` fixes the
    class order (default: sorted language codes of the training set).
    """
    check_choice("on_error", on_error, ON_ERROR_CHOICES)
    root, out_dir = Path(root), Path(out_dir)
    report = ImportReport()
    found: dict[str, list[Path]] = defaultdict(list)
    for child in sorted(p for p in root.iterdir() if p.is_dir() and (p / "wav.scp").is_file()):
        name = child.name.lower()
        for split in ("train", "dev", "test"):
            if name == split or name.startswith(split + "_") or name.startswith(split + "-"):
                found[split].append(child)
    if "train" not in found or "test" not in found:
        raise FileNotFoundError(
            f"{root}: expected Kaldi directories train/ and test*/ (found {sorted(p.name for p in root.iterdir())})"
        )
    rows_by_split: dict[str, list[ManifestRow]] = {}
    for split, dirs in found.items():
        rows: list[ManifestRow] = []
        seen: set[str] = set()
        for data_dir in dirs:
            subset = _subset_of(data_dir.name)
            for row in read_kaldi_dir(data_dir, subset, None, on_error, report):
                if row.utt_id in seen:
                    row = ManifestRow(**{**row.__dict__, "utt_id": f"{subset or data_dir.name}-{row.utt_id}"})
                seen.add(row.utt_id)
                rows.append(row)
        rows_by_split[split] = rows
    classes = list(labels) if labels is not None else sorted({r.label for r in rows_by_split["train"]})
    known = set(classes)
    for split, rows in rows_by_split.items():
        unknown = sorted({r.label for r in rows} - known)
        if unknown:
            raise ValueError(f"{root}: split {split!r} has languages {unknown} not in the class list {classes}")
        _write_split(out_dir, split, rows, report)
    report.labels = out_dir / "labels.txt"
    write_labels(report.labels, classes)
    return report


# --- CASIA ----------------------------------------------------------------------------------


def import_casia(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    speaker_independent: bool = False,
    test_speakers: Sequence[str] | None = None,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_error: str = "raise",
) -> ImportReport:
    """Write train/dev/test manifests and labels.txt for CASIA (6 emotions).

    ``root/<speaker>/<emotion>/*.wav``; the ``normal`` folder becomes
    ``neutral``; other folders are rejected. Splits:

    * default (speaker-dependent): within each (speaker, emotion) group the
      files are shuffled with ``seed`` and ``test_fraction`` / ``dev_fraction``
      of them go to test / dev.
    * ``speaker_independent=True``: the speakers in ``test_speakers``
      (default: the last speaker in sorted order) form the test set; dev is
      ``dev_fraction`` of each remaining group.
    """
    check_choice("on_error", on_error, ON_ERROR_CHOICES)
    if not (0 <= dev_fraction < 1 and 0 <= test_fraction < 1 and dev_fraction + test_fraction < 1):
        raise ValueError(
            f"need 0 <= dev_fraction, test_fraction and their sum < 1, got {dev_fraction}, {test_fraction}"
        )
    root, out_dir = Path(root), Path(out_dir)
    speakers = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not speakers:
        raise FileNotFoundError(f"{root}: no speaker folders")
    if speaker_independent:
        held_out = list(test_speakers) if test_speakers else [speakers[-1]]
        unknown = sorted(set(held_out) - set(speakers))
        if unknown:
            raise ValueError(f"test_speakers {unknown} are not speaker folders of {root}; found {speakers}")
        if set(held_out) == set(speakers):
            raise ValueError(f"test_speakers {held_out} leave no speaker for training")
    elif test_speakers:
        raise ValueError("test_speakers is only used with speaker_independent=True")
    report = ImportReport()
    rng = random.Random(seed)
    splits: dict[str, list[ManifestRow]] = {"train": [], "dev": [], "test": []}
    for speaker in speakers:
        for folder in sorted(p for p in (root / speaker).iterdir() if p.is_dir()):
            emotion = CASIA_FOLDER_TO_EMOTION.get(folder.name.lower())
            if emotion is None:
                raise ValueError(
                    f"{folder}: unknown emotion folder {folder.name!r}; "
                    f"expected one of {sorted(CASIA_FOLDER_TO_EMOTION)}"
                )
            rows = []
            for wav in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
                duration = _duration(wav, on_error, report)
                if duration is None:
                    continue
                rows.append(
                    ManifestRow(
                        utt_id=f"{speaker}_{emotion}_{wav.stem}",
                        path=str(wav.resolve()),
                        label=emotion,
                        speaker=speaker,
                        duration=duration,
                    )
                )
            rng.shuffle(rows)
            if speaker_independent and speaker in held_out:
                splits["test"].extend(rows)
                continue
            n_test = 0 if speaker_independent else int(round(len(rows) * test_fraction))
            n_dev = int(round(len(rows) * dev_fraction))
            splits["test"].extend(rows[:n_test])
            splits["dev"].extend(rows[n_test : n_test + n_dev])
            splits["train"].extend(rows[n_test + n_dev :])
    for split, rows in splits.items():
        _write_split(out_dir, split, sorted(rows, key=lambda r: r.utt_id), report)
    report.labels = out_dir / "labels.txt"
    write_labels(report.labels, CASIA_EMOTIONS)
    return report


# --- VoxCeleb-Enrichment age ----------------------------------------------------------------


def age_group_names(boundaries: Sequence[int] = DEFAULT_AGE_BOUNDARIES) -> list[str]:
    """Class names for age groups cut at ``boundaries`` (years), e.g. under30, 30to39, 40to49, 50plus."""
    boundaries = [int(b) for b in boundaries]
    if not boundaries or any(b <= 0 for b in boundaries) or boundaries != sorted(set(boundaries)):
        raise ValueError(f"age boundaries must be positive and strictly increasing, got {boundaries}")
    names = [f"under{boundaries[0]}"]
    names += [f"{lo}to{hi - 1}" for lo, hi in zip(boundaries[:-1], boundaries[1:], strict=True)]
    names.append(f"{boundaries[-1]}plus")
    return names


def age_group(age: float, boundaries: Sequence[int] = DEFAULT_AGE_BOUNDARIES) -> str:
    """Name of the age group that ``age`` (years) falls in."""
    names = age_group_names(boundaries)
    for name, bound in zip(names[:-1], boundaries, strict=True):  # the last group has no upper bound
        if age < bound:
            return name
    return names[-1]


AGE_LIST_COLUMNS = ("speaker_age", "birth_year", "Name", "VoxCeleb_ID", "video_id")


def read_age_list(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a VoxCeleb-Enrichment age list (CSV or tab-separated, with a header)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    records = list(csv.DictReader(text.splitlines(), dialect=dialect))
    header = list(records[0].keys()) if records else []
    missing = [c for c in AGE_LIST_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: age list lacks columns {missing}; header is {header}")
    return records


def _videos_audio(wav_root: Path, speaker: str, video: str) -> list[Path]:
    folder = wav_root / speaker / video
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def _read_age_lists(
    age_lists: dict[str, str | os.PathLike] | str | os.PathLike,
) -> dict[str, list[dict[str, str]]]:
    """Read step of :func:`import_voxceleb_age`: the given lists by split, or one list under ``"all"``."""
    if isinstance(age_lists, (str, os.PathLike)):
        return {"all": read_age_list(age_lists)}
    unknown = set(age_lists) - {"train", "dev", "test"}
    if unknown or "train" not in age_lists or "test" not in age_lists:
        raise ValueError(f"age_lists must have keys train, test and optionally dev; got {sorted(age_lists)}")
    return {split: read_age_list(path) for split, path in age_lists.items()}


def _split_speakers(
    records: list[dict[str, str]], fractions: dict[str, float], rng: random.Random
) -> dict[str, list[dict[str, str]]]:
    """Speaker split: shuffle speakers with ``rng``, give each split its fraction of them, the rest to train."""
    speakers = sorted({r["VoxCeleb_ID"] for r in records})
    rng.shuffle(speakers)
    assignment, start = {}, 0
    for split, fraction in fractions.items():
        count = int(round(len(speakers) * fraction))
        for spk in speakers[start : start + count]:
            assignment[spk] = split
        start += count
    splits = ("train", *fractions)
    return {s: [r for r in records if assignment.get(r["VoxCeleb_ID"], "train") == s] for s in splits}


def _age_rows(
    records: list[dict[str, str]], wav_root: Path, boundaries: Sequence[int], on_error: str, report: ImportReport
) -> list[ManifestRow]:
    """Manifest rows of one split: every audio file of each listed video, labelled with its age group."""
    rows = []
    for record in records:
        try:
            age = float(record["speaker_age"])
        except ValueError:
            raise ValueError(
                f"speaker_age must be a number of years, got {record['speaker_age']!r} in {record}"
            ) from None
        speaker, video = record["VoxCeleb_ID"].strip(), record["video_id"].strip()
        files = _videos_audio(wav_root, speaker, video)
        if not files:
            error = AudioError(wav_root / speaker / video, "missing", "no wav or flac files for this listed video")
            if on_error == "raise":
                raise error
            report.skipped.append((error.path, error.reason))
            continue
        for wav in files:
            duration = _duration(wav, on_error, report)
            if duration is None:
                continue
            rows.append(
                ManifestRow(
                    utt_id=f"{speaker}_{video}_{wav.stem}",
                    path=str(wav.resolve()),
                    label=age_group(age, boundaries),
                    speaker=speaker,
                    duration=duration,
                )
            )
    return rows


def import_voxceleb_age(
    age_lists: dict[str, str | os.PathLike] | str | os.PathLike,
    wav_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    boundaries: Sequence[int] = DEFAULT_AGE_BOUNDARIES,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_error: str = "raise",
) -> ImportReport:
    """Write train/dev/test manifests and labels.txt for VoxCeleb-Enrichment age groups.

    ``age_lists``: either ``{"train": csv, "test": csv[, "dev": csv]}`` (the
    published splits) or one list, which is split by speaker (``VoxCeleb_ID``)
    with ``seed`` into test, dev and train fractions; a given dict without
    ``dev`` takes ``dev_fraction`` of the training speakers. Each list row
    (columns speaker_age, birth_year, Name, VoxCeleb_ID, video_id) labels
    every audio file in ``wav_root/<VoxCeleb_ID>/<video_id>/`` with the age
    group of ``speaker_age`` (years at recording) under ``boundaries``
    (default :data:`DEFAULT_AGE_BOUNDARIES`). A listed video with no audio
    raises, or is skipped and counted with ``on_error="skip"``.
    """
    check_choice("on_error", on_error, ON_ERROR_CHOICES)
    names = age_group_names(boundaries)
    wav_root, out_dir = Path(wav_root), Path(out_dir)
    if not wav_root.is_dir():
        raise FileNotFoundError(f"wav_root {wav_root} is not a folder")
    lists = _read_age_lists(age_lists)

    rng = random.Random(seed)
    if "all" in lists:
        lists = _split_speakers(lists["all"], {"test": test_fraction, "dev": dev_fraction}, rng)
    elif "dev" not in lists:
        parts = _split_speakers(lists["train"], {"dev": dev_fraction}, rng)
        lists = {"train": parts["train"], "dev": parts["dev"], "test": lists["test"]}

    report = ImportReport()
    for split in ("train", "dev", "test"):
        rows = _age_rows(lists.get(split, []), wav_root, boundaries, on_error, report)
        _write_split(out_dir, split, rows, report)
    report.labels = out_dir / "labels.txt"
    write_labels(report.labels, names)
    return report
