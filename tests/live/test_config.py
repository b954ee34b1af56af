"""The runner configuration: example files, both shapes, every error path, gating, snapshot."""

import copy
import dataclasses
import json
import re
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from mmats.data.io import resolve_source
from mmats.errors import ConfigError
from mmats.live.config import (
    RiskLimits,
    check_can_trade,
    load_config,
    parse_config,
)
from mmats.sleeve import SleeveConfig

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "configs").glob("*.yaml"))

SHORTHAND = """\
market:
  type: crypto
  feed: binance
  execution: binance
  symbols: [BTCUSDT, ETHUSDT]
risk:
  max_daily_loss: 5%
  max_pos: 3
  leverage: 2
models:
  - id: EMA_CROSS_15_60
    file: ./models/ema_cross.py
    params: {fast: 15, slow: 60}
"""


def base() -> dict:
    """A valid multi-market mapping that each error test breaks in one place."""
    return {
        "mode": "paper",
        "risk": {"max_daily_loss_pct": "5%"},
        "markets": {
            "crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                       "symbols": ["ETH/BTC"], "timeframe": "5m"},
            "forex": {"type": "forex", "feed": "fx", "symbols": ["EUR/USD"],
                      "timeframe": "1h", "risk": {"max_pos": 1}},
        },
        "models": [
            {"id": "a", "strategy": "ema_cross", "market": "crypto",
             "params": {"fast": 10, "slow": 40}},
            {"id": "b", "strategy": "rsi_reversion", "market": "forex"},
        ],
    }


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(mapping, source="configs/x.yaml") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(mapping, source=source, base_dir=REPO)
    return str(caught.value)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_load_and_their_data_exists(path):
    config = load_config(path)
    assert config.models and config.markets
    check_can_trade(config, i_understand_live_trading=False)
    for market in config.markets:
        if config.is_live_feed(market.feed):  # the tick fetches it from the venue
            assert all(config.venue(feed).exchange for feed in market.feeds)
            continue
        for symbol in market.symbols:
            located = resolve_source(f"{market.feed}:{symbol}:{market.timeframe}",
                                     root=config.data_root)
            assert located.path.is_file()


def test_examples_cover_both_shapes_and_modes():
    names = {path.name for path in EXAMPLES}
    assert {"advisory_crypto.yaml", "paper_multi_market.yaml"} <= names
    advisory = load_config(REPO / "configs" / "advisory_crypto.yaml")
    paper = load_config(REPO / "configs" / "paper_multi_market.yaml")
    assert advisory.mode == "advisory" and len(advisory.markets) == 1
    assert paper.mode == "paper"
    assert [m.name for m in paper.markets] == ["crypto", "forex", "stocks"]
    assert paper.global_risk == RiskLimits(5.0, 25.0, 5, 2.0, None)
    assert paper.market("forex").risk.max_order_notional == 10000.0
    allocations = {m.id: m.allocation for m in paper.models}
    assert allocations == {"crypto_ema_cross": 0.6, "crypto_donchian": 0.4,
                           "forex_rsi": 1.0, "stocks_ema_cross": 1.0}
    assert paper.reconcile_tolerance_pct == 0.5
    assert paper.journal == (REPO / "journal" / "paper_multi_market.sqlite")
    assert paper.lock == paper.journal.with_suffix(".lock")


def test_requirements_shorthand(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "ema_cross.py").write_text(
        (REPO / "mmats" / "strategies" / "ema_cross.py").read_text())
    config = load_config(write(tmp_path, SHORTHAND))
    (market,) = config.markets
    assert (market.name, market.type, market.feed, market.execution) == (
        "crypto", "crypto", "binance", "binance")
    assert market.symbols == ("BTCUSDT", "ETHUSDT") and market.timeframe == "1h"
    assert config.global_risk == RiskLimits(max_daily_loss_pct=5.0, max_open_positions=3,
                                            max_leverage=2.0)
    (model,) = config.models
    assert model.params == {"fast": 15, "slow": 60}
    assert model.market == "crypto" and model.symbols == market.symbols
    assert model.allocation == 1.0
    assert model.strategy == str(tmp_path / "models" / "ema_cross.py")
    assert model.sleeve == SleeveConfig()
    assert (config.mode, config.environment, config.notifications) == (
        "advisory", "dev", ("console",))
    assert config.journal == tmp_path / "journal" / "mmats.sqlite"
    assert config.stale_after_bars == 3


