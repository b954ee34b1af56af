"""Settings of one sleeve (a strategy on a symbol): costs, sizing and risk limits.

The same :class:`SleeveConfig` drives the backtest, the sweep and the live runner; it
becomes the numba ``CONFIG_DTYPE`` record the kernel reads. It is a pydantic dataclass and
the one model of these settings: ``backtest(..., fee_bps=10)``, the command line's cost
options (a dict of them) and a live configuration's ``risk:`` and ``costs:`` blocks are all
checked by it.

The value checks and the wording every MMATS setting shares live here too (numbers that
refuse text and booleans, percentages written ``5%`` or ``5``, names, choices, unknown keys
named with the known ones, and a pydantic ``ValidationError`` turned into a
:class:`~mmats.errors.ConfigError` naming the key path), so :mod:`mmats.live.config` says the
same things the same way.

Example::

    config = SleeveConfig(fee_bps=10, slippage_bps=2, max_drawdown_pct="25%")
"""

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from functools import cache, partial
from typing import Annotated, NoReturn

import numpy as np
from pydantic import (
    AliasChoices,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs, PydanticCustomError

from mmats.errors import ConfigError
from mmats.types import (
    CONFIG_DTYPE,
    METRICS_DTYPE,
    STATE_DTYPE,
    SizingMode,
    SlippageModel,
)

SIZING_MODES = {"fixed_fraction": SizingMode.FIXED_FRACTION,
                "volatility_target": SizingMode.VOLATILITY_TARGET,
                "kelly": SizingMode.KELLY}
SLIPPAGE_MODELS = {"fixed": SlippageModel.FIXED,
                   "volatility_sqrt": SlippageModel.VOLATILITY_SQRT,
                   "participation": SlippageModel.PARTICIPATION}

_QUOTE = "(quote values YAML reads as booleans or numbers)"
_PERCENT_RE = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*%\s*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


# --- values every setting shares ----------------------------------------------------------

def refuse(kind: str, message: str, at: tuple = ()) -> NoReturn:
    """Reject a value from inside a pydantic validator: the error is reported at the value's
    key path, ``at`` (keys further down) appended."""
    raise PydanticCustomError(kind, message, {"at": at} if at else None)


def check(function, **options) -> BeforeValidator:
    """The pydantic validator calling ``function(value, **options)``: put it in a field's
    ``Annotated[float, check(as_number, minimum=0)]``."""
    return BeforeValidator(partial(function, **options))


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def as_number(value, *, minimum: float | None = None, above: float | None = None,
              below: float | None = None) -> float:
    """A finite number within the bounds (``>= minimum``, ``> above``, ``< below``); text and
    booleans are refused: ``"10"`` or ``True`` would compare or size wrongly."""
    if not _real(value):
        refuse("number_type", f"must be a number, got {value!r} ({type(value).__name__})")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and (minimum is None or number >= minimum)
            and (above is None or number > above) and (below is None or number < below)):
        bounds = [f"{sign} {limit:g}" for sign, limit in
                  ((">=", minimum), (">", above), ("<", below)) if limit is not None]
        refuse("number_range", " ".join(["must be a finite number", " and ".join(bounds)])
               .strip() + f", got {value!r}")
    return number


def as_whole_number(value, *, minimum: int) -> int:
    """A whole number (``3`` or ``3.0``) ``>= minimum``."""
    if not _real(value) or not (isinstance(value, numbers.Integral)
                                or (math.isfinite(value) and float(value).is_integer())):
        refuse("whole_number", f"must be a whole number, got {value!r}")
    if value < minimum:
        refuse("number_range", f"must be >= {minimum}, got {value!r}")
    return int(value)


