"""SleeveConfig, the one model of a sleeve's settings: Python keywords, the command line's
settings dict and (tests/live/test_config.py) the live configuration are checked by it, and a
bad value is a ConfigError naming the setting, never a pydantic error."""

import dataclasses
import pickle

import numpy as np
import pytest

from mmats.backtest import sleeve_config
from mmats.errors import ConfigError
from mmats.sleeve import SleeveConfig

# What the command line's settings_from(args) passes to backtest/sweep/run_research.
CLI_SETTINGS = {
    "fee_bps": 10.0, "slippage_bps": 2.0, "slippage_model": "fixed", "impact_coef": 1.0,
    "max_participation": 0.0, "sizing": "fixed_fraction", "fraction": 1.0, "vol_target": 0.2,
    "lot_size": 0.0, "min_notional": 0.0, "max_leverage": 1.0, "max_daily_loss_pct": 0.0,
    "max_drawdown_pct": 0.0, "allow_short": True,
}


@pytest.mark.parametrize("settings, message", [
    ({"fee_bps": "10"}, r"^fee_bps must be a number, got '10' \(str\); e\.g\. fee_bps=0\.0$"),
    ({"slippage_bps": True}, r"^slippage_bps must be a number, got True \(bool\)"),
    ({"fraction": None}, r"^fraction must be a number, got None"),
    ({"fee_bps": -1}, r"^fee_bps must be a finite number >= 0 and < 10000, got -1$"),
    ({"fee_bps": 10_000}, r"< 10000, got 10000"),
    ({"vol_target": float("nan")}, r"^vol_target must be a finite number >= 0, got nan"),
    ({"max_leverage": 0}, r"^max_leverage must be a finite number > 0, got 0"),
    ({"kelly_min_trades": 2.5}, r"^kelly_min_trades must be a whole number, got 2\.5"),
    ({"max_drawdown_pct": 150}, r"^max_drawdown_pct 150 is outside \[0%, 100%\]"),
    ({"max_drawdown_pct": "25"}, r"^max_drawdown_pct '25' is not a percentage; write e\.g\. 5%"),
    ({"max_daily_loss_pct": True}, r"^max_daily_loss_pct must be a percentage such as 5%"),
    ({"sizing": "martingale"}, r"^sizing 'martingale' is not allowed; use one of .*kelly"),
    ({"slippage_model": 1}, r"^slippage_model must be one of fixed, volatility_sqrt"),
    ({"allow_short": "no"}, r"^allow_short must be true or false, got 'no'"),
    ({"fees": 10}, r"^unknown setting 'fees'; known settings: allow_short, confidence_step, fee_bps, "),
    ({"leverage": 2, "max_leverage": 3}, r"^leverage sets max_leverage a second time"),
])
def test_a_bad_setting_is_named_on_every_python_path(settings, message):
    for build in (lambda: SleeveConfig(**settings), lambda: SleeveConfig.from_mapping(settings),
                  lambda: sleeve_config(None, settings), lambda: sleeve_config(settings, {}),
                  lambda: sleeve_config(SleeveConfig(), settings)):
        with pytest.raises(ConfigError, match=message):
            build()


def test_every_problem_is_listed_one_per_line():
    with pytest.raises(ConfigError) as caught:
        SleeveConfig(fee_bps="a", slippage_bps=-1)
    lines = str(caught.value).splitlines()
    assert [line.split()[0] for line in lines] == ["fee_bps", "slippage_bps"]


def test_positional_settings_are_named():
    with pytest.raises(ConfigError, match=r"^fee_bps must be a number, got 'x'"):
        SleeveConfig("x")
    with pytest.raises(ConfigError, match="takes at most 21 settings by position"):
        SleeveConfig(*range(25))


def test_the_command_lines_settings_go_through_the_model():
    config = sleeve_config(None, CLI_SETTINGS)
    assert config == SleeveConfig(fee_bps=10, slippage_bps=2)
    with pytest.raises(ConfigError, match="^fee_bps must be a finite number >= 0"):
        sleeve_config(None, {**CLI_SETTINGS, "fee_bps": -3.0})  # --fee-bps -3


def test_values_are_normalised_and_the_configuration_names_are_read():
    config = SleeveConfig(fee_bps=np.int64(10), max_drawdown_pct="12.5%", leverage=2,
                          max_daily_loss=" 5 %", kelly_min_trades=30.0, allow_short=np.False_)
    assert (config.fee_bps, config.max_drawdown_pct, config.max_leverage,
            config.max_daily_loss_pct, config.kelly_min_trades, config.allow_short) == (
        10.0, 12.5, 2.0, 5.0, 30, False)
    assert type(config.fee_bps) is float and type(config.kelly_min_trades) is int
    assert type(config.allow_short) is bool
    assert SleeveConfig(max_drawdown_pct=0).max_drawdown_pct == 0.0  # 0: no limit
    assert config.to_dict()["max_leverage"] == 2.0 and "leverage" not in config.to_dict()


def test_it_stays_a_frozen_dataclass():
    config = SleeveConfig(fee_bps=10)
    assert [field.name for field in dataclasses.fields(config)][:3] == [
        "fee_bps", "slippage_bps", "slippage_model"]
    assert dataclasses.replace(config, slippage_bps=3) == SleeveConfig(fee_bps=10,
                                                                       slippage_bps=3)
    with pytest.raises(ConfigError, match="^slippage_bps must be a number"):
        dataclasses.replace(config, slippage_bps="3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fee_bps = 1.0
    assert pickle.loads(pickle.dumps(config)) == config
    assert hash(config) == hash(SleeveConfig(fee_bps=10.0))
    record = config.to_record(8760.0)[0]
    assert record["fee_bps"] == 10.0 and record["kelly_min_trades"] == 20
