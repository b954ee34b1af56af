"""The research notebooks run top to bottom on the sample data, so they cannot rot."""

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

RESEARCH = Path(__file__).resolve().parents[1] / "research"
NAMES = ["quickstart", "robustness", "strategies"]


def _images(cell):
    """The PNG images a code cell shows."""
    return [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")
            and "image/png" in o.get("data", {})]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.slow
def test_notebook_executes(name, tmp_path):
    notebook = nbformat.read(RESEARCH / f"{name}.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    code = {index: cell for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    outputs = [o for cell in code.values() for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert text  # every notebook prints figures of its run

    # a cell tagged "plot" shows exactly its own figure and no other cell shows one, so a
    # figure drawn but never shown, or shown under a later cell, fails here
    plotting = {index for index, cell in code.items() if "plot" in cell.metadata.get("tags", [])}
    assert plotting, f"{name}.ipynb tags no cell 'plot'"
    shown = {index: len(_images(cell)) for index, cell in code.items()}
    assert {index: shown[index] for index in plotting} == dict.fromkeys(plotting, 1)
    assert {index: n for index, n in shown.items() if n and index not in plotting} == {}


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_match_their_source(name, tmp_path):
    """research/build_notebooks.py holds the cells; the .ipynb files are built from it."""
    spec = importlib.util.spec_from_file_location("build", RESEARCH / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    build.build(getattr(build, name.upper()), tmp_path / f"{name}.ipynb")

    def cells(path):
        notebook = nbformat.read(path, as_version=4)
        return [(c.id, c.cell_type, c.source, c.metadata) for c in notebook.cells]

    # ids and tags too: ids follow the position, and the "plot" tag drives the test above
    assert cells(RESEARCH / f"{name}.ipynb") == cells(tmp_path / f"{name}.ipynb"), (
        f"research/{name}.ipynb differs from research/build_notebooks.py; "
        "run: python research/build_notebooks.py")
