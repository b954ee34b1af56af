"""The package's public surface: ``from mmats import ...`` gives the functions, and
``import mmats`` stays light (it runs before every ``import mmats.<module>``)."""

import inspect
import subprocess
import sys

import pytest

import mmats

PUBLIC = {
    "load": "mmats.data.io",
    "data_quality": "mmats.data.quality",
    "load_strategy": "mmats.strategy",
    "check_lookahead": "mmats.lookahead",
    "market": "mmats.backtest",
    "backtest": "mmats.backtest",
    "sweep": "mmats.backtest",
    "walk_forward": "mmats.validate.walkforward",
    "monte_carlo": "mmats.validate.montecarlo",
    "run_research": "mmats.validate.research",
    "write_research_report": "mmats.reports.research_report",
}


def test_all_is_the_small_public_surface():
    assert sorted(mmats.__all__) == sorted(PUBLIC)
    assert set(PUBLIC) <= set(dir(mmats))


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_names_are_the_functions_of_their_modules(name):
    value = getattr(mmats, name)
    assert inspect.isfunction(value)
    assert value.__module__ == PUBLIC[name]


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mmats.nope  # noqa: B018


def run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_import_mmats_loads_no_heavy_library():
    done = run("import sys, mmats; print(sorted(m for m in ('matplotlib', 'pandas', 'numba', "
               "'numpy', 'mmats.backtest') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_result_plot_does_not_load_matplotlib_until_called():
    done = run("import sys; from mmats import backtest, sweep, load; "
               "print('matplotlib' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("first", [
    "from mmats.backtest import sweep",
    "import mmats.backtest",
    "from mmats import sweep",
    "from mmats import market",
])
def test_backtest_is_the_function_whatever_was_imported_first(first):
    """``mmats.backtest`` is also a module: importing it must not shadow the function."""
    done = run(f"{first}\nfrom mmats import backtest\nimport mmats\n"
               "from mmats.backtest import BacktestResult\n"
               "print(backtest.__name__, mmats.backtest is backtest, "
               "BacktestResult.__module__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["backtest", "True", "mmats.backtest"]


def test_star_import_gives_every_public_function():
    done = run("import inspect\nfrom mmats import *\n"
               f"print(all(inspect.isfunction(globals()[n]) for n in {sorted(PUBLIC)!r}))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_every_submodule_is_bound_on_the_package_whatever_came_first():
    """``import mmats.types`` binds the submodule as the package attribute ``types``; the
    package's own helpers must not be globals of that name, or every later submodule import
    fails to bind (``mmats.live`` was missing after ``import mmats.types``)."""
    code = ("import warnings; warnings.simplefilter('error', ImportWarning)\n"
            "import mmats.types, mmats.units, mmats.records, mmats.live, mmats.data, "
            "mmats.validate, mmats.reports, mmats.cli, mmats.brokers\n"
            "import mmats\n"
            "for name in ('types', 'units', 'records', 'live', 'data', 'validate', 'reports', "
            "'cli', 'brokers'):\n"
            "    assert getattr(mmats, name).__name__ == 'mmats.' + name, name\n"
            "from mmats import backtest; assert callable(backtest)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
