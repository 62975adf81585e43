"""The quickstart notebook runs top to bottom on the real data."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.realdata
@pytest.mark.slow
def test_quickstart_notebook_executes(real_data, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("RSCBIR_DATA", str(real_data))
    monkeypatch.setenv("RSCBIR_OUT", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    from PIL import Image

    with Image.open(tmp_path / "quickstart_hits.png") as sheet:  # the query and 8 hits, 6 thumbnails a row
        assert sheet.size == (6 * 134 + 6, 2 * 150 + 6)
        darkest, brightest = sheet.convert("L").getextrema()
    assert brightest - darkest > 50  # imagery, not a blank page
    assert (tmp_path / "quickstart_hits.html").exists() and (tmp_path / "quickstart_change.png").exists()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not any(o.get("output_type") == "error" for o in outputs)
