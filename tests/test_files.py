"""mmats.files: the one atomic write (reports, store, secrets, kernels, unpacked models)."""

import os
import subprocess
import sys
import zipfile

import pytest

from mmats.files import atomic_path, write_durably


def test_atomic_path_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["x.txt"]
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".x.txt.")
        temporary.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["x.txt"]


def test_each_writer_gets_its_own_temp_file(tmp_path):
    """Two writers of one file never share a temp file (a fixed ``model.tmp`` could be
    renamed away by one process while the other still wrote it)."""
    target = tmp_path / "model.py"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_text("a")
        second.write_text("b")
    assert target.read_text() == "a"  # the outer block ends last: its file wins whole
    write_durably(target, lambda handle: handle.write(b"c"))
    assert target.read_text() == "c" and os.listdir(tmp_path) == ["model.py"]


def test_processes_unpacking_one_model_zip_at_once(tmp_path, repo):
    """Several processes loading the same zipped model at once all get it whole."""
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(repo / "mmats" / "strategies" / "ema_cross.py", "model.py")
        zipped.writestr("manifest.toml", 'name = "zipped_ema"\n')
    code = ("import sys; from mmats.strategy import load_strategy; "
            "print(load_strategy(sys.argv[1]).name)")
    env = {**os.environ, "MMATS_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.Popen([sys.executable, "-c", code, str(archive)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert out.strip() == "zipped_ema"
    leftovers = list((tmp_path / "cache").rglob("*.tmp"))
    assert leftovers == []
