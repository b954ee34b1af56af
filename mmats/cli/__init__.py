"""The ``mmats`` command's shared parts: one definition of each option, the exit codes,
parsing params and grids, JSON output and plain error messages.

Every subcommand (``mmats backtest``, ``mmats check-data``, ...) lives in a module of this
package with a ``main(argv=None, prog=None) -> int``; :mod:`mmats.cli.main` dispatches to
them and ``scripts/*.py`` call the same ``main``. Options that appear in several commands
are added here, so they are spelled and mean the same everywhere:

- ``--data FILE|VENUE:SYMBOL:TIMEFRAME`` — where the candles are (:func:`add_data_option`);
- ``--root DIR`` — the candle store;
- ``--strategy NAME|FILE`` — a strategy by name (``./strategies``, ``$MMATS_STRATEGIES``,
  then the shipped ones) or by path;
- ``--json`` — one JSON object on stdout, nothing else there.

Exit codes, the same in every command (:data:`EXIT_CODES`): 0 done and fine; 1 done, and the
check or the result says no (lookahead found, a tampered journal, data problems, a fail-safe
acted, a venue refused); 2 the command or its input is wrong (a usage error, a missing or
unreadable file, a bad configuration) — fix the command and run it again.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path

from mmats.errors import ConfigError, MMATSError
from mmats.records import json_safe
from mmats.redact import redact_urls

DEFAULT_DATA = "bittrex:ETH/BTC:5m"
DEFAULT_STRATEGY = "ema_cross"
DATA_METAVAR = "FILE|VENUE:SYMBOL:TIMEFRAME"

EXIT_OK, EXIT_NO, EXIT_INPUT = 0, 1, 2
EXIT_CODES = ("exit codes: 0 ok; 1 the check or result says no; "
              "2 usage or input error (bad option, missing or unreadable file, bad config)")


def command_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The parser of one subcommand, its help built from the module's docstring: the first
    paragraph is the description, the rest (examples first, then details and the exit
    codes of this command) is printed after the options.

    >>> command_parser("mmats backtest", __doc__).prog
    'mmats backtest'
    """
    head, _, rest = doc.strip().partition("\n\n")
    return argparse.ArgumentParser(prog=prog, description=head, epilog=rest,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_subcommand(parser: argparse.ArgumentParser, commands, name: str, help: str):
    """A sub-subcommand (``mmats journal verify``) whose ``--help`` ends with the same
    examples and exit codes as its parent's."""
    return commands.add_parser(name, help=help, description=help, epilog=parser.epilog,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def add_data_option(parser: argparse.ArgumentParser, *, default: str | None = DEFAULT_DATA,
                    required: bool = False, repeat: bool = False, what: str = "") -> None:
    """``--data FILE|VENUE:SYMBOL:TIMEFRAME`` and ``--root DIR``: the candles a command
    reads (or, for import and fetch, the series it writes)."""
    text = what or "candles: a .csv/.parquet file or a stored series such as bittrex:ETH/BTC:5m"
    if repeat:
        text += "; repeat for several symbols"
    if default is not None:
        text += f" (default {default})"
    parser.add_argument("--data", metavar=DATA_METAVAR, required=required,
                        action="append" if repeat else "store",
                        default=None if repeat else default, help=text)
    parser.add_argument("--root", metavar="DIR",
                        help="candle store root (default: $MMATS_DATA_ROOT or ./data, then "
                        "the sample data shipped with MMATS)")


def add_strategy_option(parser: argparse.ArgumentParser,
                        default: str | None = DEFAULT_STRATEGY) -> None:
    parser.add_argument("--strategy", default=default, metavar="NAME|FILE",
                        help="a name (looked up in $MMATS_STRATEGIES, ./strategies, then the "
                        "shipped ema_cross, rsi_reversion, donchian_breakout) or a .py/.zip "
                        "path" + (f" (default {default})" if default else ""))


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout (no table, no progress bar)")


def series_from(data: str | None, parts, spelled: str) -> tuple[str, str, str]:
    """The series a command writes: ``--data VENUE:SYMBOL:TIMEFRAME``, or its older
    three-part form ``parts`` (``spelled`` says how that form is written), never both.

    >>> series_from(None, ["binance", "BTC/USDT", "1h"], "three words")
    ('binance', 'BTC/USDT', '1h')
    """
    given = [part for part in parts if part]
    if data:
        if given:
            raise ConfigError("give the series once: --data VENUE:SYMBOL:TIMEFRAME, or "
                              + spelled)
        return data_address(data)
    if len(parts) != 3 or len(given) != 3:
        raise ConfigError("which series? give --data VENUE:SYMBOL:TIMEFRAME, e.g. "
                          "--data binance:BTC/USDT:1h")
    return tuple(parts)


def data_address(text: str, option: str = "--data") -> tuple[str, str, str]:
    """``VENUE:SYMBOL:TIMEFRAME`` -> its three parts, for commands that write a series
    (``mmats import``, ``mmats fetch``); :class:`ConfigError` naming the option otherwise.

    >>> data_address("binance:BTC/USDT:1h")
    ('binance', 'BTC/USDT', '1h')
    """
    from mmats.data.io import parse_spec

    parts = parse_spec(text)
    if parts is None:
        raise ConfigError(f"{option} {text!r}: give the series as VENUE:SYMBOL:TIMEFRAME, "
                          "e.g. binance:BTC/USDT:1h")
    return parts


def parse_params(text: str | None) -> dict:
    """``"fast=10,slow=50"`` → ``{"fast": 10, "slow": 50}``."""
    params = {}
    for item in _items(text):
        name, value = _split(item, "--params")
        params[name] = _number(value, name)
    return params


def parse_grid(text: str | None) -> dict:
    """``"fast=5:50:5,slow=20|50|100"`` → lists of values.

    ``start:stop:step`` includes ``stop``; ``a|b|c`` is a list; a lone value is one value.
    """
    grid = {}
    for item in _items(text):
        name, spec = _split(item, "--grid")
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) != 3:
                raise ConfigError(f"--grid {name}: a range is start:stop:step, got {spec!r}")
            start, stop, step = (_decimal(p, name) for p in parts)
            if step <= 0 or stop < start:
                raise ConfigError(f"--grid {name}: need step > 0 and stop >= start in {spec!r}")
            count = int((stop - start) / step) + 1
            if count > 100_000:
                raise ConfigError(f"--grid {name}: {count} values is too many")
            values = [start + step * i for i in range(count)]
            grid[name] = [_number(str(v), name) for v in values]
        else:
            grid[name] = [_number(v, name) for v in spec.split("|")]
    return grid


def _items(text):
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _split(item, option):
    if "=" not in item:
        raise ConfigError(f"{option}: expected name=value, got {item!r}")
    name, value = item.split("=", 1)
    return name.strip(), value.strip()


def _decimal(text, name):
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"parameter {name!r}: {text!r} is not a number") from None