def as_percent(value, *, allow_zero: bool = False) -> float:
    """A percentage, ``"5%"`` or ``5`` -> 5.0, in (0, 100] (or [0, 100] with ``allow_zero``)."""
    number = value
    if isinstance(value, str):
        match = _PERCENT_RE.match(value)
        if not match:
            refuse("percent", f"{value!r} is not a percentage; write e.g. 5% or 5 (both mean "
                              "five percent)")
        number = float(match.group(1))
    if not _real(number):
        refuse("percent", f"must be a percentage such as 5% or 5, got {value!r}")
    number = float(number)
    if not (math.isfinite(number) and (number >= 0 if allow_zero else number > 0)
            and number <= 100):
        bounds = "[0%, 100%]" if allow_zero else "(0%, 100%]; omit the key for no limit"
        refuse("percent", f"{value!r} is outside {bounds}")
    return number


def as_text(value) -> str:
    """A non-empty string, stripped."""
    if not isinstance(value, str) or not value.strip():
        refuse("text", f"must be a non-empty string, got {value!r} {_QUOTE}")
    return value.strip()


def as_name(value) -> str:
    """A name: letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit."""
    text = as_text(value)
    if not _NAME_RE.match(text):
        refuse("name", f"{text!r} is not a valid name; use letters, digits, '_', '.' and '-', "
                       "starting with a letter or digit")
    return text


