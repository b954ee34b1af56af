import zipfile

import numpy as np
import pytest

from mmats.errors import ConfigError, StrategyError
from mmats.strategy import available_strategies, load_strategy, validate_output

HEADER = """
import numpy as np
from numba import njit
PARAMS = {"n": [1, 2]}
DEFAULTS = {"n": 1}
"""


def arrays(n=50):
    close = np.linspace(1.0, 2.0, n)
    return {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
            "volume": np.ones(n)}


def test_shipped_strategies_are_found_by_name():
    assert {"ema_cross", "rsi_reversion", "donchian_breakout"} <= set(available_strategies())
    strategy = load_strategy("ema_cross")
    assert strategy.param_names == ("fast", "slow")
    assert strategy.param_types == {"fast": int, "slow": int}
    assert strategy.is_numba
    assert strategy.warmup({"fast": 5, "slow": 30}) == 30


def test_ema_cross_has_no_position_before_slow_bars(eth_btc):
    strategy = load_strategy("ema_cross")
    data = {k: eth_btc[k].to_numpy() for k in ("open", "high", "low", "close", "volume")}
    out = strategy.run(data, {"fast": 10, "slow": 50}).exposure
    assert np.all(out[:49] == 0.0)
    assert set(np.unique(out)) <= {0.0, 1.0}
    fast = eth_btc["close"].ewm(span=10, adjust=False, min_periods=10).mean()
    slow = eth_btc["close"].ewm(span=50, adjust=False, min_periods=50).mean()
    np.testing.assert_array_equal(out, (fast > slow).to_numpy().astype(float))


def test_load_by_path_and_params(write_strategy):
    path = write_strategy("mine", HEADER + """
@njit(cache=True)
def signal(open, high, low, close, volume, n):
    return np.zeros(close.shape[0])
""")
    strategy = load_strategy(str(path))
    assert strategy.name == "mine"
    assert strategy.resolve_params({"n": 2.0}) == {"n": 2}
    with pytest.raises(ConfigError, match="no parameter 'm'.*n"):
        strategy.resolve_params({"m": 1})
    with pytest.raises(ConfigError, match="whole numbers"):
        strategy.resolve_params({"n": 1.5})


def test_load_from_zip_with_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("MMATS_CACHE_DIR", str(tmp_path / "cache"))
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("manifest.toml", 'name = "zipped"\nversion = "1"\n')
        z.writestr("model.py", HEADER + """
def signal(open, high, low, close, volume, n):
    return np.full(close.shape[0], 0.5)
""")
    strategy = load_strategy(archive)
    assert strategy.name == "zipped"
    assert not strategy.is_numba
    assert strategy.run(arrays()).exposure[0] == 0.5


def test_zip_without_manifest_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model.py", "x = 1\n")
    with pytest.raises(StrategyError, match="manifest.toml"):
        load_strategy(archive)


def test_unknown_name_lists_available():
    with pytest.raises(StrategyError, match="available: .*ema_cross"):
        load_strategy("no_such_strategy")


@pytest.mark.parametrize(
    "body, message",
    [
        ("return np.zeros(close.shape[0] - 1)", r"shape \(49,\); expected \(50,\)"),
        ("return np.zeros(close.shape[0], dtype=np.int64)", "dtype int64; it must be float64"),
        ("return np.full(close.shape[0], 1.5)", "exposure 1.5 at bar 0 is outside"),
        ("return np.zeros(close.shape[0]), np.full(close.shape[0], -1.0)",
         "stop_distance -1.0 at bar 0 must be > 0"),
        ("return [0.0] * close.shape[0]", "must be a numpy array"),
    ],
)
def test_broken_outputs_are_named(write_strategy, body, message):
    path = write_strategy("broken", HEADER + f"""
def signal(open, high, low, close, volume, n):
    {body}
""")
    with pytest.raises(StrategyError, match=message):
        load_strategy(path).run(arrays())


def test_contract_of_module_is_checked(write_strategy):
    path = write_strategy("nodefaults", """
import numpy as np
PARAMS = {"n": [1]}
DEFAULTS = {"k": 1}
def signal(open, high, low, close, volume, n):
    return np.zeros(close.shape[0])
""")
    with pytest.raises(StrategyError, match="DEFAULTS keys must match"):
        load_strategy(path)
    path = write_strategy("badargs", """
PARAMS = {}
DEFAULTS = {}
def signal(close, volume):
    return close
""")
    with pytest.raises(StrategyError, match="must start with"):
        load_strategy(path)


def test_exception_inside_signal_names_strategy(write_strategy):
    path = write_strategy("raises", HEADER + """
def signal(open, high, low, close, volume, n):
    raise RuntimeError("boom")
""")
    with pytest.raises(StrategyError, match="'raises'.*RuntimeError: boom"):
        load_strategy(path).run(arrays())


