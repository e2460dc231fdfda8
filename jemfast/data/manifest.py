"""Manifests: one CSV per split listing utterances, and labels.txt fixing the class order.

A manifest is a CSV file with the header

    utt_id,path,label,speaker,subset,duration[,start,end]

* ``utt_id``: unique id of the utterance within the manifest.
* ``path``: audio file; a relative path is resolved against the manifest's folder.
* ``label``: class name, one of the lines of labels.txt.
* ``speaker``: speaker id (used for speaker-independent splits).
* ``subset``: evaluation subset, e.g. ``1s``, ``3s``, ``full``; empty when the split has none.
* ``duration``: seconds of audio the row stands for.
* ``start``, ``end`` (optional, seconds): a segment of the file; empty means the whole file.

labels.txt holds one class name per line; line i is class index i.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# The manifests of a corpus folder, one CSV per split: <split>.csv.
SPLITS = ("train", "dev", "test")
REQUIRED_COLUMNS = ("utt_id", "path", "label", "speaker", "subset", "duration")
OPTIONAL_COLUMNS = ("start", "end")
_QUOTE_HINT = 'is a double quote (") opened and never closed?'


@dataclass(frozen=True)
class ManifestRow:
    """One utterance of a manifest. ``duration``, ``start`` and ``end`` are in seconds."""

    utt_id: str
    path: str
    label: str
    speaker: str = ""
    subset: str = ""
    duration: float = 0.0
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if not self.utt_id:
            raise ValueError(f"utt_id must be a non-empty string, got {self.utt_id!r}")
        if not self.path:
            raise ValueError(f"utterance {self.utt_id!r}: path must be non-empty")
        if self.duration < 0:
            raise ValueError(f"utterance {self.utt_id!r}: duration must be >= 0 s, got {self.duration}")
        if self.start is not None and self.start < 0:
            raise ValueError(f"utterance {self.utt_id!r}: start must be >= 0 s, got {self.start}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"utterance {self.utt_id!r}: end ({self.end}) must be after start ({self.start})")

    def resolved_path(self, base_dir: str | os.PathLike) -> Path:
        """The audio path, relative paths taken against ``base_dir`` (the manifest's folder)."""
        path = Path(self.path)
        return path if path.is_absolute() else Path(base_dir) / path


def _parse_optional_float(text: str, column: str, where: str) -> float | None:
    text = (text or "").strip()
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: column {column!r} must be a number of seconds, got {text!r}") from None


def _swallowed_hint(record: dict, first_line: int, last_line: int) -> str:
    """A hint about an unclosed quote when a short row spans lines or a field holds commas or line breaks."""
    if last_line > first_line:
        return f"; the row runs on to line {last_line}: {_QUOTE_HINT}"
    if any(isinstance(value, str) and ("," in value or "\n" in value) for value in record.values()):
        return f"; a field holds commas or line breaks: {_QUOTE_HINT}"
    return ""


def _records(path: Path, reader: csv.DictReader) -> Iterator[tuple[int, dict]]:
    """(first line, record) of each data row; ValueError naming ``path`` and the line on a malformed row.

    A row that lacks a required column is refused, not padded with None: most
    often an unclosed quote has swallowed the rest of the file into one field.
    Trailing optional columns (start, end) may be left out.
    """
    header = reader.fieldnames or []
    first_line = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValueError(f"{path}:{first_line}: malformed CSV row ({exc}); {_QUOTE_HINT}") from None
        absent = [column for column in REQUIRED_COLUMNS if record.get(column) is None]
        if absent:
            fields = sum(value is not None for key, value in record.items() if key is not None)
            raise ValueError(
                f"{path}:{first_line}: row has {fields} fields, lacking the columns {absent}; "
                f"expected {len(header)} fields {header}{_swallowed_hint(record, first_line, reader.line_num)}"
            )
        yield first_line, record
        first_line = reader.line_num + 1


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read a manifest CSV. Raises ValueError naming the file and line on a malformed row or duplicate id."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
        except csv.Error as exc:
            raise ValueError(f"{path}:1: malformed CSV header ({exc}); {_QUOTE_HINT}") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: manifest lacks columns {missing}; header is {header}")
        rows: list[ManifestRow] = []
        seen: set[str] = set()
        for line, record in _records(path, reader):
            where = f"{path}:{line}"
            duration = _parse_optional_float(record["duration"], "duration", where)
            try:
                row = ManifestRow(
                    utt_id=record["utt_id"].strip(),
                    path=record["path"].strip(),
                    label=record["label"].strip(),
                    speaker=(record["speaker"] or "").strip(),
                    subset=(record["subset"] or "").strip(),
                    duration=0.0 if duration is None else duration,
                    start=_parse_optional_float(record.get("start", ""), "start", where),
                    end=_parse_optional_float(record.get("end", ""), "end", where),
                )
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if row.utt_id in seen:
                raise ValueError(f"{where}: duplicate utt_id {row.utt_id!r}")
            seen.add(row.utt_id)
            rows.append(row)
    return rows


def _format_float(value: float | None) -> str:
    # Microsecond resolution: exact enough for segment bounds, stable across runs.
    if value is None:
        return ""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def write_manifest(path: str | os.PathLike, rows: Iterable[ManifestRow]) -> None:
    """Write ``rows`` as a manifest CSV; start/end columns are written only when a row uses them."""
    rows = list(rows)
    for row in rows:
        if not isinstance(row, ManifestRow):
            raise TypeError(f"write_manifest expects ManifestRow items, got {type(row).__name__}")
    ids = [r.utt_id for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"write_manifest: duplicate utt_id {dup!r}")
    with_segments = any(r.start is not None or r.end is not None for r in rows)
    columns = list(REQUIRED_COLUMNS) + (list(OPTIONAL_COLUMNS) if with_segments else [])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            values = [r.utt_id, r.path, r.label, r.speaker, r.subset, _format_float(r.duration)]
            if with_segments:
                values += [_format_float(r.start), _format_float(r.end)]
            writer.writerow(values)


def read_labels(path: str | os.PathLike) -> list[str]:
    """Read labels.txt: one class name per line, in class-index order; blank lines are ignored."""
    with open(path, encoding="utf-8") as handle:
        labels = [line.strip() for line in handle if line.strip()]
    if not labels:
        raise ValueError(f"{path}: labels file is empty")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: labels file has duplicate names: {labels}")
    return labels


def write_labels(path: str | os.PathLike, labels: Iterable[str]) -> None:
    """Write labels.txt, one class name per line, in the given order."""
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError("write_labels: expected at least one label")
    bad = [label for label in labels if not label.strip() or "\n" in label or label != label.strip()]
    if bad:
        raise ValueError(f"write_labels: labels must be non-empty without surrounding spaces or newlines, got {bad}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"write_labels: duplicate labels in {labels}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(label + "\n" for label in labels), encoding="utf-8")


def check_labels(rows: Iterable[ManifestRow], labels: list[str], source: str = "manifest") -> None:
    """Raise ValueError if a row's label is not in ``labels``."""
    known = set(labels)
    for row in rows:
        if row.label not in known:
            raise ValueError(f"{source}: utterance {row.utt_id!r} has label {row.label!r}, expected one of {labels}")
