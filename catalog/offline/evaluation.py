"""Measuring search quality on a labelled folder of pictures.

Each subfolder of the folder is a class: pictures of the same thing. Every picture is
embedded once per configuration, then used as a query against all the other pictures
(leave-one-out), and recall@k and mAP@10 say how often search shows the right things.

Nothing here touches the catalog or the live vector store: files are found as
`import_images` finds them, decoded as catalog uploads are (`decode_upload`), embedded
with each configuration's encoder and searched in an exact `LocalVectorStore` in a
temporary directory, removed afterwards. A class of one picture has nothing to find, so
its picture is never a query; it stays in the index as a distractor, as an unrelated
catalog image would.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from catalog.sources import IMAGE_SUFFIXES, ImageSource, find_image_sources
from search.decoding import decode_upload
from search.embedding import (
    DIMENSION,
    EmbeddingOptions,
    EmbeddingWeightsUnavailable,
    get_encoder,
    model_id_for,
)
from search.imaging import ImageRejected
from search.vectorstores import VectorRecord
from search.vectorstores.local import LocalVectorStore

RECALL_AT = (1, 5, 10)
MAP_AT = 10
METRICS = ("recall@1", "recall@5", "recall@10", "map@10")
# Settings --compare may change: the ones that change the vectors, not only their speed.
COMPARABLE = {"weights": str, "seed": int, "engine": str, "precision": str}
_CHUNK = 32  # pictures read, decoded and embedded at a time: memory stays flat


class EvaluationRefused(ValueError):
    """The folder or the configuration cannot be evaluated; the message says what to do."""


@dataclass(frozen=True)
class Scores:
    queries: int
    values: dict[str, float]  # keyed by METRICS, each a mean over the queries


@dataclass(frozen=True)
class ClassScores:
    label: str
    pictures: int
    scores: Scores | None  # None for a class of one picture: a distractor, never a query


@dataclass(frozen=True)
class ConfigurationScores:
    options: EmbeddingOptions
    overall: Scores
    classes: list[ClassScores]

    @property
    def name(self) -> str:
        return f"{model_id_for(self.options)} ({self.options.engine})"


@dataclass(frozen=True)
class Evaluation:
    folder: Path
    pictures: int  # readable pictures in classes, each embedded once per configuration
    skipped: dict[str, str]  # unreadable file -> why
    unlabelled: int  # picture (or zip) files directly in the folder, in no class: ignored
    runs: list[ConfigurationScores]

    def as_dict(self) -> dict[str, Any]:
        """The numbers the command prints, as JSON-ready data; with two runs, also B - A."""
        data: dict[str, Any] = {
            "folder": str(self.folder),
            "pictures": self.pictures,
            "classes": len(self.runs[0].classes),
            "skipped": [{"path": path, "reason": why} for path, why in self.skipped.items()],
            "unlabelled": self.unlabelled,
            "configurations": [_run_as_dict(run) for run in self.runs],
        }
        if len(self.runs) == 2:
            data["difference"] = _difference_as_dict(*self.runs)
        return data


Progress = Callable[[int], None]


def evaluate_folder(
    folder: str | Path,
    *,
    configurations: Sequence[EmbeddingOptions],
    limit_per_class: int | None = None,
    on_start: Progress | None = None,
    on_progress: Progress | None = None,
) -> Evaluation:
    """Leave-one-out search quality of each configuration on the labelled `folder`.

    Every file is read and decoded once per model input size; unreadable files are skipped
    and listed. `on_start(total)` and `on_progress(done)` follow the files read.
    """
    folder = Path(folder)
    classes, unlabelled = _labelled_sources(folder)
    _check_classes({label: len(sources[:limit_per_class]) for label, sources in classes.items()})
    try:
        encoders = [get_encoder(options) for options in configurations]
    except EmbeddingWeightsUnavailable as exc:
        raise EvaluationRefused(str(exc)) from exc

    if on_start:
        on_start(sum(len(sources[:limit_per_class]) for sources in classes.values()))
    labels: list[str] = []
    vectors: list[list[np.ndarray]] = [[] for _ in encoders]
    skipped: dict[str, str] = {}

    def embed(pictures: list[tuple[str, dict[int, Image.Image]]]) -> None:
        labels.extend(label for label, _ in pictures)
        for index, (encoder, options) in enumerate(zip(encoders, configurations, strict=True)):
            images = [by_size[options.resize_size] for _, by_size in pictures]
            vectors[index].append(encoder.embed_batch(images))

    pending = []
    readable = _readable(classes, limit_per_class, configurations, folder, skipped, on_progress)
    for picture in readable:
        pending.append(picture)
        if len(pending) == _CHUNK:
            embed(pending)
            pending = []
    embed(pending)

    _check_classes(Counter(labels))
    runs = [
        _scores(options, np.concatenate(rows), labels)
        for options, rows in zip(configurations, vectors, strict=True)
    ]
    return Evaluation(
        folder=folder, pictures=len(labels), skipped=skipped, unlabelled=unlabelled, runs=runs
    )


def options_with(base: EmbeddingOptions, assignments: Sequence[str]) -> EmbeddingOptions:
    """`base` with `KEY=VALUE` settings changed (EMBEDDING_WEIGHTS=IMAGENET1K_V2, seed=1...).

    Asking for int8 without naming an engine picks ONNX, the only engine that runs int8.
    """
    changes: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        field = key.strip().lower().removeprefix("embedding_")
        if not sep or field not in COMPARABLE:
            names = ", ".join(f"EMBEDDING_{name.upper()}" for name in COMPARABLE)
            raise EvaluationRefused(
                f"--compare takes KEY=VALUE with KEY one of {names}; got {assignment!r} "
                "(put the folder before --compare)."
            )
        try:
            changes[field] = COMPARABLE[field](value.strip())
        except ValueError:
            raise EvaluationRefused(f"{key} must be a whole number, not {value!r}.") from None
    if changes.get("precision") == "int8" and "engine" not in changes:
        changes["engine"] = "onnx"
    try:
        options = dataclasses.replace(base, **changes)
    except EmbeddingWeightsUnavailable as exc:
        raise EvaluationRefused(str(exc)) from exc
    if options == base:
        raise EvaluationRefused(
            f"--compare {' '.join(assignments)} is the configuration already set; "
            "name a setting that differs."
        )
    return options


# --- Finding and reading the pictures -----------------------------------------------------


def _labelled_sources(folder: Path) -> tuple[dict[str, list[ImageSource]], int]:
    """Each class's picture sources (a subfolder's pictures, recursively, zips included),
    and how many pictures lie directly in `folder`, in no class."""
    if not folder.is_dir():
        raise EvaluationRefused(
            f"{folder} is not a folder; give a folder with one subfolder of pictures per class."
        )
    classes: dict[str, list[ImageSource]] = {}
    unlabelled = 0
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_dir():
            sources = find_image_sources([entry])
            if sources:
                classes[entry.name] = sources
        elif entry.suffix.lower() in (*IMAGE_SUFFIXES, ".zip"):
            unlabelled += 1
    return classes, unlabelled


def _check_classes(sizes: dict[str, int]) -> None:
    if len(sizes) < 2:
        raise EvaluationRefused(
            f"Found {len(sizes)} class(es) of readable pictures; evaluating needs at least 2 "
            "subfolders, each holding pictures of one thing."
        )
    if max(sizes.values()) < 2:
        raise EvaluationRefused(
            "Every class holds a single picture, so no picture has another to find; put at "
            "least 2 pictures of the same thing in some subfolders."
        )


def _readable(
    classes: dict[str, list[ImageSource]],
    limit_per_class: int | None,
    configurations: Sequence[EmbeddingOptions],
    folder: Path,
    skipped: dict[str, str],
    on_progress: Progress | None,
) -> Iterator[tuple[str, dict[int, Image.Image]]]:
    """Each class's first `limit_per_class` readable pictures with their label, decoded at
    every size the configurations' models take (weights differ in resize size, and
    decoding shrinks to it); an unreadable file is listed in `skipped` and replaced by the
    next one."""
    sizes = {options.resize_size: options for options in configurations}
    for label, sources in classes.items():
        kept = 0
        for source in sources:
            if limit_per_class and kept >= limit_per_class:
                break
            try:
                data = source.read()
                by_size = {size: decode_upload(data, options=o).image for size, o in sizes.items()}
            except ImageRejected as exc:
                skipped[_relative(source.name, folder)] = f"{exc.code}: {exc.detail}"
            except OSError as exc:
                skipped[_relative(source.name, folder)] = f"could not be read: {exc}"
            else:
                kept += 1
                yield label, by_size
            if on_progress:
                on_progress(1)


def _relative(name: str, folder: Path) -> str:
    prefix = f"{folder}/"
    return name[len(prefix) :] if name.startswith(prefix) else name


# --- Searching and scoring ----------------------------------------------------------------


def _scores(
    options: EmbeddingOptions, vectors: np.ndarray, labels: list[str]
) -> ConfigurationScores:
    """Each picture of a class of 2 or more queries all the others in a temporary exact
    index; its hits are scored, then averaged overall and per class."""
    sizes = Counter(labels)
    per_query: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="evaluate-search-") as directory:
        store = LocalVectorStore(directory, dimension=DIMENSION)
        store.upsert(VectorRecord(id=str(index), vector=row) for index, row in enumerate(vectors))
        for index, label in enumerate(labels):
            if sizes[label] < 2:
                continue
            matches = store.query(vectors[index], top_k=MAP_AT + 1)
            others = [int(match.id) for match in matches if match.id != str(index)][:MAP_AT]
            hits = [labels[other] == label for other in others]
            per_query[index] = query_scores(hits, relevant=sizes[label] - 1)

    classes = [
        ClassScores(
            label=label,
            pictures=sizes[label],
            scores=_mean([per_query[i] for i, other in enumerate(labels) if other == label])
            if sizes[label] >= 2
            else None,
        )
        for label in sorted(sizes)
    ]
    return ConfigurationScores(
        options=options, overall=_mean(list(per_query.values())), classes=classes
    )


def query_scores(hits: Sequence[bool], *, relevant: int) -> dict[str, float]:
    """One query's metrics from its ranked results (True where the result is of the query's
    class): recall@k is 1 when any of the first k is, and AP@10 averages the precision at
    each hit in the first 10, over min(10, relevant) so a perfect ranking scores 1."""
    values = {f"recall@{k}": float(any(hits[:k])) for k in RECALL_AT}
    found, precision_sum = 0, 0.0
    for rank, hit in enumerate(hits[:MAP_AT], start=1):
        if hit:
            found += 1
            precision_sum += found / rank
    values[f"map@{MAP_AT}"] = precision_sum / min(MAP_AT, relevant) if relevant else 0.0
    return values


def _mean(rows: list[dict[str, float]]) -> Scores:
    return Scores(
        queries=len(rows),
        values={metric: float(np.mean([row[metric] for row in rows])) for metric in METRICS},
    )


# --- JSON ---------------------------------------------------------------------------------


def _scores_as_dict(scores: Scores | None) -> dict[str, Any]:
    if scores is None:
        return {"queries": 0, **dict.fromkeys(METRICS)}
    return {"queries": scores.queries, **scores.values}


def _run_as_dict(run: ConfigurationScores) -> dict[str, Any]:
    options = run.options
    return {
        "model_id": model_id_for(options),
        "weights": options.weights,
        "seed": options.seed,
        "engine": options.engine,
        "precision": options.precision,
        "overall": _scores_as_dict(run.overall),
        "classes": [
            {"class": row.label, "pictures": row.pictures, **_scores_as_dict(row.scores)}
            for row in run.classes
        ],
    }


def difference(a: Scores | None, b: Scores | None) -> dict[str, float | None]:
    """B - A for each metric; None where a class was never queried."""
    if a is None or b is None:
        return dict.fromkeys(METRICS)
    return {metric: b.values[metric] - a.values[metric] for metric in METRICS}


def _difference_as_dict(a: ConfigurationScores, b: ConfigurationScores) -> dict[str, Any]:
    return {
        "overall": difference(a.overall, b.overall),
        "classes": [
            {"class": x.label, **difference(x.scores, y.scores)}
            for x, y in zip(a.classes, b.classes, strict=True)
        ],
    }