def _number(text, name):
    number = _decimal(text, name)
    if number == number.to_integral_value() and "." not in text and "e" not in text.lower():
        return int(number)
    return float(number)


def check_date(option: str, text: str | None) -> None:
    """Refuse a date option that cannot be read, or that nanoseconds cannot hold (the year
    3024 parses, then overflows): :class:`ConfigError` naming the option and the value."""
    if text is None:
        return
    from mmats.data.store import to_ns

    try:
        to_ns(text)
    except ConfigError as error:
        raise ConfigError(f"{option}: {error}") from None


def check_output_file(option: str, path) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, or a path
    inside a file or a missing folder (:class:`ConfigError` naming the option and path)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: {path.parent} is not a folder")


def check_output_folder(option: str, path) -> None:
    """Refuse, before any work, an output folder that is a file (or lies inside one)."""
    for part in (Path(path), *Path(path).parents):
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"{option} {path}: {part} is a file, not a folder")
            return


# The settings options of a run, each passed to SleeveConfig only when given, so the model's
# defaults are the only ones; the "(default ...)" in a help text is checked against them
# (tests/cli/test_commands.py).
COST_OPTIONS = {  # option -> (SleeveConfig field, type, help)
    "--fee-bps": ("fee_bps", float, "fee per fill, bps (default 0)"),
    "--slippage-bps": ("slippage_bps", float, "fixed slippage, bps (default 0)"),
    "--slippage-model": ("slippage_model", str, "fixed, volatility_sqrt or participation "
                         "(default fixed)"),
    "--impact-coef": ("impact_coef", float, "coefficient of the volatility_sqrt / "
                      "participation models (default 1)"),
    "--max-participation": ("max_participation", float, "cap a fill at this fraction of the "
                            "bar's volume, 0 = none (default 0)"),
    "--sizing": ("sizing", str, "fixed_fraction, volatility_target or kelly "
                 "(default fixed_fraction)"),
    "--fraction": ("fraction", float, "fixed fraction (default 1)"),
    "--vol-target": ("vol_target", float, "annualised volatility target (default 0.2)"),
    "--lot-size": ("lot_size", float, "lot size, 0 = fractional (default 0)"),
    "--min-notional": ("min_notional", float, "smallest order value (default 0)"),
    "--max-leverage": ("max_leverage", float, "gross exposure over equity (default 1)"),
    "--max-daily-loss-pct": ("max_daily_loss_pct", float, "0 = off (default 0)"),
    "--max-drawdown-pct": ("max_drawdown_pct", float, "0 = off (default 0)"),
}


