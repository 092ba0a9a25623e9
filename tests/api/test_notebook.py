"""examples/study.ipynb runs from top to bottom (nbclient, a real kernel) on the shared data, and is
the notebook examples/make_study_notebook.py writes."""

import importlib.util
from pathlib import Path

import nbformat
import pytest
from conftest import shared_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_notebook_is_what_the_script_writes():
    spec = importlib.util.spec_from_file_location("make_study_notebook", EXAMPLES / "make_study_notebook.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    on_disk = nbformat.read(EXAMPLES / "study.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in on_disk.cells] == [(c.cell_type, c.source) for c in script.build().cells]
    assert all(not c.get("outputs") for c in on_disk.cells)  # kept without outputs


@pytest.mark.slow
def test_study_notebook_runs(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    data = shared_file("cifar10-jpeg.tar.gz").parent
    shared_file("mnist")
    monkeypatch.setenv("CIFARLAB_DATA", str(data))
    nb = nbformat.read(EXAMPLES / "study.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "final test accuracy" in text and "filters removed" in text and "top eigenvalue" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the Grad-CAM and landscape figures
    assert list(tmp_path.iterdir()) == []  # nothing written into the working folder
