"""The built wheel works outside the checkout: band presets ship as package data."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    """The project built with `pip wheel` and unpacked into a folder of its own (no checkout on the path)."""
    folder = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(folder), str(ROOT)],
                           capture_output=True, text=True)  # fmt: skip
    assert built.returncode == 0, built.stderr
    wheel = next(folder.glob("rscbir-*.whl"))
    site = folder / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def _run_outside(site: Path, cwd: Path, code: str) -> subprocess.CompletedProcess:
    prelude = f"import sys; sys.path.insert(0, {str(site)!r}); import rscbir; assert rscbir.__file__.startswith({str(site)!r}), rscbir.__file__\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_wheel_holds_presets(wheel_site, tmp_path):
    assert sorted(p.name for p in (wheel_site / "rscbir" / "configs").glob("*.yaml")) == [
        "landsat.yaml", "naip.yaml", "rgb.yaml", "sentinel2.yaml"]  # fmt: skip
    result = _run_outside(wheel_site, tmp_path, "from rscbir.presets import load_preset; print(load_preset('naip').band_names)")
    assert result.returncode == 0, result.stderr
    assert "('R', 'G', 'B', 'NIR')" in result.stdout


@pytest.mark.slow
@pytest.mark.realdata
def test_wheel_embeds_with_a_preset_outside_the_checkout(wheel_site, tmp_path, real_data):
    scene = real_data / "naip_timeseries" / "m_4709963_se_14_1_20090818.tif"
    code = (f"from rscbir.cli import cli; cli(['-q', 'embed', {str(scene)!r}, '--preset', 'naip', '--patch-size', '1280m', "
            f"'--input-size', '64', '-o', 'emb'])")  # fmt: skip
    result = _run_outside(wheel_site, tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "emb" / "vectors.npy").exists() and (tmp_path / "emb" / "model.json").exists()