def as_choice(value, *, allowed: Iterable[str]) -> str:
    """One of the ``allowed`` strings."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or not value.strip():
        refuse("choice", f"must be one of {', '.join(allowed)}, got {value!r} {_QUOTE}")
    if value not in allowed:
        refuse("choice", f"{value!r} is not allowed; use one of {', '.join(allowed)}")
    return value


def as_flag(value) -> bool:
    """``true`` or ``false``: a YAML boolean, not ``"no"`` nor ``0``."""
    if not isinstance(value, bool | np.bool_):
        refuse("flag", f"must be true or false, got {value!r}")
    return bool(value)


Text = Annotated[str, BeforeValidator(as_text)]
Name = Annotated[str, BeforeValidator(as_name)]
Flag = Annotated[bool, BeforeValidator(as_flag)]


def aliased(default, *aliases: str):
    """A field's default, the field also read under ``aliases`` (the live configuration's
    short names: ``leverage`` for ``max_leverage``)."""
    return Field(default, validation_alias=AliasChoices(*aliases))


@cache
def setting_keys(cls) -> dict[str, str]:
    """Every key a pydantic model or dataclass reads -> the field it sets: the fields' names
    first, then their aliases."""
    names = cls.__pydantic_fields__
    keys = {name: name for name in names}
    for name, field in names.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        keys.update((choice, name) for choice in choices if isinstance(choice, str))
    return keys


def keys_problem(values, keys: Mapping[str, str] | Iterable[str]) -> tuple[tuple, str] | None:
    """What is wrong with the keys of a block read from a file, as ``(key path below the
    block, message)``, or None: it must be a mapping of string keys, each known (a name of
    ``keys``, or an alias mapped to one) and none set twice through an alias."""
    keys = keys if isinstance(keys, Mapping) else {key: key for key in keys}
    known = ", ".join(keys)
    if not isinstance(values, dict):
        return (), f"must be a mapping of {known}; got {type(values).__name__} {values!r}"
    seen: dict[str, str] = {}
    for key in values:
        if not isinstance(key, str):
            return (), f"keys must be strings, got {key!r}"
        if key not in keys:
            return (key,), f"unknown key; known keys here: {known}"
        if keys[key] in seen:
            return (key,), (f"sets {keys[key]} a second time; keep one of {seen[keys[key]]} "
                            f"and {key}, which are aliases")
        seen[keys[key]] = key
    return None


def key_path(keys: Iterable) -> str:
    """``("models", 0, "risk")`` -> ``models[0].risk``."""
    path = ""
    for key in keys:
        path = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
    return path


def _wording(error: dict) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return "is required"
    if kind in ("dict_type", "model_type", "dataclass_type"):
        return f"must be a mapping, got {type(value).__name__} {value!r}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, got {type(value).__name__} {value!r}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key"
    return error["msg"]


def _where(error: dict) -> tuple:
    """The key path of a pydantic error: its location (without pydantic's ``[key]`` marker
    of a bad mapping key) and any keys :func:`refuse` added."""
    at = (error.get("ctx") or {}).get("at", ())
    return (*(key for key in error["loc"] if key != "[key]"), *at)


def file_error(error: ValidationError, source: str, prefix: tuple = ()) -> ConfigError:
    """A :class:`ConfigError` with a line per problem of ``error``, each
    ``<source>: <key path>: <what is wrong>`` (``x.yaml: models[0].costs.fee_bps: must be a
    finite number >= 0 and < 10000, got -1``); ``prefix`` is where the validated block sits."""
    return ConfigError("\n".join(
        f"{source}: {key_path((*prefix, *_where(item))) or '(top level)'}: {_wording(item)}"
        for item in error.errors(include_url=False)))


def _python_error(error: ValidationError, cls) -> ConfigError:
    """``error`` of ``cls(...)`` in Python: ``fee_bps must be a number, got '10' (str); e.g.
    fee_bps=0.0``, a line per problem."""
    fields_ = cls.__pydantic_fields__
    names, keys = list(fields_), setting_keys(cls)
    lines = []
    for item in error.errors(include_url=False):
        kind, where = item["type"], _where(item) or (cls.__name__,)
        name = names[where[0]] if isinstance(where[0], int) and where[0] < len(names) else where[0]
        if kind == "unexpected_positional_argument":
            line = f"{cls.__name__} takes at most {len(names)} settings by position"
        elif kind == "unexpected_keyword_argument" and name in keys:  # a field and its alias
            line = f"{name} sets {keys[name]} a second time; keep one of the two, which are aliases"
        elif kind == "unexpected_keyword_argument":
            line = f"unknown setting {name!r}; known settings: {', '.join(sorted(names))}"
        else:
            line = f"{key_path([name, *where[1:]])} {_wording(item)}"
            if kind == "number_type" and name in fields_:
                line += f"; e.g. {name}={fields_[name].default!r}"
        lines.append(line)
    return ConfigError("\n".join(dict.fromkeys(lines)))


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))  # subclasses inherit the config
class Settings:
    """Base of the settings dataclasses (:class:`SleeveConfig`, the live risk limits).

    Built in Python, a bad value raises a :class:`ConfigError` naming the setting. Read from
    a file (validated with a context, as the loaders do), a block's keys are checked first
    (:func:`keys_problem`; an empty block is an empty mapping) and the pydantic error goes up
    to the loader, which names the file and the key path (:func:`file_error`).
    """

    @model_validator(mode="wrap")
    @classmethod
    def _named(cls, values, handler, info):
        if info.context is not None and not isinstance(values, ArgsKwargs | Settings):
            values = {} if values is None else values
            problem = keys_problem(values, setting_keys(cls))
            if problem:
                refuse("keys", problem[1], problem[0])
        try:
            return handler(values)
        except ValidationError as error:
            if info.context is not None:
                raise
            raise _python_error(error, cls) from None


# --- the sleeve ---------------------------------------------------------------------------

_Bps = Annotated[float, check(as_number, minimum=0, below=10_000)]  # 10000 bps = 100 %
_AtLeastZero = Annotated[float, check(as_number, minimum=0)]
_LossPercent = Annotated[float, check(as_percent, allow_zero=True)]  # 0: no limit
# Settings applied to the strategy's output before the kernel, so not in CONFIG_DTYPE.
BEFORE_THE_KERNEL = ("size_by_confidence", "confidence_step")


@dataclass(frozen=True)
class SleeveConfig(Settings):
    """Costs, sizing and per-strategy risk limits of one sleeve.

    Defaults: no costs, exposure 1 = all equity (as vectorbt's ``size=np.inf``),
    fractional quantities, no leverage (cap 1), shorting allowed, no loss limits (0).
    The percentages may be written ``"5%"``; ``max_leverage``, ``max_daily_loss_pct`` and
    ``max_drawdown_pct`` are also read as ``leverage``, ``max_daily_loss`` and
    ``max_drawdown`` (the live configuration's names).
    """

    fee_bps: _Bps = 0.0
    slippage_bps: _Bps = 0.0
    slippage_model: Annotated[str, check(as_choice, allowed=SLIPPAGE_MODELS)] = "fixed"
    impact_coef: _AtLeastZero = 1.0
    max_participation: _AtLeastZero = 0.0
    max_order_notional: _AtLeastZero = 0.0
    sizing: Annotated[str, check(as_choice, allowed=SIZING_MODES)] = "fixed_fraction"
    fraction: _AtLeastZero = 1.0
    vol_target: _AtLeastZero = 0.2
    vol_halflife_bars: _AtLeastZero = 20.0
    kelly_multiplier: _AtLeastZero = 0.5
    kelly_cap: _AtLeastZero = 1.0
    kelly_min_trades: Annotated[int, check(as_whole_number, minimum=0)] = 20
    lot_size: _AtLeastZero = 0.0
    min_notional: _AtLeastZero = 0.0
    max_leverage: Annotated[float, check(as_number, above=0)] = aliased(
        1.0, "max_leverage", "leverage")
    max_daily_loss_pct: _LossPercent = aliased(0.0, "max_daily_loss_pct", "max_daily_loss")
    max_drawdown_pct: _LossPercent = aliased(0.0, "max_drawdown_pct", "max_drawdown")
    allow_short: Flag = True
    # confidence (a strategy's OUTPUTS): scale the exposure by it, rounded down to steps
    size_by_confidence: Flag = False
    confidence_step: Annotated[float, check(as_number, minimum=0, below=1)] = 0.0

    @classmethod
    def from_mapping(cls, values: dict | None = None, **overrides) -> "SleeveConfig":
        """Build from a dict (``overrides`` on top), naming any unknown or bad setting."""
        return cls(**{**(values or {}), **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    def to_record(self, periods_per_year: float) -> np.ndarray:
        """The 1-element ``CONFIG_DTYPE`` array the numba kernel reads."""
        record = np.zeros(1, dtype=CONFIG_DTYPE)
        for item in fields(self):
            if item.name in BEFORE_THE_KERNEL:
                continue
            value = getattr(self, item.name)
            if item.name == "sizing":
                record["sizing_mode"] = int(SIZING_MODES[value])
            elif item.name == "slippage_model":
                record["slippage_model"] = int(SLIPPAGE_MODELS[value])
            else:
                record[item.name] = value
        record["periods_per_year"] = periods_per_year
        record["ewm_decay"] = 0.5 ** (1.0 / max(self.vol_halflife_bars, 1.0))
        return record


def acted_signal(output, config: SleeveConfig, multiplier: np.ndarray | None = None,
                 size_cap: np.ndarray | None = None) -> np.ndarray:
    """The exposure the bar step acts on at each bar: the strategy's, scaled by its
    confidence when ``config.size_by_confidence`` (rounded down to ``confidence_step``),
    then by a sentiment rule's ``multiplier`` and ``size_cap`` when given
    (:func:`mmats.nb.exposure.effective_signal`, the one rule the backtest, the sweep and
    the live tick apply). Without either it is the strategy's exposure itself."""
    scale = bool(config.size_by_confidence) and output.confidence is not None
    if not scale and multiplier is None:
        return output.exposure
    from mmats.nb.exposure import effective_signals

    empty = np.empty(0)
    return effective_signals(output.exposure,
                             output.confidence if scale else empty, scale,
                             float(config.confidence_step),
                             empty if multiplier is None else multiplier,
                             empty if size_cap is None else size_cap)


def new_state(cash: float) -> np.ndarray:
    """A fresh 1-element ``STATE_DTYPE`` array: a flat sleeve holding ``cash``."""
    from mmats.nb.sim import init_state

    if not (cash > 0 and math.isfinite(cash)):
        raise ConfigError(f"cash must be a positive number, got {cash!r}")
    state = np.zeros(1, dtype=STATE_DTYPE)
    init_state(state[0], float(cash))
    return state


def new_metrics(start_equity: float) -> np.ndarray:
    from mmats.nb.metrics import init_metrics

    metrics = np.zeros(1, dtype=METRICS_DTYPE)
    init_metrics(metrics[0], float(start_equity))
    return metrics