def test_combinations_skip_invalid_and_count():
    strategy = load_strategy("ema_cross")
    combos, skipped = strategy.combinations({"fast": [10, 20, 60], "slow": [50]})
    assert combos == [{"fast": 10, "slow": 50}, {"fast": 20, "slow": 50}]
    assert skipped == 1
    with pytest.raises(ConfigError, match="not parameters"):
        strategy.combinations({"fastest": [1]})


def test_validate_output_accepts_nan_as_keep():
    out = validate_output("x", np.array([np.nan, 1.0, -1.0, 0.0]), 4)
    assert np.isnan(out.exposure[0])


# --- bad values stop at the door: one check for config, backtest, sweep and the CLI ------

@pytest.mark.parametrize("params, message", [
    ({"fast": -15}, "parameter 'fast' of strategy 'ema_cross' must be > 0.*got -15"),
    ({"fast": 0}, "parameter 'fast' .* must be > 0.*got 0"),
    ({"slow": 2.5}, "parameter 'slow' .* takes whole numbers, got 2.5"),
    ({"fast": float("nan")}, "parameter 'fast' .* finite"),
    ({"fast": float("inf")}, "parameter 'fast' .* finite"),
    ({"fast": True}, "parameter 'fast' .* must be a number, got True"),
    ({"fast": 60, "slow": 50}, "rejects fast=60, slow=50: its valid\\(\\) returns False"),
])
def test_a_bad_parameter_set_is_refused_with_name_and_value(params, message):
    strategy = load_strategy("ema_cross")
    with pytest.raises(ConfigError, match=message):
        strategy.resolve_params(params)


def test_signs_come_from_params_and_defaults(write_strategy):
    path = write_strategy("signs", """
import numpy as np
PARAMS = {"window": [5, 10], "flag": [0, 1], "shift": [-1.0, 1.0], "scale": [0.5]}
DEFAULTS = {"window": 5, "flag": 0, "shift": 0.0, "scale": 1.0}
def signal(open, high, low, close, volume, window, flag, shift, scale):
    return np.zeros(close.shape[0])
""")
    strategy = load_strategy(path)
    assert strategy.param_signs == {"window": "positive", "flag": "non-negative",
                                    "shift": "any", "scale": "positive"}
    assert strategy.resolve_params({"flag": 0, "shift": -3.5})["shift"] == -3.5
    with pytest.raises(ConfigError, match="'flag' .* must be >= 0.*got -1"):
        strategy.resolve_params({"flag": -1})
    with pytest.raises(ConfigError, match="'scale' .* must be > 0.*got 0"):
        strategy.resolve_params({"scale": 0})


def test_defaults_that_valid_rejects_are_a_load_error(write_strategy):
    path = write_strategy("selfish", HEADER + """
def valid(n):
    return n > 1
def signal(open, high, low, close, volume, n):
    return np.zeros(close.shape[0])
""")
    with pytest.raises(StrategyError, match="DEFAULTS are refused.*valid"):
        load_strategy(path)


def test_backtest_sweep_and_walkforward_refuse_bad_values(eth_btc):
    from mmats.backtest import backtest, sweep
    from mmats.cli import parse_grid, parse_params

    with pytest.raises(ConfigError, match="'fast' .* > 0.*got 0"):
        backtest("ema_cross", eth_btc, parse_params("fast=0"))
    with pytest.raises(ConfigError, match="rejects fast=60, slow=50"):
        backtest("ema_cross", eth_btc, {"fast": 60})
    with pytest.raises(ConfigError, match="'slow' .* whole numbers, got 20.5"):
        sweep("ema_cross", eth_btc, parse_grid("slow=20.5|30"))
    with pytest.raises(ConfigError, match="'fast' .* > 0.*got -5"):
        sweep("ema_cross", eth_btc, {"fast": [-5, 10], "slow": [50]})
    # a grid may still hold combinations valid() skips (fast >= slow): filtered, counted
    combos, skipped = load_strategy("ema_cross").combinations({"fast": [10, 60],
                                                               "slow": [50]})
    assert combos == [{"fast": 10, "slow": 50}] and skipped == 1


def test_the_backtest_command_refuses_a_zero_window():
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "scripts/backtest.py", "--strategy", "ema_cross",
                           "--data", "mmats/data/sample/bittrex/ETH_BTC_5m.parquet",
                           "--params", "fast=0"], capture_output=True, text=True, cwd=repo,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert "parameter 'fast' of strategy 'ema_cross' must be > 0" in done.stderr
    assert "Traceback" not in done.stderr