def test_defaults_resolve_params_and_build_the_sleeve():
    mapping = base()
    mapping["models"][0]["costs"] = {"fee_bps": 10, "slippage_model": "volatility_sqrt"}
    mapping["models"][0]["risk"] = {"max_drawdown": "12.5%", "leverage": 2, "sizing": "kelly",
                                    "allow_short": False}
    config = parse_config(mapping)
    a, b = config.models
    assert b.params == {"period": 14, "lower": 30, "upper": 70, "short": 0}
    assert a.sleeve == SleeveConfig(fee_bps=10.0, slippage_model="volatility_sqrt",
                                    max_drawdown_pct=12.5, max_leverage=2.0, sizing="kelly",
                                    allow_short=False)
    assert config.global_risk.max_daily_loss_pct == 5.0
    assert config.market("forex").risk.max_open_positions == 1
    assert config.market("forex").execution == "paper"
    assert config.source == "<dict>"
    assert len(a.strategy_hash) == 16


def test_markets_as_a_list_with_names():
    mapping = base()
    mapping["markets"] = [{"name": key, **value} for key, value in mapping["markets"].items()]
    config = parse_config(mapping)
    assert [m.name for m in config.markets] == ["crypto", "forex"]
    assert config.snapshot() == parse_config(base()).snapshot()


def _set(mapping, path, value):
    target = mapping
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


