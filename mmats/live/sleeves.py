"""The sleeves of a configuration: one model on one symbol, with its kernel settings.

Every part of the live wing (the tick, its wiring, the controls, the replay) starts from
:func:`sleeves`; it sits below them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmats.data.calendar import periods_per_year
from mmats.live.config import RunnerConfig
from mmats.live.inputs import other_series, other_symbols
from mmats.strategy import Strategy, load_strategy

# the trading calendar of each market type (mmats.data.calendar)
CALENDAR_OF_MARKET = {"crypto": "24/7", "forex": "forex", "stocks": "stocks"}


@dataclass(frozen=True)
class Sleeve:
    """One model on one symbol: its strategy, kernel settings and starting cash."""

    id: str
    model_id: str
    symbol: str
    market: str
    timeframe: str
    strategy: Strategy
    params: dict
    cfg: np.ndarray  # the CONFIG_DTYPE record the kernel reads
    cash: float
    lookback: int = 0  # bars of history the tick feeds the strategy (its lookback())
    resolved_params: dict | None = None  # params as strategy.resolve_params returns them
    size_by_confidence: bool = False  # the model sizes by its strategy's confidence
    confidence_step: float = 0.0  # ... rounded down to steps of this (0: none)
    other_symbols: tuple[str, ...] = ()  # other symbols its inputs read (mmats.live.inputs)
    other_series: tuple[tuple, ...] = ()  # (venue, symbol, timeframe) of other venues / tfs
    sentiment: tuple | None = None  # (source, SentimentRule): news lowering and capping it

    def signal_on(self, window: dict[str, np.ndarray]):
        """The strategy's checked output on ``window`` (its parameters resolved once)."""
        if self.resolved_params is None:
            return self.strategy.run(window, self.params)
        return self.strategy.run_resolved(window, self.resolved_params)


def sleeves(config: RunnerConfig, cash: float) -> list[Sleeve]:
    """The sleeves of a configuration. Each market is an account of ``cash``; a model
    gets its allocation of it, split evenly over its symbols.

    >>> [s.id for s in sleeves(config, 10_000.0)]  # doctest: +SKIP
    ['ema:ETH/BTC', 'donchian:ETH/BTC']
    """
    key = (id(config), cash)
    made = _MADE.get(key)
    if made is None or made[0] is not config:  # a configuration is frozen: made once
        made = _MADE[key] = (config, _sleeves(config, cash))
        while len(_MADE) > _MADE_KEPT:
            del _MADE[next(iter(_MADE))]
    return list(made[1])


_MADE: dict[tuple[int, float], tuple[RunnerConfig, list[Sleeve]]] = {}
_MADE_KEPT = 16  # configurations whose sleeves are kept (a replay ticks one many times)


def _sleeves(config: RunnerConfig, cash: float) -> list[Sleeve]:
    result = []
    for model in config.models:
        market = config.market(model.market)
        calendar = CALENDAR_OF_MARKET[market.type]
        record = model.sleeve.to_record(periods_per_year(market.timeframe, calendar))
        caps = [c for c in (model.sleeve.max_order_notional,
                            config.global_risk.max_order_notional,
                            market.risk.max_order_notional) if c]
        record["max_order_notional"] = min(caps) if caps else 0.0
        strategy = _strategy(model)
        for symbol in model.symbols:
            others = other_symbols(strategy, venue=market.feed, symbol=symbol,
                                   timeframe=market.timeframe, model_id=model.id)
            series = other_series(strategy, venue=market.feed, symbol=symbol,
                                  timeframe=market.timeframe, model_id=model.id)
            result.append(Sleeve(
                id=f"{model.id}:{symbol}", model_id=model.id, symbol=symbol,
                market=market.name, timeframe=market.timeframe,
                strategy=strategy, params=dict(model.params), cfg=record,
                cash=cash * model.allocation / len(model.symbols),
                lookback=strategy.lookback(model.params),
                resolved_params=strategy.resolve_params(model.params),
                size_by_confidence=bool(model.sleeve.size_by_confidence),
                confidence_step=float(model.sleeve.confidence_step),
                other_symbols=tuple(others), other_series=tuple(series),
                sentiment=_sentiment(model)))
    return result


def _sentiment(model) -> tuple | None:
    if not model.sentiment:
        return None
    from mmats.data.sentiment import SentimentRule

    rule = {k: v for k, v in model.sentiment.items() if k != "source"}
    return model.sentiment["source"], SentimentRule.from_dict(rule)


def extra_symbols(config: RunnerConfig, market_name: str) -> list[str]:
    """The symbols a market's feed must also serve: those its sleeves' extra inputs read
    beside the market's own."""
    own = set(config.market(market_name).symbols)
    extra = []
    for sleeve in sleeves(config, 1.0):
        if sleeve.market == market_name:
            extra += [s for s in sleeve.other_symbols if s not in own and s not in extra]
    return extra


def extra_series(config: RunnerConfig) -> list[tuple]:
    """Every series ``(venue, symbol, timeframe)`` the sleeves' extra inputs read from
    another venue or at another timeframe than their market's."""
    out = []
    for sleeve in sleeves(config, 1.0):
        out += [key for key in sleeve.other_series if key not in out]
    return out


_LOADED: dict[tuple[str, str], Strategy] = {}


def _strategy(model) -> Strategy:
    """The model's strategy, loaded once per process (a loop or a replay ticks many
    times); keyed by the file's hash too, so an edited strategy is loaded again."""
    key = (str(model.strategy), model.strategy_hash)
    if key not in _LOADED:
        _LOADED[key] = load_strategy(model.strategy)
    return _LOADED[key]
