from pathlib import Path

from django.core.management.base import BaseCommand

from catalog.importing import images_import
from catalog.models import CatalogImage
from catalog.sources import ImageSource

# Real photographs that scikit-image ships inside its package (see skimage/data/README.txt
# for their sources and licences), so the demo needs no download.
DEMO_IMAGES = {
    "astronaut.png": ("Astronaut Eileen Collins", ["people", "space"]),
    "chelsea.png": ("Chelsea the cat", ["animal", "cat"]),
    "coffee.png": ("A cup of coffee", ["food", "drink"]),
    "rocket.jpg": ("Rocket on the launch pad", ["space", "vehicle"]),
    "motorcycle_left.png": ("Motorcycle", ["vehicle"]),
    "hubble_deep_field.jpg": ("Hubble deep field", ["space"]),
    "camera.png": ("Cameraman", ["people", "black and white"]),
    "coins.png": ("Greek coins", ["objects", "black and white"]),
    "moon.png": ("Surface of the moon", ["space", "black and white"]),
    "brick.png": ("Brick wall", ["texture"]),
    "grass.png": ("Grass", ["texture", "nature"]),
    "gravel.png": ("Gravel", ["texture", "nature"]),
    "retina.jpg": ("Human retina", ["medical"]),
    "ihc.png": ("Immunohistochemistry stain", ["medical"]),
    "page.png": ("Page of text", ["document", "black and white"]),
}


class Command(BaseCommand):
    help = "Load a small demo catalog from sample photos bundled with scikit-image."

    def add_arguments(self, parser):
        parser.add_argument(
            "--if-empty", action="store_true", help="do nothing when the catalog has images"
        )

    def handle(self, *args, if_empty, **options):
        if if_empty and CatalogImage.objects.exists():
            self.stdout.write("The catalog already has images; demo not loaded.")
            return
        import skimage.data

        folder = Path(skimage.data.__file__).parent
        sources = [
            ImageSource(
                name=str(folder / filename),
                read=(folder / filename).read_bytes,
                title=title,
                tags=("demo", *tags),
            )
            for filename, (title, tags) in DEMO_IMAGES.items()
            if (folder / filename).exists()
        ]
        report = images_import(sources)
        self.stdout.write(
            f"Demo catalog: {len(report.created)} images added "
            f"({len(report.duplicates)} already there); a running worker indexes them."
        )