# (where to change, new value, expected key path at the start, words in the message)
CASES = [
    (("modes",), "paper", "modes", "known keys here: mode, environment"),
    (("markets", "crypto", "symbol"), ["ETH/BTC"], "markets.crypto.symbol",
     "known keys here: type, feed"),
    (("models", 0, "parms"), {}, "models[0].parms", "known keys here: id, strategy"),
    (("models", 0, "costs"), {"fee_bsp": 1}, "models[0].costs.fee_bsp", "fee_bps"),
    (("risk", "max_loss"), 3, "risk.max_loss", "max_daily_loss_pct"),
    (("mode",), "live", "mode", "advisory, paper, operator"),
    (("environment",), "staging", "environment", "dev, test, prod"),
    (("markets", "crypto", "type"), "futures", "markets.crypto.type", "crypto, forex, stocks"),
    (("markets", "crypto", "timeframe"), "5 minutes", "markets.crypto.timeframe", "'5m'"),
    (("markets", "crypto", "symbols"), "ETH/BTC", "markets.crypto.symbols", "list"),
    (("markets", "crypto", "symbols"), [True], "markets.crypto.symbols[0]", "quote"),
    (("markets", "crypto", "risk"), {"max_pos": 1.5}, "markets.crypto.risk.max_pos",
     "whole number"),
    (("stale_after_bars",), "3", "stale_after_bars", "whole number"),
    (("models", 0, "params", "fast"), "ten", "models[0].params.fast", "must be a number"),
    (("models", 0, "params", "fast"), 10.5, "models[0].params.fast", "whole numbers"),
    (("models", 0, "costs"), {"fee_bps": "10"}, "models[0].costs.fee_bps", "number"),
    (("models", 0, "costs"), {"fee_bps": -1}, "models[0].costs.fee_bps", ">= 0"),
    (("models", 0, "risk"), {"allow_short": "no"}, "models[0].risk.allow_short",
     "true or false"),
    (("models", 0, "risk"), {"sizing": "martingale"}, "models[0].risk.sizing", "kelly"),
    (("risk", "max_daily_loss_pct"), "five percent", "risk.max_daily_loss_pct", "5%"),
    (("risk", "max_daily_loss_pct"), "150%", "risk.max_daily_loss_pct", "100%"),
    (("risk", "max_drawdown_pct"), 0, "risk.max_drawdown_pct", "omit the key"),
    (("markets", "forex", "risk"), {"max_drawdown": "-5%"}, "markets.forex.risk.max_drawdown",
     "outside"),
    (("models", 0, "risk"), {"max_daily_loss": "5"}, "models[0].risk.max_daily_loss",
     "not a percentage"),
    (("risk",), {"max_leverage": 2, "leverage": 3}, "risk.leverage", "alias"),
    (("models", 0, "strategy"), "no_such_strategy", "models[0].strategy", "ema_cross"),
    (("models", 0, "strategy"), "./missing/model.py", "models[0].strategy", "does not exist"),
    (("models", 0, "params"), {"fast": 10, "fst": 3}, "models[0].params.fst",
     "known keys here: fast, slow"),
    (("models", 0, "params"), {"fast": 60, "slow": 40}, "models[0].params", "valid()"),
    (("models", 0, "market"), "stocks", "models[0].market", "crypto, forex"),
    (("models", 0, "symbols"), ["ETH/BTC", "LTC/BTC"], "models[0].symbols[1]",
     "not a symbol of market 'crypto'"),
    (("models", 0, "allocation"), 1.5, "models[0].allocation", "(0, 1]"),
    (("models", 0, "allocation"), 0, "models[0].allocation", "> 0"),
    (("models", 0, "allocation"), "120%", "models[0].allocation", "outside"),
    (("models", 1, "id"), "a", "models[1].id", "already used by models[0]"),
    (("models", 0, "id"), "has space", "models[0].id", "not a valid name"),
    (("models",), [], "models", "non-empty list"),
    (("notifications",), ["slack"], "notifications[0]", "apprise"),
    (("markets", "crypto", "api_key"), "abc", "markets.crypto.api_key", "keyring"),
    (("models", 0, "params", "secret"), "abc", "models[0].params.secret", "keyring"),
    (("notifications",), [{"url": "x", "botToken": "y"}], "notifications[0].botToken",
     "keyring"),
    (("password",), "x", "password", "keyring"),
    (("markets", "forex", "risk", "privateKey"), "x", "markets.forex.risk.privateKey",
     "secrets never go in the configuration"),
]


@pytest.mark.parametrize("where, value, key_path, words", CASES,
                         ids=[case[2] + ":" + str(case[1])[:12] for case in CASES])
def test_errors_name_the_file_and_key_path(where, value, key_path, words):
    mapping = copy.deepcopy(base())
    _set(mapping, where, value)
    message = error_of(mapping)
    assert message.startswith(f"configs/x.yaml: {key_path}: "), message
    assert words in message, message


def test_missing_pieces_and_conflicts():
    mapping = base()
    del mapping["models"][0]["market"]
    assert error_of(mapping).startswith("configs/x.yaml: models[0].market: is required")
    mapping = base()
    mapping["market"] = mapping["markets"]["crypto"]
    assert "not both" in error_of(mapping)
    mapping = base()
    del mapping["markets"]
    assert error_of(mapping).startswith("configs/x.yaml: markets: is required")
    mapping = base()
    del mapping["markets"]["crypto"]["feed"]
    assert error_of(mapping).startswith("configs/x.yaml: markets.crypto.feed: is required")
    mapping = base()
    mapping["models"][0]["file"] = "ema_cross"
    assert error_of(mapping).startswith("configs/x.yaml: models[0].file: ")
    mapping = base()
    mapping["markets"] = [{"name": "m", **mapping["markets"]["crypto"]},
                          {"name": "m", **mapping["markets"]["forex"]}]
    assert error_of(mapping).startswith("configs/x.yaml: markets[1].name: ")
    assert error_of(None).startswith("configs/x.yaml: (top level): the configuration is empty")
    assert error_of([1]).startswith("configs/x.yaml: (top level): must be a mapping")


