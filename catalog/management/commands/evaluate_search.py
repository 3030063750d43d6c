import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.offline.evaluation import (
    METRICS,
    Evaluation,
    EvaluationRefused,
    Scores,
    difference,
    evaluate_folder,
    options_with,
)
from search.embedding import EmbeddingOptions, EmbeddingWeightsUnavailable

HEADINGS = {"recall@1": "R@1", "recall@5": "R@5", "recall@10": "R@10", "map@10": "mAP@10"}


class Command(BaseCommand):
    help = (
        "Measure search quality on a labelled folder: each subfolder holds pictures of one "
        "thing; each picture searches all the others in a temporary index (the catalog and "
        "the vector store are not touched). Prints recall@1/5/10 and mAP@10, overall and "
        "per class; --compare runs a second configuration side by side."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", help="a folder with one subfolder of pictures per class")
        parser.add_argument("--json", metavar="PATH", dest="json_path", help="write the numbers")
        parser.add_argument(
            "--compare",
            nargs="+",
            metavar="KEY=VALUE",
            help="settings of a second configuration, e.g. EMBEDDING_WEIGHTS=IMAGENET1K_V2 "
            "or EMBEDDING_PRECISION=int8 (EMBEDDING_WEIGHTS, _SEED, _ENGINE, _PRECISION)",
        )
        parser.add_argument(
            "--limit-per-class", type=int, metavar="N", help="use the first N pictures of each"
        )

    def handle(self, *args, folder, json_path, compare, limit_per_class, **options):
        if limit_per_class is not None and limit_per_class < 1:
            raise CommandError("--limit-per-class must be 1 or more.")
        try:
            configurations = [EmbeddingOptions.from_settings()]
            if compare:
                configurations.append(options_with(configurations[0], compare))
            with tqdm(desc="Embedding", unit="img", disable=None) as bar:
                evaluation = evaluate_folder(
                    folder,
                    configurations=configurations,
                    limit_per_class=limit_per_class,
                    on_start=lambda total: bar.reset(total=total),
                    on_progress=bar.update,
                )
        except (EvaluationRefused, EmbeddingWeightsUnavailable) as exc:
            raise CommandError(str(exc)) from exc

        for path, reason in evaluation.skipped.items():
            self.stderr.write(f"Skipped {path}: {reason}")
        if evaluation.unlabelled:
            self.stderr.write(
                f"Ignored {evaluation.unlabelled} file(s) directly in {folder}: "
                "a picture counts only inside a class subfolder."
            )
        self.stdout.write(_table(evaluation))
        if json_path:
            Path(json_path).write_text(json.dumps(evaluation.as_dict(), indent=2) + "\n")
            self.stdout.write(f"Wrote {json_path}")


def _table(evaluation: Evaluation) -> str:
    """Overall and per-class rows; with --compare, A, B and B - A under each metric."""
    runs = evaluation.runs
    width = max(len("overall"), *(len(row.label) for row in runs[0].classes))
    names = ("Model",) if len(runs) == 1 else ("A", "B")
    lines = [f"{name}: {run.name}" for name, run in zip(names, runs, strict=True)]
    lines.append(
        f"{evaluation.pictures} pictures in {len(runs[0].classes)} classes, "
        f"{runs[0].overall.queries} queries; {len(evaluation.skipped)} file(s) skipped."
    )
    rows = [("overall", runs[0].overall.queries, [run.overall for run in runs])]
    for index, row in enumerate(runs[0].classes):
        queries = row.scores.queries if row.scores else 0
        rows.append((row.label, queries, [run.classes[index].scores for run in runs]))

    if len(runs) == 1:
        header = "".join(f"{HEADINGS[metric]:>8}" for metric in METRICS)
        lines.append(f"\n{'class':<{width}}  queries{header}")
        for label, queries, (scores,) in rows:
            lines.append(f"{label:<{width}}  {queries:>7}" + "".join(_cells(scores, 8)))
        return "\n".join(lines)

    groups = "".join(f"{HEADINGS[metric]:^22}" for metric in METRICS)
    columns = "".join(f"{'A':>7}{'B':>7}{'B-A':>8}" for _ in METRICS)
    lines.append(f"\n{'':<{width}}  {'':>7}{groups.rstrip()}\n{'class':<{width}}  queries{columns}")
    for label, queries, (a, b) in rows:
        cells = zip(_cells(a, 7), _cells(b, 7), _differences(a, b), strict=True)
        lines.append(f"{label:<{width}}  {queries:>7}" + "".join("".join(c) for c in cells))
    return "\n".join(lines)


def _cells(scores: Scores | None, width: int) -> list[str]:
    if scores is None:  # a class of one picture: in the index as a distractor, never a query
        return [f"{'-':>{width}}" for _ in METRICS]
    return [f"{scores.values[metric]:>{width}.3f}" for metric in METRICS]


def _differences(a: Scores | None, b: Scores | None) -> list[str]:
    return [f"{'-':>8}" if d is None else f"{d:>+8.3f}" for d in difference(a, b).values()]
