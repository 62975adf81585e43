import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import write_raster
from rscbir.cli import cli
from rscbir.embed import EmbeddingStore, EmbedOptions, embed_scenes
from rscbir.evaluate import retrieval_metrics
from rscbir.errors import ModelError, StoreError
from rscbir.datasets.scene_sets import LabelledImages
from rscbir.images import load_image
from rscbir.models.checkpoint import save_checkpoint
from rscbir.models import finetune as ft
from rscbir.models.load import load_feature_model
from rscbir.models.whitening import PCAWhitening
from rscbir.scene import Scene
from rscbir.tiling import TilingConfig


@pytest.fixture(scope="module")
def small_model():
    return load_feature_model(["R", "G", "B"], input_size=32)


@pytest.fixture
def naip_like(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(1, 256, (4, 96, 128), dtype=np.uint8)
    return write_raster(tmp_path / "naip_20190704.tif", data, nodata=0)


def test_store_rows_match_catalog(tmp_path, naip_like, small_model):
    model = small_model
    config = model.config
    scene = Scene.open(naip_like, band_names=["R", "G", "B", "NIR"]).select(["R", "G", "B"])
    store = embed_scenes([scene], tmp_path / "emb", model, TilingConfig(32), options=EmbedOptions(batch_size=5, workers=0))
    assert len(store.catalog) == len(store.vectors) == 12
    assert list(store.catalog["patch_id"]) == [f"naip_20190704:{r}:{c}" for r in range(3) for c in range(4)]
    np.testing.assert_allclose(np.linalg.norm(store.vectors.astype(np.float32), axis=1), 1, atol=2e-3)
    # vector i is the embedding of catalog row i
    with scene.reader() as reader:
        from rasterio.windows import Window

        row = store.catalog.iloc[7]
        patch = reader.read(Window(row.col_off, row.row_off, 32, 32))
    with torch.inference_mode():
        direct = model(torch.from_numpy(scene.scale(patch))[None]).numpy()[0]
    np.testing.assert_allclose(store.vectors[7].astype(np.float32), direct, atol=2e-3)
    assert store.model_config.weights_sha256 == config.weights_sha256
    assert sorted(p.name for p in store.path.iterdir()) == ["catalog.parquet", "model.json", "vectors.npy"]


def test_store_reads_its_catalog_only_when_asked_and_refuses_a_damaged_one(tmp_path, naip_like, small_model):
    """A Dask driver hands a store's rows to workers without holding its catalog: opening reads the Parquet footer
    (the row count is still checked), ``columns`` reads two columns, the catalog itself comes on first use."""
    scene = Scene.open(naip_like, band_names=["R", "G", "B", "NIR"]).select(["R", "G", "B"])
    embed_scenes([scene], tmp_path / "emb", small_model, TilingConfig(32), options=EmbedOptions(workers=0))
    store = EmbeddingStore.open(tmp_path / "emb")
    assert "catalog" not in vars(store)
    assert store.columns("row", "col").to_numpy().tolist() == [[r, c] for r in range(3) for c in range(4)]
    assert "catalog" not in vars(store) and len(store.catalog) == 12
    catalog = tmp_path / "emb" / "catalog.parquet"
    catalog.write_bytes(catalog.read_bytes()[:-100])
    with pytest.raises(StoreError, match="not a readable embedding store"):
        EmbeddingStore.open(tmp_path / "emb")


def test_worker_processes_give_the_same_store(tmp_path, naip_like, small_model):
    model = small_model
    scene = Scene.open(naip_like, band_names=["R", "G", "B", "NIR"]).select(["R", "G", "B"])
    a = embed_scenes([scene], tmp_path / "a", model, TilingConfig(32), options=EmbedOptions(4, workers=0))
    b = embed_scenes([scene], tmp_path / "b", model, TilingConfig(32), options=EmbedOptions(4, workers=2))
    assert list(a.catalog["patch_id"]) == list(b.catalog["patch_id"])
    np.testing.assert_allclose(a.vectors.astype(np.float32), b.vectors.astype(np.float32), atol=1e-3)


def test_pca_dim_is_stored(tmp_path, naip_like, small_model):
    model = small_model
    scene = Scene.open(naip_like, band_names=["R", "G", "B", "NIR"]).select(["R", "G", "B"])
    store = embed_scenes([scene], tmp_path / "p", model, TilingConfig(16), options=EmbedOptions(dim=8, dtype="float32", workers=0))
    assert store.vectors.shape == (48, 8) and store.meta["pca_dim"] == 8
    assert store.pca.dim == 8


def test_embed_cli_with_preset(tmp_path, naip_like):
    out = tmp_path / "emb"
    result = CliRunner().invoke(cli, ["embed", str(naip_like), "--preset", "naip", "--patch-size", "32",
                                      "--input-size", "32", "--workers", "0", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["model"]["input_bands"] == ["R", "G", "B"] and meta["model"]["backbone"] == "efficientnet_lite0"
    assert meta["model"]["pooling"] == "grid"  # the search default: each stage averaged over its 2 x 2 quarters
    assert EmbeddingStore.open(out).vectors.shape == (12, 4 * 1904)  # 4 stages: 112 + 192 + 320 + 1280, x 4 quarters; too few for a PCA


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet1000"], "unknown backbone"),
        (["--weights", "missing.pth"], "weights file not found"),
        ([], "without recognisable RGB names"),  # 4 unnamed bands, no preset
        (["--preset", "nope"], "unknown preset"),
    ],
)
def test_embed_cli_errors(tmp_path, naip_like, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["embed", str(naip_like), "--patch-size", "32", *args, "-o", str(tmp_path / "e")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "e").exists()


def test_failed_embed_keeps_previous_store(tmp_path, naip_like, small_model, monkeypatch):
    model = small_model
    scene = Scene.open(naip_like, band_names=["R", "G", "B", "NIR"]).select(["R", "G", "B"])
    store = embed_scenes([scene], tmp_path / "emb", model, TilingConfig(32), options=EmbedOptions(workers=0))
    before = (tmp_path / "emb" / "vectors.npy").read_bytes()
    monkeypatch.setattr("rscbir.embed.records_to_frame", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        embed_scenes([scene], tmp_path / "emb", model, TilingConfig(16), options=EmbedOptions(workers=0))
    assert (tmp_path / "emb" / "vectors.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert len(store.vectors) == 12


def test_retrieval_metrics_by_hand():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    perfect = retrieval_metrics(vectors, np.array([0, 0, 1, 1]), ks=(1,))
    assert perfect["mAP"] == 1.0 and perfect["P@1"] == 1.0
    swapped = retrieval_metrics(vectors, np.array([0, 1, 0, 1]), ks=(1,))
    # a and c find their mate 3rd of 3 (AP 1/3); b and d find it 2nd (b.d = 0.22 > b.c = 0.11; AP 1/2)
    assert swapped["mAP"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3 + 1 / 2) / 4) and swapped["P@1"] == 0.0


def test_blockwise_ranking_equals_one_block_and_expansion_and_feedback_help():
    """Queries in blocks of 3 give the figures of one block; on clustered vectors query expansion,
    database augmentation and a feedback round each keep or raise mAP."""
    from rscbir.rerank import QueryExpansion

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16))
    labels = np.repeat(np.arange(4), 15)
    vectors = centres[labels] + 1.2 * rng.normal(size=(60, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    whole = retrieval_metrics(vectors, labels, block=512)
    assert retrieval_metrics(vectors, labels, block=3) == pytest.approx(whole)
    expanded = retrieval_metrics(vectors, labels, expansion=QueryExpansion(5), augment=3, feedback_top=10, block=7)
    assert expanded["mAP"] >= whole["mAP"] and expanded["feedback"]["mAP"] > expanded["mAP"]
    assert expanded["feedback"]["P@10"] >= 0.9


def test_pca_whitening_recovers_low_rank_structure():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(4, 32))
    vectors = rng.normal(size=(200, 4)) @ basis + 0.01 * rng.normal(size=(200, 32))
    for power in (0.0, 0.5):
        pca = PCAWhitening.fit(vectors, 4, power)
        out = pca.transform(vectors)
        assert out.shape == (200, 4)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_pca_with_fewer_vectors_than_dimensions_keeps_the_principal_subspace():
    """Fewer patches than dimensions (1,540 grid-pooled 7,616-d vectors): the Gram-matrix fit gives the distances of
    the data's own top principal components, and whitening divides each by its spread."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 8)) * np.arange(8, 0, -1) @ rng.normal(size=(8, 300)) + 0.01 * rng.normal(size=(60, 300))
    centred = vectors - vectors.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    for power in (0.0, 0.5):
        out = PCAWhitening.fit(vectors, 5, power).transform(vectors)
        expected = centred @ vt[:5].T / (singular[:5] ** 2 / 59 + 1e-6) ** power
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(out @ out.T, expected @ expected.T, atol=1e-4)


def _image_folder(root, n=6, size=40):
    rng = np.random.default_rng(0)
    for name, colour in (("red", (200, 30, 30)), ("green", (30, 200, 30))):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_two_finetune_steps_change_head_and_checkpoint_round_trips(tmp_path):
    images = LabelledImages.scan(_image_folder(tmp_path / "imgs"))
    model = load_feature_model(["R", "G", "B"], input_size=32)
    torch.manual_seed(0)
    initial = torch.nn.Linear(model.pooled_dim, 16)
    config = ft.TrainConfig(dim=16, epochs=1, max_steps=2, batch_size=4, val_fraction=0.34)
    torch.manual_seed(0)
    model, history = ft.finetune_on_images(model, images, config)
    assert model.head is not None and not torch.allclose(model.head.weight, initial.weight)
    path = save_checkpoint(model, tmp_path / "head.pt", "supervised-images", images.classes, history)
    loaded = load_feature_model(["R", "G", "B"], weights=path)
    x = torch.rand(2, 3, 40, 40)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.config.dim == 16 and loaded.config.checkpoint == str(path)
    with pytest.raises(ModelError, match="trained on bands R, G, B"):
        load_feature_model(["B1", "B2"], weights=path)


def test_training_leaves_its_config_untouched(tmp_path):
    """A TrainConfig (the default argument included) is not mutated: two runs with one config see no history
    from each other."""
    images = LabelledImages.scan(_image_folder(tmp_path / "imgs"))
    config = ft.TrainConfig(dim=8, epochs=2, max_steps=2, batch_size=4, val_fraction=0.34)
    _, first = ft.finetune_on_images(load_feature_model(["R", "G", "B"], input_size=32), images, config)
    _, second = ft.finetune_on_images(load_feature_model(["R", "G", "B"], input_size=32), images, config)
    assert len(first) == len(second) == 1  # max_steps=2 ends the first epoch; histories do not accumulate
    assert ft.TrainConfig() == ft.TrainConfig(dim=128) and not hasattr(ft.TrainConfig(), "history")


def test_unfrozen_trunk_is_saved_by_a_library_caller(tmp_path):
    """After train_supervised with unfrozen stages, requires_grad is reset; the checkpoint must still hold the
    trained trunk (it used to decide by requires_grad and silently dropped it)."""
    images = LabelledImages.scan(_image_folder(tmp_path / "imgs"))
    model = load_feature_model(["R", "G", "B"], input_size=32)
    pristine = {k: v.clone() for k, v in model.backbone.trunk.state_dict().items()}
    tensors = [load_image(p) for p in images.paths]
    config = ft.TrainConfig(dim=8, epochs=1, max_steps=3, batch_size=4, unfreeze=1, lr=1e-2, val_fraction=0.34)
    model, _ = ft.train_supervised(model, tensors, images.labels.tolist(), images.classes, config)
    assert not any(p.requires_grad for p in model.parameters())
    changed = [k for k, v in model.backbone.trunk.state_dict().items() if not torch.equal(v, pristine[k])]
    assert changed, "training with unfreeze=1 changed no trunk weight"
    path = save_checkpoint(model, tmp_path / "unfrozen.pt", "supervised-images", images.classes)
    loaded = load_feature_model(["R", "G", "B"], weights=path)
    for key in changed:
        torch.testing.assert_close(loaded.backbone.trunk.state_dict()[key], model.backbone.trunk.state_dict()[key])
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))


def test_finetune_and_eval_cli(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    ckpt = tmp_path / "head.pt"
    runner = CliRunner()
    result = runner.invoke(cli, ["-q", "finetune", str(root), "--half", "first", "--dim", "8", "--epochs", "2",
                                 "--input-size", "32", "-o", str(ckpt)])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["eval", "retrieval", str(root), "--half", "second", "--weights", str(ckpt), "--feedback", "2",
                                 "--json", str(tmp_path / "r.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dim"] == 8 and report["queries"] == 6
    assert report["feedback"]["marked_top"] == 2 and report["feedback"]["mAP"] >= 0.9  # label-free and feedback figures
    assert "full ranking" in report["map_definition"]
    # two colour classes, three images each: every query finds its two mates first (P@5 at most 2/5)
    assert report["mAP"] >= 0.9 and report["P@5"] == pytest.approx(0.4), report


def test_self_supervised_finetune_cli(tmp_path, naip_like):
    ckpt = tmp_path / "ssl.pt"
    result = CliRunner().invoke(cli, ["-q", "finetune", str(naip_like), "--preset", "naip", "--self-supervised",
                                      "--patch-size", "16", "--input-size", "32", "--dim", "8", "--epochs", "2",
                                      "-o", str(ckpt)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "self-supervised-triplets" in result.output
    model = load_feature_model(["R", "G", "B", "NIR"], weights=ckpt)
    assert model.config.dim == 8


def test_supervised_finetune_from_labelled_polygons(tmp_path):
    """Patches take the class of the polygon holding their centre (left half water, right half field)."""
    import geopandas as gpd
    import shapely

    data = np.zeros((3, 64, 128), np.uint8)
    data[:, :, :64] = np.array([20, 40, 120], np.uint8)[:, None, None]  # blue-ish left
    data[:, :, 64:] = np.array([90, 160, 40], np.uint8)[:, None, None]  # green-ish right
    data += np.random.default_rng(0).integers(1, 20, data.shape, dtype=np.uint8)
    scene_path = write_raster(tmp_path / "fields.tif", data, nodata=0)
    scene = Scene.open(scene_path)
    left, bottom, right, top = scene.grid.bounds
    middle = (left + right) / 2
    polygons = gpd.GeoDataFrame(
        {"crop": ["water", "field"]},
        geometry=[shapely.box(left, bottom, middle, top), shapely.box(middle, bottom, right, top)],
        crs=scene.grid.crs,
    ).to_crs(4326)
    labels = tmp_path / "labels.geojson"
    polygons.to_file(labels)
    tensors, targets, classes = ft.labelled_patches([scene], labels, "crop", TilingConfig(16))
    assert classes == ["field", "water"] and len(tensors) == 32
    assert targets.count(classes.index("water")) == 16
    result = CliRunner().invoke(cli, ["-q", "finetune", str(scene_path), "--preset", "rgb", "--labels", str(labels),
                                      "--label-field", "crop", "--patch-size", "16", "--input-size", "32", "--dim", "8",
                                      "--epochs", "2", "-o", str(tmp_path / "crop.pt")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "supervised-polygons" in result.output
    bad = CliRunner().invoke(cli, ["finetune", str(scene_path), "--preset", "rgb", "--labels", str(labels),
                                   "--label-field", "nope", "-o", str(tmp_path / "x.pt")])  # fmt: skip
    assert bad.exit_code == 2 and "no field 'nope'" in bad.output


def test_pca_with_fewer_vectors_than_dimensions_matches_the_covariance_route():
    """The SVD route (n < d, e.g. 7616-d grid features) gives the same projection as the covariance route."""
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(40, 60)) @ np.diag(np.linspace(3, 0.1, 60))
    fitted = PCAWhitening.fit(vectors, 6, 0.5)
    centred = vectors - vectors.mean(axis=0)
    values, vecs = np.linalg.eigh(centred.T @ centred / 39)
    order = np.argsort(values)[::-1][:6]
    expected = centred @ (vecs[:, order] / (values[order] + 1e-6) ** 0.5)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(fitted.transform(vectors)), np.abs(expected), atol=1e-4)


def test_pca_from_moments_summed_in_parts_equals_the_fit_on_every_vector():
    """Dask workers send back each part's count, sum and scatter instead of its vectors: the PCA fitted from the
    summed moments is the one fitted on the stacked vectors (float16 as stored), signs fixed, whatever the split."""
    from rscbir.models.whitening import Moments

    rng = np.random.default_rng(4)
    vectors = (rng.normal(size=(3000, 40)) @ np.diag(np.linspace(4, 0.2, 40)) + 2.0).astype(np.float16)
    whole = PCAWhitening.fit(vectors, 12)
    parts = Moments.of(vectors[:1100]) + Moments.of(vectors, rows=np.arange(1100, 2000)) + Moments.of(vectors[2000:], block=7)
    summed = PCAWhitening.from_moments(parts, 12)
    np.testing.assert_allclose(summed.projection, whole.projection, atol=1e-6)
    np.testing.assert_allclose(summed.mean, whole.mean, atol=1e-6)
    centred = vectors.astype(np.float64) - vectors.astype(np.float64).mean(axis=0)
    values, vecs = np.linalg.eigh(centred.T @ centred / 2999)
    top = vecs[:, np.argsort(values)[::-1][:12]]
    np.testing.assert_allclose(np.abs(whole.projection), np.abs(top), atol=1e-5)  # the covariance's own eigenvectors
    assert (whole.projection[np.abs(whole.projection).argmax(axis=0), np.arange(12)] > 0).all()
    rows = np.sort(rng.permutation(3000)[:1500])  # a store's sample, read a block at a time (or whole, when few)
    sampled = PCAWhitening.fit_rows([(vectors[:1000], rows[rows < 1000]), (vectors[1000:], rows[rows >= 1000] - 1000)], 12)
    np.testing.assert_allclose(sampled.projection, PCAWhitening.fit(vectors[rows], 12).projection, atol=1e-6)
    few = PCAWhitening.fit_rows([(vectors, rows[:30])], 5)  # fewer rows than dimensions: the Gram route on the rows
    np.testing.assert_allclose(few.projection, PCAWhitening.fit(vectors[rows[:30]], 5).projection, atol=1e-6)


def test_a_second_embed_runs_from_the_cached_graph_without_torch(rgb_tif, tmp_path):
    """The first run exports the model's ONNX graph into the cache; the next never imports torch and writes the same
    vectors, which match the torch model's to 1e-4 (patches resized in numpy by torch's rule)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from click.testing import CliRunner
        from rscbir.cli import cli
        result = CliRunner().invoke(cli, ["embed", sys.argv[1], "--patch-size", "32", "-o", sys.argv[2], *sys.argv[3:]])
        assert result.exit_code == 0, result.output
        print("torch" in sys.modules)
    """)
    env = {**os.environ, "RSCBIR_CACHE": str(tmp_path / "cache")}

    def embed(out, *extra):
        child = subprocess.run([sys.executable, "-c", code, str(rgb_tif), str(tmp_path / out), *extra], env=env,
                               capture_output=True, text=True, check=True)  # fmt: skip
        return child.stdout.strip().splitlines()[-1] == "True", np.asarray(EmbeddingStore.open(tmp_path / out).vectors, np.float32)

    first_torch, first = embed("first")
    again_torch, again = embed("again")
    assert first_torch and not again_torch  # the export needs torch once; the cached graph never
    assert list((tmp_path / "cache" / "onnx").glob("*/model.onnx"))
    np.testing.assert_array_equal(first, again)
    _, by_torch = embed("torch", "--runtime", "torch")
    assert first.shape == by_torch.shape == (6, 7616)  # 6 patches: too few for a PCA, full grid-pooled vectors
    np.testing.assert_allclose(first, by_torch, atol=1e-3)
    assert ((first * by_torch).sum(axis=1) > 0.9999).all()
    graph = next((tmp_path / "cache" / "onnx").glob("*/model.onnx"))
    graph.write_bytes(graph.read_bytes()[:1000])  # a damaged cache entry (a disk filled mid-write, a stray edit)
    _, repaired = embed("repaired")
    np.testing.assert_array_equal(first, repaired)  # made again, not a traceback
    assert graph.stat().st_size > 1_000_000


def test_numpy_resize_is_torchs_bilinear_with_antialias():
    import torch
    import torch.nn.functional as F

    from rscbir.models.resize import resize

    rng = np.random.default_rng(0)
    for side in (33, 64, 224, 320, 500):
        x = rng.random((2, 3, side, side)).astype(np.float32)
        expected = F.interpolate(torch.from_numpy(x), size=(224, 224), mode="bilinear", align_corners=False, antialias=side > 224)
        np.testing.assert_allclose(resize(x, 224), expected.numpy(), atol=2e-5)
