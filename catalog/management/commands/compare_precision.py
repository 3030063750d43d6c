from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.offline.precision import precision_agreement


class Command(BaseCommand):
    help = (
        "How far int8 vectors are from fp32 on your own catalog: mean and minimum cosine, "
        "and the overlap of each picture's top-10 neighbours."
    )

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=500, help="catalog pictures to compare")
        parser.add_argument("--top-k", type=int, default=10)

    def handle(self, *args, **options):
        with tqdm(total=options["limit"], unit="img", disable=None) as bar:
            try:
                report = precision_agreement(
                    limit=options["limit"], top_k=options["top_k"], progress=bar.update
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{report.pictures} catalog pictures, int8 against fp32:\n"
            f"  cosine of the two vectors: mean {report.mean_cosine:.5f}, "
            f"min {report.min_cosine:.5f}\n"
            f"  top-{report.top_k} neighbours kept: mean {report.mean_overlap:.1%}, "
            f"min {report.min_overlap:.1%}"
        )
