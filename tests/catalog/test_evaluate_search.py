"""evaluate_search: leave-one-out recall@k and mAP@10 on a labelled folder made here from
the sample photos (each class: one photo and edited copies of it)."""

import io
import json
from math import comb

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image, ImageEnhance

from catalog.models import CatalogImage
from catalog.offline.evaluation import METRICS, query_scores
from catalog.pipeline.indexing import images_index
from search.vectorstores import get_vector_store
from tests.catalog.test_services import create
from tests.conftest import encode, photo

PHOTOS = {"astronaut": "astronaut.png", "cat": "chelsea.png", "coffee": "coffee.png"}
PHOTOS["rocket"] = "rocket.jpg"
EDITS = ("original", "crop", "flip", "rotated", "recompressed", "brighter")
PICTURES = len(PHOTOS) * len(EDITS)  # 24, one query each


def edited_copies(image: Image.Image) -> dict[str, bytes]:
    """The photo and the edits a person makes before searching with it."""
    w, h = image.size
    return {
        "original.png": encode(image, "PNG"),
        "crop.jpg": encode(image.crop((w // 10, h // 10, w - w // 10, h - h // 10))),
        "flip.jpg": encode(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        "rotated.jpg": encode(image.rotate(8, resample=Image.Resampling.BILINEAR)),
        "recompressed.jpg": encode(image, "JPEG", quality=25),
        "brighter.jpg": encode(ImageEnhance.Brightness(image).enhance(1.3)),
    }


@pytest.fixture(scope="module")
def copies() -> dict[str, dict[str, bytes]]:
    return {label: edited_copies(photo(name)) for label, name in PHOTOS.items()}


@pytest.fixture
def by_photo(tmp_path, copies):
    """One class per photo: finding a class means finding copies of the same picture."""
    for label, files in copies.items():
        (tmp_path / "set" / label).mkdir(parents=True)
        for name, data in files.items():
            (tmp_path / "set" / label / name).write_bytes(data)
    (tmp_path / "set" / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a picture")
    return tmp_path / "set"


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("evaluate_search", *map(str, args), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def rows(out: str) -> dict[str, list[str]]:
    """The table's rows by their first cell."""
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}


def test_it_prints_overall_and_per_class_scores_and_writes_them_as_json(by_photo, tmp_path):
    out, err = run(by_photo, "--json", tmp_path / "scores.json")
    assert "Skipped coffee/broken.jpg: not_an_image" in err
    assert "Model: resnet50/random-seed0 (onnx)" in out
    assert f"{PICTURES} pictures in 4 classes, {PICTURES} queries; 1 file(s) skipped." in out
    table = rows(out)
    assert table["class"] == ["queries", "R@1", "R@5", "R@10", "mAP@10"]
    assert table["overall"][0] == str(PICTURES)
    assert all(table[label][0] == str(len(EDITS)) for label in PHOTOS)

    scores = json.loads((tmp_path / "scores.json").read_text())
    assert (scores["pictures"], scores["classes"], scores["unlabelled"]) == (PICTURES, 4, 0)
    ((skipped,),) = [scores["skipped"]]
    assert skipped["path"] == "coffee/broken.jpg"
    assert skipped["reason"].startswith("not_an_image: ")
    (model,) = scores["configurations"]
    assert (model["model_id"], model["engine"], model["precision"]) == (
        "resnet50/random-seed0",
        "onnx",
        "fp32",
    )
    assert [row["class"] for row in model["classes"]] == sorted(PHOTOS)
    for row in [model["overall"], *model["classes"]]:
        assert set(row) >= {"queries", *METRICS}
        assert all(0.0 <= row[metric] <= 1.0 for metric in METRICS)
    assert table["overall"][1:] == [f"{model['overall'][m]:.3f}" for m in METRICS]
    assert "difference" not in scores


def test_copies_of_the_same_photo_find_each_other_far_above_chance_even_with_random_weights(
    by_photo, copies, tmp_path
):
    """Even an untrained ResNet50 maps a photo and its edits close together (its random
    filters still respond to the same colours and layout). With 6 pictures per class, a
    query's first result, picked at random among the 23 others, is of its class with
    probability 5/23 = 0.22; 18 or more hits in 24 by chance has probability below 1e-7.

    The control cannot pass by accident either: the same 24 pictures labelled by edit
    (class "crop" = the 4 crops) put every copy of a query's photo in other classes, so a
    working evaluation scores near 0 there, while one that let a picture find itself
    would score 1.0 on both."""
    p = 5 / 23
    by_chance = sum(comb(24, k) * p**k * (1 - p) ** (24 - k) for k in range(18, 25))
    assert by_chance < 1e-7

    run(by_photo, "--json", tmp_path / "by_photo.json")
    for label, files in copies.items():
        for name, data in files.items():
            (tmp_path / "by_edit" / name.split(".")[0]).mkdir(parents=True, exist_ok=True)
            (tmp_path / "by_edit" / name.split(".")[0] / f"{label}.png").write_bytes(data)
    run(tmp_path / "by_edit", "--json", tmp_path / "by_edit.json")

    def recall_at_1(name):
        scores = json.loads((tmp_path / name).read_text())
        return scores["configurations"][0]["overall"]["recall@1"]

    assert recall_at_1("by_photo.json") >= 18 / 24
    assert recall_at_1("by_edit.json") <= 0.25


def test_compare_prints_both_configurations_side_by_side_with_the_difference(by_photo, tmp_path):
    out, _ = run(by_photo, "--json", tmp_path / "both.json", "--compare", "EMBEDDING_SEED=1")
    assert "A: resnet50/random-seed0 (onnx)" in out and "B: resnet50/random-seed1 (onnx)" in out
    table = rows(out)
    assert table["class"] == ["queries", *["A", "B", "B-A"] * len(METRICS)]
    assert len(table["overall"]) == 1 + 3 * len(METRICS)

    scores = json.loads((tmp_path / "both.json").read_text())
    a, b = (model["overall"] for model in scores["configurations"])
    assert [model["seed"] for model in scores["configurations"]] == [0, 1]
    for metric in METRICS:
        assert scores["difference"]["overall"][metric] == pytest.approx(b[metric] - a[metric])
    assert a != b  # two different models were run, not one twice
    overall = table["overall"][1:]
    assert overall[0::3] == [f"{a[m]:.3f}" for m in METRICS]
    assert overall[1::3] == [f"{b[m]:.3f}" for m in METRICS]
    assert overall[2::3] == [f"{b[m] - a[m]:+.3f}" for m in METRICS]


@pytest.mark.django_db
def test_it_leaves_the_catalog_and_the_live_vector_store_alone(by_photo):
    image = create("camera.png")
    images_index(image_ids=[image.pk])
    store = get_vector_store()
    before = (CatalogImage.objects.count(), store.count(), store.ids())
    assert before[:2] == (1, 1)
    run(by_photo, "--compare", "EMBEDDING_PRECISION=int8")
    assert (CatalogImage.objects.count(), store.count(), store.ids()) == before


def test_a_class_of_one_picture_is_a_distractor_never_a_query(by_photo, tmp_path):
    (by_photo / "moon").mkdir()
    (by_photo / "moon" / "moon.png").write_bytes(encode(photo("moon.png"), "PNG"))
    (by_photo / "loose.jpg").write_bytes(encode(photo("camera.png")))
    out, err = run(by_photo, "--json", tmp_path / "scores.json")
    assert rows(out)["moon"] == ["0", "-", "-", "-", "-"]
    assert rows(out)["overall"][0] == str(PICTURES)
    assert "Ignored 1 file(s) directly in" in err
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert (scores["pictures"], scores["classes"], scores["unlabelled"]) == (PICTURES + 1, 5, 1)
    (moon,) = [row for row in scores["configurations"][0]["classes"] if row["class"] == "moon"]
    assert moon == {"class": "moon", "pictures": 1, "queries": 0, **dict.fromkeys(METRICS)}


def test_limit_per_class_takes_the_first_readable_pictures_of_each_class(by_photo):
    out, err = run(by_photo, "--limit-per-class", 3)
    assert "Skipped coffee/broken.jpg" in err  # sorted second in its class, and replaced
    assert rows(out)["overall"][0] == str(4 * 3)


def test_it_refuses_a_folder_with_a_single_class(by_photo, tmp_path):
    (tmp_path / "one").mkdir()
    (by_photo / "cat").rename(tmp_path / "one" / "cat")
    with pytest.raises(CommandError, match="at least 2 subfolders"):
        run(tmp_path / "one")
    with pytest.raises(CommandError, match="is not a folder"):
        run(by_photo / "nowhere")


def test_it_refuses_classes_that_all_hold_one_picture(by_photo):
    with pytest.raises(CommandError, match="single picture"):
        run(by_photo, "--limit-per-class", 1)


def test_it_refuses_a_compare_setting_it_does_not_know_or_that_changes_nothing(by_photo):
    with pytest.raises(CommandError, match="KEY=VALUE with KEY one of EMBEDDING_WEIGHTS"):
        run(by_photo, "--compare", "EMBEDDING_COLOUR=red")
    with pytest.raises(CommandError, match="whole number"):
        run(by_photo, "--compare", "EMBEDDING_SEED=one")
    with pytest.raises(CommandError, match="already set"):
        run(by_photo, "--compare", "EMBEDDING_SEED=0")
    with pytest.raises(CommandError, match="int8 needs EMBEDDING_ENGINE=onnx"):
        run(by_photo, "--compare", "EMBEDDING_PRECISION=int8", "EMBEDDING_ENGINE=torch")


def test_average_precision_counts_each_hit_at_its_rank_over_the_relevant_pictures():
    scores = query_scores([False, True, False, True], relevant=2)
    assert scores == {"recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0, "map@10": 0.5}
    # More relevant pictures than fit in 10 results: 10 hits in 10 is a perfect score.
    assert query_scores([True] * 10, relevant=25)["map@10"] == 1.0
    assert query_scores([False] * 5 + [True], relevant=1)["recall@5"] == 0.0