def test_allocations_per_account():
    mapping = base()
    mapping["models"].append({"id": "c", "strategy": "ema_cross", "market": "crypto"})
    config = parse_config(mapping)
    assert [m.allocation for m in config.models] == [0.5, 1.0, 0.5]  # equal split

    mapping["models"][0]["allocation"] = 0.7
    assert error_of(mapping).startswith("configs/x.yaml: models[2].allocation: is missing")

    mapping["models"][2]["allocation"] = "40%"
    message = error_of(mapping)
    assert message.startswith("configs/x.yaml: models[2].allocation: ")
    assert "sum to 1.1" in message and "market 'crypto'" in message

    # Markets that execute on the same real venue share one account.
    mapping = base()
    mapping["markets"]["crypto"]["execution"] = "oanda"
    mapping["markets"]["forex"]["execution"] = "oanda"
    mapping["models"][0]["allocation"] = 0.6
    mapping["models"][1]["allocation"] = 0.6
    message = error_of(mapping)
    assert message.startswith("configs/x.yaml: models[1].allocation: ")
    assert "venue 'oanda'" in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, """\
        mode: paper
        market:
          type: crypto
          symbols: [ETH/BTC
        models: []
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line ")
    assert "YAML syntax error" in message
    assert int(re.search(r"line (\d+)", message).group(1)) in (4, 5)


def test_yaml_duplicate_key_names_both_lines(tmp_path):
    path = write(tmp_path, """\
        mode: paper
        risk:
          max_daily_loss: 5%
          max_daily_loss: 50%
        """)
    with pytest.raises(ConfigError, match=r"line 4, .*duplicate key 'max_daily_loss' "
                                          r"\(first on line 3\)"):
        load_config(path)


def test_missing_file_and_file_name_prefix(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.yaml")
    path = write(tmp_path, "modes: paper\n", name="bad.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: modes: unknown key")


def test_relative_paths_follow_the_config_file(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    text = SHORTHAND.replace("./models/ema_cross.py", "ema_cross")
    text += "journal: state/j.sqlite\ndata_root: /srv/candles\njournal_anchor: anchors/j.anchor\n"
    config = load_config(write(folder, text))
    assert config.journal == folder / "state" / "j.sqlite"
    assert config.lock == folder / "state" / "j.lock"
    assert config.journal_anchor == folder / "anchors" / "j.anchor"
    assert config.data_root == Path("/srv/candles")
    assert config.models[0].strategy == "ema_cross"


@pytest.mark.parametrize("mode", ["advisory", "paper"])
def test_advisory_and_paper_run_in_any_environment(mode):
    mapping = base()
    mapping["mode"] = mode
    mapping["markets"]["crypto"]["execution"] = "binance"
    for environment in ("dev", "test", "prod"):
        mapping["environment"] = environment
        check_can_trade(parse_config(mapping), i_understand_live_trading=False)


def test_operator_mode_against_a_real_venue_needs_prod_and_the_flag():
    mapping = base()
    mapping["mode"] = "operator"
    # Operator mode on paper execution is a rehearsal: allowed anywhere.
    check_can_trade(parse_config(mapping), i_understand_live_trading=False)

    mapping["markets"]["crypto"]["execution"] = "binance"
    for environment, flag in (("dev", True), ("test", True), ("prod", False), ("dev", False)):
        mapping["environment"] = environment
        config = parse_config(mapping, source="configs/live.yaml")
        with pytest.raises(ConfigError) as caught:
            check_can_trade(config, i_understand_live_trading=flag)
        message = str(caught.value)
        assert message.startswith("configs/live.yaml: mode: operator")
        assert "environment: prod" in message and "i_understand_live_trading" in message
        assert "crypto -> binance" in message
        assert ("Missing: environment: prod" in message) == (environment != "prod")
        assert ("which was not given" in message) == (not flag)
    mapping["environment"] = "prod"
    check_can_trade(parse_config(mapping), i_understand_live_trading=True)
    # a testnet (sandbox) is a rehearsal too
    mapping["environment"] = "dev"
    mapping["venues"] = {"binance": {"sandbox": True}}
    check_can_trade(parse_config(mapping), i_understand_live_trading=False)
    mapping["venues"] = {"binance": {"sandbox": False}}
    with pytest.raises(ConfigError):
        check_can_trade(parse_config(mapping), i_understand_live_trading=False)


@pytest.mark.parametrize(("venues", "key_path", "fragment"), [
    ({"binance": {"sandbox": "yes"}}, "venues.binance.sandbox", "true or false"),
    ({"binance": {"base_url": "ftp://x"}}, "venues.binance.base_url", "http(s) URL"),
    ({"binance": {"timeout_s": 0}}, "venues.binance.timeout_s", ">= 0.1"),
    ({"binance": {"api_key": "abc"}}, "venues.binance.api_key", "secret"),
    ({"binance": {"colour": "red"}}, "venues.binance.colour", "unknown key"),
    (["binance"], "venues", "mapping"),
])
def test_bad_venue_settings_are_named(venues, key_path, fragment):
    mapping = base()
    mapping["venues"] = venues
    message = error_of(mapping)
    assert key_path in message and fragment in message, message


def test_a_market_may_list_backup_feeds():
    mapping = base()
    mapping["markets"]["crypto"]["feed"] = ["binance", "kraken"]
    mapping["venues"] = {"binance": {}, "kraken": {"exchange": "kraken"}}
    config = parse_config(mapping)
    market = config.markets[0]
    assert market.feed == "binance" and market.feeds == ("binance", "kraken")
    assert config.is_live_feed("kraken") and not config.is_live_feed("bittrex")
    assert config.venue("oanda").exchange == "oanda"  # unlisted: defaults
    mapping["markets"]["crypto"]["feed"] = []
    assert "markets.crypto.feed" in error_of(mapping)


def test_snapshot_is_deterministic_canonical_and_secret_free():
    mapping = base()
    mapping["notifications"] = ["console", "tgram://123456:AAbbCC/987"]
    first = parse_config(mapping).snapshot()
    reordered = dict(reversed(list(copy.deepcopy(mapping).items())))
    reordered["models"][0]["params"] = {"slow": 40.0, "fast": 10}
    reordered["risk"] = {"max_daily_loss_pct": 5}
    assert parse_config(reordered).snapshot() == first
    assert parse_config(mapping).snapshot() == first
    assert "AAbbCC" not in first and '"tgram://***"' in first
    assert " " not in first.replace("ETH/BTC", "")
    data = json.loads(first)
    assert data["models"][0]["params"] == {"fast": 10, "slow": 40}
    assert data["models"][0]["sleeve"]["fee_bps"] == 0.0
    assert data["markets"][1]["risk"]["max_open_positions"] == 1
    mapping["models"][0]["params"]["fast"] = 11
    assert parse_config(mapping).snapshot() != first


# --- bad values stop at the door ------------------------------------------------------

@pytest.mark.parametrize("params, key_path, fragment", [
    ({"fast": -15, "slow": 60}, "models[0].params.fast", "must be > 0"),
    ({"fast": 0}, "models[0].params.fast", "must be > 0"),
    ({"fast": 2.5}, "models[0].params.fast", "whole numbers, got 2.5"),
    ({"fast": "10"}, "models[0].params.fast", "must be a number"),
    ({"fast": True}, "models[0].params.fast", "must be a number"),
    ({"fast": 60, "slow": 40}, "models[0].params", "rejects fast=60, slow=40"),
])
def test_strategy_parameters_are_checked_by_the_strategy(params, key_path, fragment):
    mapping = base()
    mapping["models"][0]["params"] = params
    message = error_of(mapping)
    assert f"{key_path}: " in message and fragment in message, message


def test_yaml_exponents_are_numbers(tmp_path):
    text = SHORTHAND.replace("./models/ema_cross.py", "ema_cross").replace(
        "leverage: 2", "leverage: 2\n  max_order_notional: 1e9")
    text = text.replace("{fast: 15, slow: 60}", "{fast: 1.5e1, slow: 6E+1}")
    config = load_config(write(tmp_path, text))
    assert config.global_risk.max_order_notional == 1e9
    assert config.models[0].params == {"fast": 15, "slow": 60}
    assert yaml.safe_load("x: 1e9") == {"x": "1e9"}  # the stock loader is left alone


def test_a_billion_laughs_fails_fast(tmp_path):
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = write(tmp_path, "\n".join(lines) + "\nmode: *l9\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than .* aliases"):
        load_config(path)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ConfigError, match="recursive"):
        load_config(write(tmp_path, "risk: &r [1, *r]\n", name="loop.yaml"))
    small = write(tmp_path, SHORTHAND.replace("./models/ema_cross.py", "ema_cross")
                  .replace("risk:\n", "risk: &limits\n") + "mode: advisory\n", name="ok.yaml")
    assert load_config(small).mode == "advisory"  # anchors themselves are fine


def test_the_lock_belongs_to_the_journal(tmp_path):
    mapping = base()
    mapping["journal"] = str(tmp_path / "shared.sqlite")
    mapping["lock"] = str(tmp_path / "mine.lock")
    message = error_of(mapping)
    assert "configs/x.yaml: lock: is no longer a setting" in message
    assert "beside the journal" in message
    del mapping["lock"]
    first = parse_config(mapping)
    other = copy.deepcopy(mapping)
    other["mode"] = "advisory"
    assert parse_config(other).lock == first.lock == tmp_path / "shared.lock"
    moved = dataclasses.replace(first, journal=tmp_path / "replay.sqlite")
    assert moved.lock == tmp_path / "replay.lock"
    assert moved.journal_anchor == tmp_path / "replay.sqlite.anchor"  # as Journal() puts it


def test_journal_anchor_defaults_beside_the_journal_and_is_snapshotted(tmp_path):
    mapping = base()
    mapping["journal"] = str(tmp_path / "j.sqlite")
    config = parse_config(mapping)
    assert config.journal_anchor == tmp_path / "j.sqlite.anchor"
    assert json.loads(config.snapshot())["journal_anchor"] == str(tmp_path / "j.sqlite.anchor")
    mapping["journal_anchor"] = "/srv/offsite/j.anchor"
    assert parse_config(mapping).journal_anchor == Path("/srv/offsite/j.anchor")
    assert json.loads(parse_config(mapping).snapshot())["journal_anchor"] == (
        "/srv/offsite/j.anchor")
    mapping["journal_anchor"] = 3
    assert "journal_anchor: must be" in error_of(mapping)


# --- one model: the file says what Python says -----------------------------------------

@pytest.mark.parametrize("block, key, value", [
    ("costs", "fee_bps", "10"), ("costs", "fee_bps", True), ("costs", "slippage_bps", 1e5),
    ("costs", "slippage_model", "linear"), ("risk", "kelly_min_trades", 2.5),
    ("risk", "max_drawdown", "150%"), ("risk", "max_drawdown_pct", "15"),
    ("risk", "leverage", 0), ("risk", "allow_short", "no"), ("risk", "sizing", 3),
])
def test_a_models_risk_and_costs_are_checked_by_the_sleeves_model(block, key, value):
    """A model's risk:/costs: value is refused in the words SleeveConfig(...) uses (the
    Python message names the setting and may add an example; the file's names the key path)."""
    mapping = base()
    mapping["models"][0][block] = {key: value}
    message = error_of(mapping)
    with pytest.raises(ConfigError) as python:
        SleeveConfig(**{key: value})
    words = str(python.value).removeprefix(f"{key} ").split("; e.g. ")[0]
    assert message == f"configs/x.yaml: models[0].{block}.{key}: {words}"


