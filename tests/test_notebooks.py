"""The research notebooks run top to bottom on the sample data, so they cannot rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

RESEARCH = Path(__file__).resolve().parents[1] / "research"


@pytest.mark.parametrize("name", ["quickstart", "robustness"])
def test_notebook_executes(name, tmp_path):
    notebook = nbformat.read(RESEARCH / f"{name}.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert text  # every notebook prints figures of its run


def test_notebooks_match_their_source():
    """research/build_notebooks.py holds the cells; the .ipynb files are built from it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build", RESEARCH / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for name, cells in (("quickstart", build.QUICKSTART), ("robustness", build.ROBUSTNESS)):
        notebook = nbformat.read(RESEARCH / f"{name}.ipynb", as_version=4)
        assert [c.source for c in notebook.cells] == [source for _, source in cells]
