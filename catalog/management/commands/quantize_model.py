from django.core.management.base import BaseCommand

from catalog.offline.precision import CALIBRATION_MIN_CATALOG, int8_calibrate


class Command(BaseCommand):
    help = (
        "Build the int8 model (EMBEDDING_PRECISION=int8), calibrated on catalog pictures, "
        f"or on the demo photos while the catalog has fewer than {CALIBRATION_MIN_CATALOG}."
    )

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=200, help="catalog pictures to use")
        parser.add_argument(
            "--min-catalog",
            type=int,
            default=CALIBRATION_MIN_CATALOG,
            help="below this many readable catalog pictures, use the demo photos",
        )

    def handle(self, *args, **options):
        calibration = int8_calibrate(limit=options["limit"], min_catalog=options["min_catalog"])
        self.stdout.write(
            f"Wrote {calibration.path}, calibrated on {calibration.pictures} "
            f"{calibration.source} picture(s). Restart web and worker processes to load it; "
            "if int8 vectors were already stored, run `manage.py reindex --all` so that every "
            "vector comes from this model."
        )