def test_every_problem_of_the_shape_is_listed_with_its_key_path():
    mapping = base()
    mapping["mode"] = "live"
    mapping["stale_after_bars"] = 0
    mapping["models"][1]["costs"] = {"fee_bps": -1}
    mapping["markets"]["crypto"]["risk"] = {"max_pos": "3"}
    lines = error_of(mapping).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["mode", "stale_after_bars"]
    assert all(line.startswith("configs/x.yaml: ") for line in lines)
    del mapping["mode"], mapping["stale_after_bars"]  # then the markets, then the models
    assert error_of(mapping) == ("configs/x.yaml: markets.crypto.risk.max_pos: must be a whole "
                                 "number, got '3'")
    del mapping["markets"]["crypto"]["risk"]
    assert error_of(mapping).startswith("configs/x.yaml: models[1].costs.fee_bps: must be a "
                                        "finite number >= 0")


ODD_VALUES = [None, True, 0, -1, 1e400, float("nan"), "", " ", "x", "5%", [], [None], {},
              {"x": 1}, {1: 2}, ("t",), object()]
PLACES = [("mode",), ("risk",), ("risk", "max_pos"), ("markets",), ("markets", "crypto"),
          ("markets", "crypto", "feed"), ("markets", "crypto", "symbols"),
          ("markets", "crypto", "risk"), ("markets", "crypto", "timeframe"), ("models",),
          ("models", 0), ("models", 0, "id"), ("models", 0, "params"),
          ("models", 0, "params", "fast"), ("models", 0, "symbols"),
          ("models", 0, "allocation"), ("models", 0, "risk"), ("models", 0, "costs"),
          ("models", 0, "costs", "fee_bps"), ("models", 0, "risk", "sizing"),
          ("notifications",), ("venues",), ("venues", "binance"),
          ("venues", "binance", "timeout_s"), ("journal",), ("reconcile_tolerance_pct",)]