def add_cost_options(parser: argparse.ArgumentParser, **defaults) -> None:
    """Options that build the :class:`~mmats.sleeve.SleeveConfig` of a run; ``defaults``
    (by field, e.g. ``fee_bps=10.0``) are this command's own, said in its help."""
    group = parser.add_argument_group("costs, sizing and risk")
    group.add_argument("--cash", type=float, default=10_000.0,
                       help="starting cash (default 10000)")
    for option, (field, kind, text) in COST_OPTIONS.items():
        if field in defaults:
            text = re.sub(r"\(default [^)]*\)", f"(default {defaults[field]:g} here)", text)
        group.add_argument(option, dest=field, type=kind, default=defaults.get(field),
                           help=text,
                           metavar=field.upper() if kind is float else None)
    group.add_argument("--long-only", action="store_true", help="ignore short signals")
    group.add_argument("--no-lookahead-check", action="store_true",
                       help="run a strategy even if it fails the lookahead check")


def settings_from(args: argparse.Namespace) -> dict:
    """The settings given on the command line, for SleeveConfig (which checks them and
    fills in the rest)."""
    settings = {field: getattr(args, field) for field, _, _ in COST_OPTIONS.values()
                if getattr(args, field) is not None}
    if args.long_only:
        settings["allow_short"] = False
    return settings


def print_json(value, file=None) -> None:
    print(json.dumps(json_safe(value), allow_nan=False), file=file)


def fail(error: Exception, code: int = 2) -> int:
    """Print an MMATS error, or an OSError on a file (which it names), plainly (no
    traceback) and return the exit code; anything else is a bug and is raised."""
    if isinstance(error, OSError) and error.filename is not None:
        print(f"error: {error.filename}: {error.strerror or error}", file=sys.stderr)
        return code
    if not isinstance(error, MMATSError):
        raise error
    print(f"error: {redact_urls(str(error))}", file=sys.stderr)  # a venue's URL may carry keys
    return code


def add_data_quality_options(parser: argparse.ArgumentParser) -> None:
    """``--max-gap`` and ``--max-missing``: when the data's gaps warn on stderr."""
    from mmats.data.quality import DEFAULT_MAX_GAP, DEFAULT_MAX_MISSING

    group = parser.add_argument_group("data quality (reported always, never filled)")
    group.add_argument("--max-gap", default=DEFAULT_MAX_GAP, type=_checked(_gap_limit),
                       metavar="BARS|DURATION|PCT",
                       help="warn when a gap misses more than this: bars (30), a duration "
                       "(1h, 2d) or a share of the expected bars (default %(default)s)")
    group.add_argument("--max-missing", default=DEFAULT_MAX_MISSING, type=_checked(_share),
                       metavar="PCT",
                       help="warn when more than this share of the expected bars is missing "
                       "(default %(default)s)")


def report_data_quality(candles, args: argparse.Namespace, *, label: str | None = None) -> dict:
    """The ``data_quality`` of a script's JSON: :func:`~mmats.data.quality.data_quality` of
    ``candles`` as a dict with a ``warnings`` list, each warning also printed on stderr
    (``label`` names the data in them; default its source).

    >>> report_data_quality(load("bittrex:ADA/BTC:5m"), args)["missing_bars"]  # doctest: +SKIP
    40
    """
    from mmats.data.quality import data_quality, data_quality_warnings

    quality = data_quality(candles)
    named = quality if label is None else replace(quality, source=label)
    warnings = data_quality_warnings(named, max_gap=args.max_gap, max_missing=args.max_missing)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return {**quality.to_dict(), "summary": quality.summary(), "warnings": warnings}


def _gap_limit(text):
    from mmats.data.quality import parse_gap_limit

    parse_gap_limit(text)
    return text


def _share(text):
    from mmats.data.quality import parse_share

    parse_share(text)
    return text


def _checked(parse):
    """An argparse ``type`` that turns a :class:`ConfigError` into a usage error."""
    def check(text):
        try:
            return parse(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    check.__name__ = parse.__name__.strip("_")
    return check
