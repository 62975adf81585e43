"""Fixtures: tiny seeded GeoTIFFs written with rasterio, and the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

DATA = Path(os.environ.get("RSCBIR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
UTM = CRS.from_epsg(32618)


def write_raster(path, data, crs=UTM, transform=None, nodata=None, tags=None, **profile):
    """Write ``data`` (bands, h, w) as a GeoTIFF; transform defaults to 10 m UTM pixels."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    transform = transform if transform is not None else Affine(10, 0, 500000, 0, -10, 4500000)
    meta = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                dtype=data.dtype, transform=transform, nodata=nodata, **profile)  # fmt: skip
    if crs is not None:
        meta["crs"] = crs
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return Path(path)


def blob_image(height, width, centre, sigma=4.0, bands=3, dtype=np.uint8, seed=0):
    """A smooth random background with one bright Gaussian blob at ``centre`` (row, col)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    blob = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2))
    base = 20 + 5 * rng.random((height, width))
    image = base + 200 * blob
    return np.stack([image] * bands).astype(dtype)


@pytest.fixture
def rgb_tif(tmp_path):
    """100 x 80 px, 3-band uint8, 10 m UTM, values 1..255 (no nodata pixels)."""
    rng = np.random.default_rng(42)
    data = rng.integers(1, 256, (3, 80, 100), dtype=np.uint8)
    return write_raster(tmp_path / "scene_20200102.tif", data, nodata=0)


@pytest.fixture
def real_data():
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent (the project's shared/data sets)")
    return DATA


NAIP = "naip_timeseries/m_4709963_se_14_1_{}.tif"


@pytest.fixture(scope="session")
def naip_index(tmp_path_factory):
    """A small real index built once per run: NAIP 2009 and 2020 aligned, 320 m patches (154 per date).
    Tests that change an index copy it first."""
    from click.testing import CliRunner

    from rscbir.cli import cli

    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    out = tmp_path_factory.mktemp("naip") / "naip_index"
    result = CliRunner().invoke(cli, ["-q", "index", "build", str(DATA / NAIP.format("20090818")), str(DATA / NAIP.format("20200831")),
                                      "--align", "--preset", "naip", "--patch-size", "320m", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


NAIP_DATES = ["20090818", "20100629", "20120731", "20140720", "20150926", "20160816", "20170827", "20180716", "20190904", "20200831"]


@pytest.fixture(scope="session")
def naip10_index(tmp_path_factory):
    """All 10 NAIP dates of one tile, aligned, 320 m patches: the archive case (the same ground ten times)."""
    from click.testing import CliRunner

    from rscbir.cli import cli

    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    out = tmp_path_factory.mktemp("naip10") / "naip10_index"
    files = [str(DATA / NAIP.format(d)) for d in NAIP_DATES]
    result = CliRunner().invoke(cli, ["-q", "index", "build", *files, "--align", "--preset", "naip", "--patch-size", "320m", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """The suite caches pair evidence in a folder of its own, never in the user's ~/.cache/rscbir."""
    before = os.environ.get("RSCBIR_CACHE")
    os.environ["RSCBIR_CACHE"] = str(tmp_path_factory.mktemp("rscbir-cache"))
    yield
    if before is None:
        os.environ.pop("RSCBIR_CACHE", None)
    else:
        os.environ["RSCBIR_CACHE"] = before


@pytest.fixture(scope="module")
def cluster():
    """A Dask client on a local cluster of two single-threaded worker processes (restarted by their nannies)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        with distributed.Client(local) as client:
            yield client


def with_a_worker_killed(cluster, work):
    """Run ``work()`` on a thread, kill one worker process once tasks are under way, and return what it gave."""
    import signal
    import threading
    import time

    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("value", work()))
    runner.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any(cluster.processing().values()):
        time.sleep(0.01)
    time.sleep(0.3)  # let tasks get under way
    victim = next(iter(cluster.run(os.getpid).values()))
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=300)
    return result["value"]