@pytest.mark.parametrize("where", PLACES, ids=lambda where: ".".join(map(str, where)))
def test_odd_values_give_a_config_error_never_a_pydantic_one(where):
    for value in ODD_VALUES:
        mapping = base()
        mapping["venues"] = {"binance": {}}
        mapping["models"][0].update(costs={"fee_bps": 1}, risk={"sizing": "kelly"})
        _set(mapping, where, copy.copy(value))
        try:
            parse_config(mapping, source="configs/x.yaml", base_dir=REPO)
        except ConfigError as error:
            assert str(error).startswith("configs/x.yaml: "), (where, value, error)
            assert "pydantic" not in str(error) and "Input should" not in str(error), error


def test_risk_limits_built_in_python_are_checked_too():
    limits = RiskLimits("5%", 25, 5, 2, None)
    assert limits == RiskLimits(max_daily_loss=5.0, max_drawdown=25.0, max_pos=5, leverage=2.0)
    assert dataclasses.replace(limits, max_drawdown_pct=0.3).max_drawdown_pct == 0.3
    for settings, says in (({"max_pos": 1.5}, "^max_pos must be a whole number, got 1.5"),
                           ({"max_drawdown_pct": 0}, "^max_drawdown_pct 0 is outside"),
                           ({"leverage": "2"}, r"^leverage must be a number, got '2' \(str\)"),
                           ({"colour": 1}, "^unknown setting 'colour'")):
        with pytest.raises(ConfigError, match=says):
            RiskLimits(**settings)
