"""The two inference engines, the ONNX export and its cache, int8 quantisation chosen per
CPU, the preprocessing they share, and the one inference thread per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from search.embedding import (
    EmbeddingOptions,
    EmbeddingWeightsUnavailable,
    ImageEncoder,
    get_encoder,
    model_id_for,
    onnx_engine,
)
from search.embedding.cpu_features import (
    INT8_SCHEMES,
    cpu_flags,
    int8_scheme_for,
    this_cpu_int8_scheme,
)
from search.embedding.onnx_engine import EmbeddingExportRefused, cache_path, cosines, quantize
from search.embedding.preprocessing import preprocess, preprocess_batch
from tests.conftest import cpu_burnt_after, photo

NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png", "camera.png"]
REPO = Path(__file__).resolve().parents[2]


def options(**changes) -> EmbeddingOptions:
    return EmbeddingOptions.from_settings(**changes)


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "IMAGENET1K_V2"])
@pytest.mark.parametrize("size", [(512, 512), (640, 427), (300, 801), (225, 224), (256, 256)])
def test_numpy_preprocessing_matches_torchvisions_transform(weights, size):
    from torchvision.models import ResNet50_Weights

    transform = ResNet50_Weights[weights].transforms()
    image = photo("astronaut.png").resize(size)
    expected = transform(image).numpy()
    got = preprocess(image, EmbeddingOptions(weights=weights).resize_size)
    assert got.shape == expected.shape == (3, 224, 224)
    assert np.abs(got - expected).max() < 1e-5


def test_grey_and_transparent_pictures_are_preprocessed_as_rgb():
    grey = photo("camera.png").convert("L")
    rgba = photo("astronaut.png").convert("RGBA")
    assert preprocess(grey, 256).shape == preprocess(rgba, 256).shape == (3, 224, 224)
    assert np.allclose(preprocess(grey, 256), preprocess(grey.convert("RGB"), 256))


def test_the_engines_agree_to_cosine_0_9999_on_real_photos():
    images = [photo(name) for name in NAMES]
    from_onnx = ImageEncoder(options(engine="onnx")).embed_batch(images)
    from_torch = ImageEncoder(options(engine="torch")).embed_batch(images)
    assert cosines(from_onnx, from_torch).min() >= 0.9999
    assert np.allclose(np.linalg.norm(from_onnx, axis=1), 1.0, atol=1e-5)


def test_engines_share_a_model_id_and_int8_has_its_own():
    onnx = ImageEncoder(options(engine="onnx"))
    torch = ImageEncoder(options(engine="torch"))
    assert (onnx.engine, torch.engine) == ("onnx", "torch")
    assert onnx.model_id == torch.model_id == "resnet50/random-seed0"
    int8 = ImageEncoder(options(precision="int8"))
    assert int8.model_id == f"resnet50/random-seed0/int8-{this_cpu_int8_scheme()}"


def test_int8_needs_the_onnx_engine():
    with pytest.raises(EmbeddingWeightsUnavailable, match="EMBEDDING_ENGINE=onnx"):
        EmbeddingOptions(engine="torch", precision="int8")


@pytest.mark.parametrize(
    ("machine", "flags", "scheme"),
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "u8s8"),  # Cascade Lake, Zen 4 on
        ("x86_64", {"avx2", "avx_vnni"}, "u8s8"),  # Alder Lake and later desktops
        ("x86_64", {"avx2", "avx512f", "avx512_vnni", "amx_int8"}, "u8s8"),  # Sapphire Rapids
        ("x86_64", {"avx2", "avx512f", "avx512bw"}, "u8s8rr"),  # Skylake-SP: saturates
        ("x86_64", {"sse4_1", "avx2"}, "u8s8rr"),
        ("AMD64", set(), "u8s8rr"),  # Windows: no /proc/cpuinfo, the safe choice
        ("aarch64", {"asimd", "asimddp", "i8mm"}, "s8s8"),
        ("arm64", set(), "s8s8"),  # Apple silicon
    ],
)
def test_the_int8_scheme_follows_the_cpus_architecture_and_features(machine, flags, scheme):
    assert int8_scheme_for(machine, flags) == scheme


def test_this_cpus_int8_scheme_is_read_from_its_flags():
    import platform

    assert this_cpu_int8_scheme() == int8_scheme_for(platform.machine(), cpu_flags())
    if platform.machine() == "x86_64":
        assert "sse2" in cpu_flags()  # every x86-64 CPU has it: the flags were read


def test_the_int8_model_id_and_cache_file_name_name_the_scheme(tmp_path):
    ids = set()
    for tag in INT8_SCHEMES:
        int8 = EmbeddingOptions(weights="random", precision="int8", quantization=tag)
        assert model_id_for(int8) == f"resnet50/random-seed0/int8-{tag}"
        assert f"int8-{tag}." in cache_path(int8).name
        assert model_id_for(int8.fp32) == "resnet50/random-seed0"
        ids.add(model_id_for(int8))
    assert len(ids) == len(INT8_SCHEMES)  # vectors of two schemes are never mixed
    assert model_id_for(EmbeddingOptions(weights="random", precision="int8")) in ids


def test_an_unknown_int8_scheme_is_refused():
    with pytest.raises(EmbeddingWeightsUnavailable, match="u8s8, u8s8rr, s8s8"):
        EmbeddingOptions(precision="int8", quantization="u4s4")


@pytest.mark.parametrize("scheme", list(INT8_SCHEMES))
def test_every_int8_scheme_agrees_with_fp32_on_real_photos(scheme, tmp_path):
    """Calibrated on a few photos only (the test stays quick), checked on others."""
    int8 = options(precision="int8", quantization=scheme)
    path = quantize(int8, [photo(name) for name in NAMES[:3]], path=tmp_path / "int8.onnx")
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    images = [photo(name) for name in NAMES[3:]] + [photo("chelsea.png").rotate(90)]
    fp32 = get_encoder(options()).embed_batch(images)
    pixels = preprocess_batch(images, int8.resize_size)
    quantised = onnx_engine.open_session(path, threads=1).run(None, {onnx_engine.INPUT: pixels})
    assert cosines(fp32, quantised[0]).min() >= 0.99


def test_an_int8_model_that_disagrees_with_fp32_is_refused_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_engine, "MIN_INT8_AGREEMENT", 1.01)  # no int8 model reaches it
    int8 = options(precision="int8")
    with pytest.raises(EmbeddingExportRefused, match="EMBEDDING_PRECISION=fp32"):
        quantize(int8, [photo("coffee.png")], path=tmp_path / "int8.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_export_is_cached_and_reused(tmp_path):
    fresh = options(cache_dir=str(tmp_path))
    first = ImageEncoder(fresh)
    path = cache_path(fresh)
    assert path.is_file() and path.parent == tmp_path
    assert "random-seed0" in path.name and f"opset{onnx_engine.OPSET}" in path.name
    modified = path.stat().st_mtime_ns
    again = ImageEncoder(fresh)
    assert path.stat().st_mtime_ns == modified
    image = photo("coffee.png")
    assert np.array_equal(first.embed_one(image), again.embed_one(image))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".lock"]


def test_an_export_that_disagrees_with_torch_is_refused_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_engine, "MIN_AGREEMENT", 1.01)  # no export can reach it
    fresh = options(cache_dir=str(tmp_path))
    with pytest.raises(EmbeddingExportRefused, match="EMBEDDING_ENGINE=torch"):
        ImageEncoder(fresh)
    assert not cache_path(fresh).exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_cached_model_is_exported_again(tmp_path):
    fresh = options(cache_dir=str(tmp_path))
    expected = ImageEncoder(fresh).embed_one(photo("coffee.png"))
    cache_path(fresh).write_bytes(b"not a model any more")
    again = ImageEncoder(fresh)
    assert np.array_equal(again.embed_one(photo("coffee.png")), expected)


def test_an_unwritable_model_cache_names_the_setting(tmp_path):
    from search.embedding import EmbeddingWeightsUnavailable

    (tmp_path / "a-file").write_text("")
    with pytest.raises(EmbeddingWeightsUnavailable, match="EMBEDDING_CACHE_DIR"):
        ImageEncoder(options(cache_dir=str(tmp_path / "a-file" / "models")))


def test_two_processes_exporting_at_once_both_succeed_with_one_file(tmp_path):
    script = (
        "import django, json, sys; django.setup();"
        "from search.embedding import get_encoder;"
        "from tests.conftest import photo;"
        "print(json.dumps(get_encoder().embed_one(photo('coffee.png')).tolist()))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env["EMBEDDING_CACHE_DIR"] = str(tmp_path)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    first, second = (np.array(json.loads(out.strip().splitlines()[-1])) for out in outputs)
    assert np.array_equal(first, second)
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_web_and_worker_processes_do_not_import_torch_once_the_model_is_cached():
    get_encoder(options(engine="onnx"))  # makes sure the cache holds the model
    script = (
        "import sys, django; django.setup();"
        "from django.core.wsgi import get_wsgi_application; get_wsgi_application();"
        "import visualsearch.urls, visualsearch.celery;"
        "visualsearch.celery.app.loader.import_default_modules();"
        "from search.embedding import get_encoder;"
        "from tests.conftest import photo;"
        "get_encoder().embed_one(photo('coffee.png'));"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "EMBEDDING_ENGINE": "onnx"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_every_forward_pass_runs_on_one_thread_whatever_thread_asks(engine):
    encoder = ImageEncoder(options(engine=engine))
    seen = set()
    run = encoder._engine.run

    def recording_run(pixels):
        seen.add(threading.get_ident())
        return run(pixels)

    encoder._engine.run = recording_run
    images = [photo(name) for name in NAMES[:4]]
    results = [None] * 4

    def search(index):
        results[index] = encoder.embed_one(images[index])

    threads = [threading.Thread(target=search, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 1 and threading.get_ident() not in seen
    assert np.allclose(np.stack(results), encoder.embed_batch(images), atol=1e-5)


def test_the_thread_setting_sizes_the_onnx_pool():
    encoder = ImageEncoder(options(engine="onnx", threads=1))
    session_options = encoder._engine._session.get_session_options()
    assert session_options.intra_op_num_threads == 1


def test_usable_cores_follow_the_cpu_affinity():
    from search.embedding.options import usable_cores

    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert usable_cores() == 1
        assert EmbeddingOptions().effective_threads == 1
    finally:
        os.sched_setaffinity(0, before)


def test_a_worker_process_warms_the_model_when_it_starts(settings):
    from celery.signals import worker_process_init

    from search.embedding import encoder_is_loaded
    from search.embedding.encoder import _encoders

    settings.EMBEDDING_SEED = 5  # a model no other test has built in this process
    assert not encoder_is_loaded()
    worker_process_init.send(sender=None)
    for thread in threading.enumerate():
        if thread.name == "warm-up-model":
            thread.join(timeout=120)
    assert encoder_is_loaded()
    _encoders.pop(EmbeddingOptions.from_settings())


def test_a_workers_pool_processes_divide_the_cores_between_them(monkeypatch):
    from celery.signals import worker_process_init

    from search.embedding import options as embedding_options
    from visualsearch.celery import app

    monkeypatch.setattr(embedding_options, "usable_cores", lambda: 8)
    monkeypatch.setattr(embedding_options, "_sibling_processes", 1)
    assert EmbeddingOptions().effective_threads == 8  # a web process: every core
    configured = app.conf.worker_concurrency
    app.conf.worker_concurrency = 3
    try:
        worker_process_init.send(sender=None)
    finally:
        app.conf.worker_concurrency = configured
    assert EmbeddingOptions().effective_threads == 2
    assert EmbeddingOptions(threads=5).effective_threads == 5  # EMBEDDING_THREADS wins


def test_an_idle_onnx_pool_stops_spinning_right_after_a_forward_pass():
    """Spinning pool threads would take the cores from request threads and from the other
    process on the machine; ONNX Runtime's default spins on for ~17 ms per thread."""
    encoder = ImageEncoder(options(engine="onnx"))
    image = photo("coffee.png")
    burnt = cpu_burnt_after(lambda: encoder.embed_one(image), idle_seconds=0.2)
    assert sorted(burnt)[1] < 0.015


def test_a_fleet_may_name_its_int8_scheme_so_every_machine_shares_the_model_id(settings):
    settings.EMBEDDING_PRECISION = "int8"
    settings.EMBEDDING_INT8_QUANTIZATION = "u8s8rr"
    assert model_id_for(EmbeddingOptions.from_settings()).endswith("/int8-u8s8rr")
    settings.EMBEDDING_INT8_QUANTIZATION = ""
    assert model_id_for(EmbeddingOptions.from_settings()).endswith(
        f"/int8-{this_cpu_int8_scheme()}"
    )
