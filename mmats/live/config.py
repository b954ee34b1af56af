"""The live runner's configuration: a YAML file (the Athena DSL) read into frozen dataclasses.

Two shapes are accepted. The single-market shorthand of the requirements::

    market: {type: crypto, feed: binance, execution: binance, symbols: [BTCUSDT]}
    risk: {max_daily_loss: 5%, max_pos: 3, leverage: 2}
    models:
      - {id: EMA_CROSS_15_60, file: ./models/ema_cross.py, params: {fast: 15, slow: 60}}

and the multi-market form: ``markets:`` (a list of markets with ``name:``, or a mapping
from name to market), each with its own ``risk:``, a global ``risk:``, and models that
name their ``market:``. See ``configs/*.yaml`` for complete examples.

The file's shape is a pydantic model (``_File`` and its blocks, below), sharing its value
checks and wording with :class:`~mmats.sleeve.SleeveConfig`, which checks a model's ``risk:``
and ``costs:`` exactly as it checks ``backtest(..., fee_bps=10)``; :class:`_Reader` adds what
a model cannot say (secrets anywhere, strategies and their parameters, references between
models and markets, allocations per account, paths).

Rules worth knowing:

- Every error is a :class:`~mmats.errors.ConfigError` whose message starts with the file
  name and the key path (``configs/x.yaml: models[0].params.fast: ...``).
- Unknown keys are errors; keys that look like secrets (api_key, secret, password, token,
  private_key, ...) are rejected anywhere: keys live in the OS keyring or the environment.
- ``environment: dev | test | prod`` separates: a configuration reads only its own
  environment's keys, uses only a journal, anchor and candle store of its environment and
  tags every notification with it (:mod:`mmats.live.environments`); real orders need prod.
- ``*_pct`` values are percentages: ``5%`` and ``5`` both mean five percent.
- Relative paths (journal, journal_anchor, data_root, strategy files) are relative to the
  config file's folder, so a cron job started from any directory reads the same files.
- The tick lock belongs to the journal, not to a configuration: it is always
  ``<journal>.lock`` (the journal's suffix replaced), so two configurations writing one
  journal can never tick at once. A ``lock:`` key is refused.
- ``allocation`` is a fraction of the equity of the account a model trades: the models of
  one market share that market's account (and markets executing on the same real venue
  share one account), so their allocations may sum to at most 1.

Example::

    config = load_config("configs/paper_multi_market.yaml")
    check_can_trade(config, i_understand_live_trading=False)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import pydantic.dataclasses
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from mmats.data.calendar import timeframe_ns
from mmats.errors import ConfigError, StrategyError
from mmats.live.inputs import other_symbols, sentiment_setting
from mmats.live.notify import Targets
from mmats.live.yaml_text import read_yaml
from mmats.redact import redact_url
from mmats.secrets import ENVIRONMENTS
from mmats.sleeve import (
    Flag,
    Name,
    Settings,
    SleeveConfig,
    Text,
    aliased,
    as_choice,
    as_name,
    as_number,
    as_percent,
    as_text,
    as_whole_number,
    check,
    file_error,
    key_path,
    keys_problem,
    refuse,
    setting_keys,
)
from mmats.strategy import load_strategy

MODES = ("advisory", "paper", "operator")
TICK_STREAMS = ("trades", "book_ticker")
MARKET_TYPES = ("crypto", "forex", "stocks")
PAPER_EXECUTION = "paper"

_COST_KEYS = ("fee_bps", "slippage_bps", "slippage_model", "impact_coef", "max_participation",
              "lot_size", "min_notional")
_SLEEVE_RISK_KEYS = {key: name for key, name in setting_keys(SleeveConfig).items()
                     if name not in _COST_KEYS}
_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "passphrase", "token", "tokens",
                 "apikey", "privatekey", "credential", "credentials"}
_SECRET_PAIRS = {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")}
_EPSILON = 1e-9

_Limit = Annotated[float, check(as_number, above=0)]
_LimitPercent = Annotated[float, check(as_percent)]  # (0, 100]: omit the key for no limit


@pydantic.dataclasses.dataclass(frozen=True)
class RiskLimits(Settings):
    """Limits of one level of the risk hierarchy (global or market); None means no limit.

    Percentages are in percent (5.0 is 5 %; ``"5%"`` is read as 5.0);
    ``max_order_notional`` is in the quote currency of the account. The configuration's
    short names (``max_daily_loss``, ``max_drawdown``, ``max_pos``, ``max_positions``,
    ``leverage``) are read too.
    """

    max_daily_loss_pct: _LimitPercent | None = aliased(None, "max_daily_loss_pct",
                                                       "max_daily_loss")
    max_drawdown_pct: _LimitPercent | None = aliased(None, "max_drawdown_pct", "max_drawdown")
    max_open_positions: Annotated[int, check(as_whole_number, minimum=1)] | None = aliased(
        None, "max_open_positions", "max_pos", "max_positions")
    max_leverage: _Limit | None = aliased(None, "max_leverage", "leverage")
    max_order_notional: _Limit | None = None


@dataclass(frozen=True)
class VenueConfig:
    """How to reach a venue: its ccxt exchange id (or ``oanda``), the testnet/practice
    switch and an optional base URL (a proxy, or the tests' local servers). Keys are not
    here: they live in the OS keyring or the encrypted secrets file (``mmats keys``), in
    the namespace of ``environment``, the configuration's (its only keys the adapter reads)."""

    name: str
    exchange: str
    sandbox: bool = False
    base_url: str | None = None
    timeout_s: float = 10.0
    stream: bool = True  # under --serve, bars come from the venue's stream (REST fills gaps)
    stream_url: str | None = None  # the stream's base URL: a proxy, or the tests' servers
    ticks: str | None = None  # keep the stream's ticks too: "trades" or "book_ticker"
    environment: str = "dev"  # the configuration's: whose keys the adapter reads

    def stream_settings(self) -> dict:
        """The streaming keys that differ from their defaults (older snapshots stay equal)."""
        return {key: value for key, value, default in (
            ("stream", self.stream, True), ("stream_url", self.stream_url, None),
            ("ticks", self.ticks, None)) if value != default}


@dataclass(frozen=True)
class MarketConfig:
    """One market: where its candles come from, where its orders go, what it trades.
    ``backup_feeds`` take over, in order, when the feed errors or goes stale."""

    name: str
    type: str
    feed: str
    execution: str
    symbols: tuple[str, ...]
    timeframe: str
    risk: RiskLimits = RiskLimits()
    backup_feeds: tuple[str, ...] = ()

    @property
    def feeds(self) -> tuple[str, ...]:
        return (self.feed, *self.backup_feeds)

    @property
    def is_paper(self) -> bool:
        return self.execution == PAPER_EXECUTION


@dataclass(frozen=True)
class ModelConfig:
    """One model: a strategy with resolved parameters, trading symbols of one market."""

    id: str
    strategy: str
    params: dict[str, Any]
    market: str
    symbols: tuple[str, ...]
    allocation: float
    sleeve: SleeveConfig
    strategy_hash: str = ""
    strategy_version: str = ""  # an installed model package's version (mmats.packages)
    sentiment: dict | None = None  # {"source": file|folder|URL, and the rule's keys}


@dataclass(frozen=True)
class TelegramConfig:
    """The Telegram bot's allow-list (``telegram:``): the chats whose commands it answers,
    and how long a ``/kill`` confirmation code stays valid. The bot's token is not here:
    it lives in the secrets store (``mmats keys set telegram --fields token``)."""

    chat_ids: tuple[int, ...]
    confirm_timeout_s: float = 60.0


@dataclass(frozen=True)
class RunnerConfig:
    """Everything the live runner needs, validated. Build with :func:`load_config`."""

    mode: str
    environment: str
    global_risk: RiskLimits
    markets: tuple[MarketConfig, ...]
    models: tuple[ModelConfig, ...]
    notifications: tuple[str, ...] = ("console",)
    journal: Path = Path("journal/mmats.sqlite")
    data_root: Path = Path("data")
    anchor_path: Path | None = None  # the journal_anchor: key; None: beside the journal
    stale_after_bars: int = 3
    reconcile_tolerance_pct: float = 0.5
    venues: tuple[VenueConfig, ...] = ()
    heartbeat_s: float = 10.0  # a stream silent this long is reconnected (--serve)
    telegram: TelegramConfig | None = None  # the telegram: block; None: no chat control
    source: str = "<dict>"

    def __post_init__(self):
        """The environment reaches what is built from the configuration: every venue reads
        its keys (and every notification is tagged) as the configuration's environment,
        also after ``dataclasses.replace(config, environment=...)``."""
        venues = tuple(venue if venue.environment == self.environment else
                       replace(venue, environment=self.environment) for venue in self.venues)
        object.__setattr__(self, "venues", venues)
        object.__setattr__(self, "notifications", Targets(self.notifications, self.environment))

    @property
    def lock(self) -> Path:
        """The tick lock: beside the journal (``<journal>.lock``), whatever the config."""
        return self.journal.with_suffix(".lock")

    @property
    def journal_anchor(self) -> Path:
        """Where the journal's anchor lives: ``journal_anchor:``, else
        ``<journal>.anchor`` (where :class:`~mmats.live.journal.Journal` puts it by default)."""
        return self.anchor_path or self.journal.with_name(self.journal.name + ".anchor")

    def venue(self, name: str) -> VenueConfig:
        """The venue called ``name``: as configured under ``venues:``, else the ccxt
        exchange (or OANDA) of that name with default settings."""
        for venue in self.venues:
            if venue.name == name:
                return venue
        return VenueConfig(name=name, exchange=name, environment=self.environment)

    def is_live_feed(self, name: str) -> bool:
        """Whether the runner fetches this feed's candles itself (it is listed under
        ``venues:``); other feeds are store folders filled by imports or fetch_data.py."""
        return any(venue.name == name for venue in self.venues)

    def market(self, name: str) -> MarketConfig:
        for market in self.markets:
            if market.name == name:
                return market
        raise ConfigError(f"{self.source}: no market named {name!r}; markets: "
                          f"{', '.join(m.name for m in self.markets)}")

    def snapshot(self) -> str:
        """Canonical JSON of the configuration for the journal: sorted keys, no spaces,
        credentials inside URLs (notifications, venues' ``base_url``) masked by
        :func:`mmats.redact.redact_url`."""
        data = {
            "mode": self.mode,
            "environment": self.environment,
            "global_risk": asdict(self.global_risk),
            "markets": [{**asdict(m), "symbols": list(m.symbols)} for m in self.markets],
            "models": [
                {"id": m.id, "strategy": m.strategy, "strategy_hash": m.strategy_hash,
                 **({"strategy_version": m.strategy_version} if m.strategy_version else {}),
                 "params": m.params, "market": m.market, "symbols": list(m.symbols),
                 "allocation": m.allocation, "sleeve": m.sleeve.to_dict(),
                 **({"sentiment": {**m.sentiment, "source": redact_url(m.sentiment["source"])}}
                    if m.sentiment else {})}
                for m in self.models
            ],
            "notifications": [redact_url(url) for url in self.notifications],
            "journal": str(self.journal),
            "data_root": str(self.data_root),
            "lock": str(self.lock),
            "journal_anchor": str(self.journal_anchor),
            "stale_after_bars": self.stale_after_bars,
            "reconcile_tolerance_pct": self.reconcile_tolerance_pct,
            "venues": [{**{k: val for k, val in asdict(v).items()
                           if k not in ("stream", "stream_url", "ticks", "environment")},
                        **v.stream_settings(),
                        "base_url": None if v.base_url is None else redact_url(v.base_url)}
                       | ({"stream_url": redact_url(v.stream_url)} if v.stream_url else {})
                       for v in self.venues],
        }
        if self.heartbeat_s != 10.0:  # left out at its default: older snapshots stay equal
            data["heartbeat_s"] = self.heartbeat_s
        if self.telegram is not None:  # left out when absent: older snapshots stay equal
            data["telegram"] = {**asdict(self.telegram),
                                "chat_ids": list(self.telegram.chat_ids)}
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def refresh_models(config: RunnerConfig) -> RunnerConfig:
    """``config`` with each model package's active version (an always-on runner calls it
    before every tick, so a version added or activated meanwhile decides from the next
    tick, as a cron runner's fresh load would). The parameters are checked again by the
    new version; a disabled or broken package raises, and the tick fails loudly."""
    models = []
    for model in config.models:
        if model.strategy_version:
            strategy = load_strategy(model.strategy)
            if (strategy.source_hash, strategy.version) != (model.strategy_hash,
                                                             model.strategy_version):
                try:
                    strategy.resolve_params(model.params)
                except ConfigError as error:
                    raise ConfigError(f"model {model.id!r}: {model.strategy} "
                                      f"{strategy.version}: {error}") from None
                model = replace(model, strategy_hash=strategy.source_hash,
                                strategy_version=strategy.version)
        models.append(model)
    return replace(config, models=tuple(models))


def load_config(path: str | os.PathLike) -> RunnerConfig:
    """Read and validate a YAML configuration file.

    >>> load_config("configs/advisory_crypto.yaml").mode
    'advisory'
    """
    source = str(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{source}: cannot read the configuration: {error}") from None
    mapping = read_yaml(text, source)
    return parse_config(mapping, source=source, base_dir=file.resolve().parent)




def parse_config(mapping: Any, source: str = "<dict>",
                 base_dir: str | os.PathLike | None = None) -> RunnerConfig:
    """Validate an already-parsed mapping; relative paths resolve against ``base_dir``
    (default: the current directory)."""
    return _Reader(source, Path(base_dir) if base_dir is not None else Path.cwd()).config(mapping)


def check_can_trade(config: RunnerConfig, i_understand_live_trading: bool,
                    mode: str | None = None) -> None:
    """Refuse to start operator mode if any order could reach real money unmeant.

    Orders may go without further ado only to the paper venue (``execution: paper``), a
    loopback ``base_url`` (127.0.0.0/8, ::1, ``localhost``; no DNS) or the sandbox the
    venue's library names (``sandbox: true`` and no ``base_url``: ccxt's ``urls['test']``,
    OANDA practice). Any other endpoint is real, whatever the labels say, and needs
    ``environment: prod`` and the explicit ``i_understand_live_trading`` flag. Advisory and
    paper modes place no real orders and run in any environment. ``mode`` overrides the
    configuration's (the command line's ``--mode``). The same rule guards every adapter's
    ``send`` (:mod:`mmats.brokers.connect`).
    """
    if (mode or config.mode) != "operator":
        return
    from mmats.brokers.connect import refusal

    for market in config.markets:
        problem = refusal(config, market, i_understand_live_trading)
        if problem:
            raise ConfigError(f"{config.source}: {problem} Use mode: paper or execution: "
                              "paper to trade without money.")


# --- the file's shape ---------------------------------------------------------------------

def _non_empty_list(value, *, what: str):
    if not isinstance(value, list | tuple) or not value:
        refuse("list", f"must be {what}, got {value!r}")
    return value


def _unique(values: tuple) -> tuple:
    for index, item in enumerate(values):
        if item in values[:index]:
            refuse("unique", f"{item!r} is listed twice", (index,))
    return values


def _feeds(value) -> list:
    """``feed:`` is a name, or a list of one to three (the primary first, then backups)."""
    if not isinstance(value, list):
        return [as_name(value)]
    if not 1 <= len(value) <= 3:
        refuse("feeds", f"must be a feed name or a list of one to three (primary first), got "
                        f"{value!r}")
    return value


def _timeframe(value) -> str:
    text = as_text(value)
    try:
        timeframe_ns(text)
    except ConfigError as error:
        refuse("timeframe", str(error))
    return text


def _allocation(value) -> float:
    """A fraction of the account's equity in (0, 1]: ``0.5`` or ``50%``."""
    if isinstance(value, str):
        fraction = as_percent(value, allow_zero=True) / 100
    else:
        fraction = as_number(value, above=0)
    if not 0 < fraction <= 1:
        refuse("allocation", f"{value!r} is outside (0, 1]; it is a fraction of the account's "
                             "equity: write 0.5 or 50%")
    return fraction


def _notification(value) -> str:
    text = as_text(value)
    if text != "console" and "://" not in text:
        refuse("notification", f"{text!r} is neither console nor an apprise-style URL "
                               "(scheme://...); put tokens in ${ENV_VARS}, not in the file")
    return text


def _url(value) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        refuse("url", f"must be an http(s) URL, got {value!r}")
    return value


def _stream_url(value) -> str:
    if not isinstance(value, str) or not value.startswith(("ws://", "wss://", "http://",
                                                           "https://")):
        refuse("url", f"must be a ws(s) or http(s) URL, got {value!r}")
    return value


def _block_keys(value, *, keys) -> dict:
    """A model's ``risk:`` or ``costs:``: its keys here, its values by SleeveConfig."""
    value = {} if value is None else value
    problem = keys_problem(value, keys)
    if problem:
        refuse("keys", problem[1], problem[0])
    return value


def _chat_id(value) -> int:
    """A Telegram chat id: a whole number (a group's is negative), not text."""
    if not isinstance(value, int) or isinstance(value, bool):
        refuse("chat_id", f"must be a chat id, a whole number such as 123 or -100456, got "
                          f"{value!r}")
    return value


_Symbols = Annotated[tuple[Text, ...], check(_non_empty_list, what="a non-empty list, e.g. "
                                             "[ETH/BTC]"), AfterValidator(_unique)]


class _Block(BaseModel):
    """A block of the file. Its keys are checked first (an unknown one is named with the keys
    known here); an empty block (``risk:`` and nothing under it) is an empty mapping."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, values):
        return _block_keys(values, keys=setting_keys(cls))


class _Venue(_Block):
    """A venue under ``venues:``, named by its key; ``exchange`` defaults to that name."""

    exchange: Name | None = None
    sandbox: Flag = False
    base_url: Annotated[str, BeforeValidator(_url)] | None = None
    timeout_s: Annotated[float, check(as_number, minimum=0.1)] = 10.0
    stream: Flag = True
    stream_url: Annotated[str, BeforeValidator(_stream_url)] | None = None
    ticks: Annotated[str, check(as_choice, allowed=TICK_STREAMS)] | None = None


class _Market(_Block):
    """A market of the ``markets:`` mapping, named by its key."""

    type: Annotated[str, check(as_choice, allowed=MARKET_TYPES)]
    feed: Annotated[tuple[Name, ...], BeforeValidator(_feeds)]
    execution: Name = PAPER_EXECUTION
    symbols: _Symbols
    timeframe: Annotated[str, BeforeValidator(_timeframe)] = "1h"
    risk: RiskLimits = RiskLimits()


class _NamedMarket(_Market):
    """The ``market:`` of the shorthand, or one of a ``markets:`` list: ``name:`` defaults
    to its type."""

    name: Name | None = None


class _Telegram(_Block):
    """``telegram:``: the chats the bot answers and the life of a /kill confirmation code."""

    chat_ids: Annotated[tuple[Annotated[int, BeforeValidator(_chat_id)], ...],
                        check(_non_empty_list, what="a non-empty list of chat ids such as "
                              "[123, -100456]"), AfterValidator(_unique)]
    confirm_timeout_s: Annotated[float, check(as_number, minimum=1)] = 60.0


class _Model(_Block):
    """One of ``models:``; its ``params:`` are checked by its strategy."""

    id: Name
    strategy: Text | None = None
    file: Text | None = None
    params: Any = None
    market: Text | None = None
    symbols: _Symbols | None = None
    allocation: Annotated[float, BeforeValidator(_allocation)] | None = None
    risk: Annotated[dict, check(_block_keys, keys=_SLEEVE_RISK_KEYS)] = {}
    costs: Annotated[dict, check(_block_keys, keys=_COST_KEYS)] = {}
    sentiment: Annotated[dict, BeforeValidator(sentiment_setting)] | None = None

    @model_validator(mode="after")
    def _one_strategy(self):
        if self.strategy is not None and self.file is not None:
            refuse("strategy", "give strategy: (a name or path) or file:, not both", ("file",))
        if self.strategy is None and self.file is None:
            refuse("strategy", "is required: a strategy name such as ema_cross, or a .py/.zip "
                               "path", ("strategy",))
        return self


class _File(_Block):
    """The whole file. ``market:`` / ``markets:`` are read by :meth:`_Reader.markets`, as
    they may take three shapes."""

    mode: Annotated[str, check(as_choice, allowed=MODES)] = "advisory"
    environment: Annotated[str, check(as_choice, allowed=ENVIRONMENTS)] = "dev"
    risk: RiskLimits = RiskLimits()
    market: Any = None
    markets: Any = None
    models: Annotated[tuple[_Model, ...], check(_non_empty_list,
                                                what="a non-empty list of models")]
    notifications: Annotated[
        tuple[Annotated[str, BeforeValidator(_notification)], ...],
        check(_non_empty_list, what="a non-empty list such as [console] or apprise URLs"),
    ] = ("console",)
    journal: Text = "journal/mmats.sqlite"
    journal_anchor: Text | None = None
    data_root: Text = "data"
    stale_after_bars: Annotated[int, check(as_whole_number, minimum=1)] = 3
    reconcile_tolerance_pct: Annotated[float, check(as_percent, allow_zero=True)] = 0.5
    venues: dict[Name, _Venue] = {}
    telegram: _Telegram | None = None
    heartbeat_s: Annotated[float, check(as_number, minimum=1)] = 10.0

    @model_validator(mode="after")
    def _one_shape(self):
        if {"market", "markets"} <= self.model_fields_set:
            refuse("markets", "give either market: (one market) or markets: (several), not "
                              "both", ("markets",))
        return self


_FILE = TypeAdapter(_File)
_MARKET = TypeAdapter(_Market)
_NAMED_MARKET = TypeAdapter(_NamedMarket)
_SLEEVE = TypeAdapter(SleeveConfig)
_NAME = TypeAdapter(Name)


# --- what the shape cannot say ------------------------------------------------------------

def _is_secret_key(key: str) -> bool:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]
    if any(word in _SECRET_WORDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False))


class _Reader:
    """Reads a mapping into a :class:`RunnerConfig`: secrets refused anywhere, the shape
    validated by :class:`_File`, then markets, strategies and their parameters, references
    and allocations; relative paths resolve against ``base_dir``."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir

    def fail(self, path: tuple, message: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {key_path(path) or '(top level)'}: {message}")

    def validate(self, adapter: TypeAdapter, value, path: tuple = ()):
        """``value`` validated by ``adapter``; its problems named with ``path`` in front."""
        try:
            return adapter.validate_python(value, context={"source": self.source})
        except ValidationError as error:
            raise file_error(error, self.source, path) from None

    def path(self, text: str) -> Path:
        candidate = Path(text).expanduser()
        return candidate if candidate.is_absolute() else (self.base_dir / candidate).resolve()

    def find_secret(self, value, path: tuple) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _is_secret_key(key):
                    self.fail((*path, key), "looks like a secret; secrets never go in the "
                                            "configuration. Store API keys in the OS keyring "
                                            "(or environment variables) where the venue "
                                            "adapter reads them")
                self.find_secret(item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.find_secret(item, (*path, index))

    def config(self, top) -> RunnerConfig:
        if top is None:
            self.fail((), "the configuration is empty; it needs market: (or markets:) and "
                          "models:")
        self.find_secret(top, ())
        if isinstance(top, dict) and "lock" in top:
            self.fail(("lock",), "is no longer a setting: the tick lock lives beside the "
                                 "journal (<journal>.lock), so every configuration writing one "
                                 "journal shares it; remove the key")
        file = self.validate(_FILE, top)
        markets = self.markets(file)
        return RunnerConfig(
            mode=file.mode,
            environment=file.environment,
            global_risk=file.risk,
            markets=markets,
            models=self.models(file.models, markets),
            notifications=file.notifications,
            journal=self.path(file.journal),
            data_root=self.path(file.data_root),
            anchor_path=None if file.journal_anchor is None else self.path(file.journal_anchor),
            stale_after_bars=file.stale_after_bars,
            heartbeat_s=file.heartbeat_s,
            reconcile_tolerance_pct=file.reconcile_tolerance_pct,
            venues=tuple(VenueConfig(name=name, exchange=venue.exchange or name,
                                     sandbox=venue.sandbox, base_url=venue.base_url,
                                     timeout_s=venue.timeout_s, stream=venue.stream,
                                     stream_url=venue.stream_url, ticks=venue.ticks)
                         for name, venue in file.venues.items()),
            telegram=None if file.telegram is None else TelegramConfig(
                chat_ids=file.telegram.chat_ids,
                confirm_timeout_s=file.telegram.confirm_timeout_s),
            source=self.source,
        )

    def markets(self, file: _File) -> tuple[MarketConfig, ...]:
        """``market:`` (one), ``markets:`` as a mapping from name to market, or as a list of
        markets each with ``name:`` (default: the market's type)."""
        value = file.markets
        if "market" in file.model_fields_set:
            entries = [(("market",), file.market, None)]
        elif isinstance(value, dict) and value:
            entries = [(("markets", key), item, self.validate(_NAME, key, ("markets",)))
                       for key, item in value.items()]
        elif isinstance(value, list) and value:
            entries = [(("markets", index), item, None) for index, item in enumerate(value)]
        elif value is None:
            self.fail(("markets",), "is required: add market: (one market) or markets:")
        else:
            self.fail(("markets",), "must be a non-empty list of markets (each with name:) or "
                                    f"a mapping from market name to market, got {value!r}")
        markets = []
        for path, item, key in entries:
            market = self.validate(_NAMED_MARKET if key is None else _MARKET, item, path)
            name = key or market.name or market.type
            if name in [other.name for other in markets]:
                self.fail((*path, "name"), f"market name {name!r} is used twice")
            markets.append(MarketConfig(
                name=name, type=market.type, feed=market.feed[0], backup_feeds=market.feed[1:],
                execution=market.execution, symbols=market.symbols,
                timeframe=market.timeframe, risk=market.risk))
        return tuple(markets)

    def models(self, models: tuple[_Model, ...], markets) -> tuple[ModelConfig, ...]:
        parsed: list[dict] = []
        for index, model in enumerate(models):
            ids = [other["id"] for other in parsed]
            if model.id in ids:
                self.fail(("models", index, "id"),
                          f"id {model.id!r} is already used by models[{ids.index(model.id)}]; "
                          "model ids must be unique")
            parsed.append(self.model(model, ("models", index), markets))
        self.allocate(parsed, markets)
        return tuple(ModelConfig(**model) for model in parsed)

    def model(self, model: _Model, path: tuple, markets) -> dict:
        key = "file" if model.file is not None else "strategy"
        reference = getattr(model, key)
        if reference.endswith((".py", ".zip")) or "/" in reference or os.sep in reference:
            reference = str(self.path(reference))
        try:
            strategy = load_strategy(reference)
        except StrategyError as error:
            self.fail((*path, key), str(error))
        params = self.params(model.params, strategy, (*path, "params"))

        names = [m.name for m in markets]
        if model.market is not None and model.market not in names:
            self.fail((*path, "market"), f"no market named {model.market!r}; markets: "
                                         f"{', '.join(names)}")
        if model.market is None and len(markets) > 1:
            self.fail((*path, "market"), "is required when there are several markets; use one "
                                         f"of {', '.join(names)}")
        market = markets[names.index(model.market) if model.market is not None else 0]
        for index, symbol in enumerate(model.symbols or ()):
            if symbol not in market.symbols:
                self.fail((*path, "symbols", index),
                          f"{symbol!r} is not a symbol of market {market.name!r}; its "
                          f"symbols: {', '.join(market.symbols)}")
        for symbol in model.symbols or market.symbols:  # extra inputs the runner can serve
            try:
                other_symbols(strategy, venue=market.feed, symbol=symbol,
                              timeframe=market.timeframe, model_id=model.id)
            except ConfigError as error:
                self.fail((*path, key), str(error))
        return {"id": model.id, "strategy": reference, "params": params,
                "market": market.name, "symbols": model.symbols or market.symbols,
                "allocation": model.allocation, "sleeve": self.sleeve(model, path),
                "strategy_hash": strategy.source_hash,
                "strategy_version": strategy.version, "sentiment": model.sentiment}

    def params(self, value, strategy, path: tuple) -> dict:
        """The strategy's parameters: given ones checked by the strategy, defaults filled."""
        params = {} if value is None else value
        problem = keys_problem(params, strategy.param_names)
        if problem:
            self.fail((*path, *problem[0]), problem[1])
        for name, item in params.items():
            if isinstance(item, str):  # YAML numbers are numbers; a string is a typo
                self.fail((*path, name), f"must be a number, got {item!r}")
            try:
                strategy.param_value(name, item)
            except ConfigError as error:
                self.fail((*path, name), str(error))
        try:
            return strategy.resolve_params(params)
        except ConfigError as error:
            self.fail(path, str(error))

    def sleeve(self, model: _Model, path: tuple) -> SleeveConfig:
        """A model's ``risk:`` and ``costs:``, each checked by :class:`SleeveConfig` (as a
        backtest's settings are), merged."""
        risk = self.validate(_SLEEVE, model.risk, (*path, "risk"))
        costs = self.validate(_SLEEVE, model.costs, (*path, "costs"))
        return replace(risk, **{name: getattr(costs, name) for name in _COST_KEYS})

    def allocate(self, parsed: list[dict], markets) -> None:
        """Fill default allocations and check each account's sum is at most 1.

        An account is a market, except that markets executing on the same real venue share
        one. Within an account either every model gives an allocation or none does (then
        they split it equally).
        """
        by_name = {m.name: m for m in markets}

        def account(model):
            market = by_name[model["market"]]
            return f"paper:{market.name}" if market.is_paper else f"venue:{market.execution}"

        groups: dict[str, list[int]] = {}
        for index, model in enumerate(parsed):
            groups.setdefault(account(model), []).append(index)
        for key, members in groups.items():
            given = [i for i in members if parsed[i]["allocation"] is not None]
            where = (f"market {key[6:]!r}" if key.startswith("paper:")
                     else f"venue {key[6:]!r}")
            if not given:
                for i in members:
                    parsed[i]["allocation"] = 1.0 / len(members)
                continue
            if len(given) != len(members):
                missing = next(i for i in members if parsed[i]["allocation"] is None)
                self.fail(("models", missing, "allocation"),
                          f"is missing while other models on {where} give one; give every "
                          "model of an account an allocation, or none (equal split)")
            total = sum(parsed[i]["allocation"] for i in members)
            if total > 1 + _EPSILON:
                self.fail(("models", members[-1], "allocation"),
                          f"allocations of the models on {where} "
                          f"({', '.join(parsed[i]['id'] for i in members)}) sum to "
                          f"{total:g}; the sum must be <= 1")
