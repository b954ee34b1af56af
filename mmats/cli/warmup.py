"""Compile the kernels once, so that a fresh process's first backtest, sweep and live tick start at once.

examples:
  mmats warmup                             # the shipped strategies, into this shell's caches
  mmats warmup --strategy ema_cross --json
  NUMBA_CACHE_DIR=/var/cache/mmats/numba mmats warmup

Numba compiles each kernel on its first call (the bar step alone takes seconds) and keeps
the machine code in its cache: $NUMBA_CACHE_DIR if set, else the __pycache__ folders beside
MMATS's modules when they are writable, else ~/.cache/numba; the sweep kernels MMATS
generates per strategy live in $MMATS_CACHE_DIR (default ~/.cache/mmats). warmup runs,
for each strategy, a backtest, a two-combination sweep and a replay through the live
runner (paper and operator paths) on the first --bars candles, all through the public
functions: it compiles what those need, whatever the kernel becomes. Run it once after
installing or upgrading MMATS (deploy/install.sh does), with the NUMBA_CACHE_DIR and
MMATS_CACHE_DIR of the runs it is for; again, it only loads from the cache. Two at once
are safe: the second waits for the first, then finds everything cached.

exit codes: 0 done; 2 usage or input error (a missing data file, an unknown strategy, a
cache folder that cannot be written). A warm-up has no "no": 1 is unused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mmats.cli import (
    DEFAULT_DATA,
    add_data_option,
    add_json_option,
    command_parser,
    fail,
    print_json,
)
from mmats.errors import MMATSError

# calendar of the candles -> market type of the live configuration replayed
_MARKET_TYPES = {"24/7": "crypto", "forex": "forex", "stocks": "stocks"}
_LIVE_MODES = ("paper", "operator")


class CacheFolderError(MMATSError):
    """A cache folder warmup must write cannot be written."""


@dataclass
class Step:
    """One warm-up run: what it ran, how long it took, what numba compiled (name ->
    seconds, callees included) and how many kernels it loaded from the cache."""

    name: str
    seconds: float = 0.0
    compiled: dict[str, float] = field(default_factory=dict)
    cached: int = 0


def main(argv=None, prog="mmats warmup") -> int:
    parser = command_parser(prog, __doc__)
    parser.add_argument("--strategy", action="append", metavar="NAME|FILE",
                        help="a strategy to warm up; repeat for several (default: the "
                        "shipped ones)")
    add_data_option(parser, what="candles whose first --bars bars are run")
    parser.add_argument("--bars", type=int, default=600,
                        help="bars of --data each run uses (default %(default)s)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.bars < 100:
        parser.error("--bars must be at least 100 (a strategy needs its warm-up bars)")
    try:
        folders = cache_folders()
        with _one_at_a_time(folders["mmats"], quiet=args.json):
            steps = warm_up(args.strategy or shipped_strategies(), args.data, args.root,
                            args.bars, report=None if args.json else _print_step)
    except MMATSError as error:
        return fail(error)
    except OSError as error:  # a file of the caches (the lock, a kernel) named, plainly
        if error.filename is None:
            raise
        return fail(error)
    except RuntimeError as error:  # numba found no cache folder it may write
        if "cannot cache function" not in str(error):
            raise
        return fail(CacheFolderError(f"numba cannot cache its kernels: {error}; set "
                                     "NUMBA_CACHE_DIR to a folder you may write"))
    summary = {
        "numba_cache": str(folders["numba"]),
        "mmats_cache": str(folders["mmats"]),
        "seconds": round(sum(step.seconds for step in steps), 3),
        "compiled": sum(len(step.compiled) for step in steps),
        "cached": sum(step.cached for step in steps),
        "steps": [{"step": step.name, "seconds": round(step.seconds, 3),
                   "compiled": sorted(step.compiled), "cached": step.cached}
                  for step in steps],
    }
    if args.json:
        print_json(summary)
    else:
        print(f"warmed up in {summary['seconds']:.1f} s: {summary['compiled']} kernels "
              f"compiled, {summary['cached']} loaded from the cache\n"
              f"  numba cache: {folders['numba']}\n  sweep kernels: {folders['mmats']}")
    return 0


def shipped_strategies() -> list[str]:
    from mmats.strategy import SHIPPED

    return sorted(path.stem for path in SHIPPED.glob("*.py") if not path.stem.startswith("_"))


def cache_folders() -> dict[str, Path]:
    """The folders warmup writes: ``numba`` (where numba keeps MMATS's kernels, found as
    numba looks for it) and ``mmats`` (generated sweep kernels, unpacked models). Raises
    :class:`CacheFolderError` naming the folder and the setting to change when one cannot
    be written."""
    home = Path.home() / ".cache"
    mmats_folder = Path(os.environ.get("MMATS_CACHE_DIR") or home / "mmats")
    _require_writable(mmats_folder, "MMATS_CACHE_DIR")
    configured = os.environ.get("NUMBA_CACHE_DIR")
    if configured:  # numba uses it alone (and quietly falls back when it cannot write it)
        _require_writable(Path(configured), "NUMBA_CACHE_DIR")
        return {"numba": Path(configured), "mmats": mmats_folder}
    beside = Path(__file__).resolve().parents[1] / "nb" / "__pycache__"
    user_wide = Path(os.environ.get("XDG_CACHE_HOME") or home) / "numba"
    for folder in (beside, user_wide):
        with contextlib.suppress(CacheFolderError):
            _require_writable(folder, "NUMBA_CACHE_DIR")
            return {"numba": folder, "mmats": mmats_folder}
    raise CacheFolderError(f"numba can write its cache neither beside MMATS ({beside}) nor "
                           f"in {user_wide}; set NUMBA_CACHE_DIR to a folder you may write")


def _require_writable(folder: Path, setting: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CacheFolderError(f"cannot write the cache folder {folder} ({reason}); set "
                               f"{setting} to a folder you may write") from None


@contextlib.contextmanager
def _one_at_a_time(folder: Path, quiet: bool):
    """Hold ``folder/warmup.lock`` while warming up: a second warm-up waits, then loads
    from the cache what the first compiled (numba's cache files are written whole, but
    two processes compiling the same kernel would only do the work twice)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent warm-ups just both compile
        yield
        return
    with open(folder / "warmup.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print("waiting for another warmup to finish ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def warm_up(strategies: list[str], data: str = DEFAULT_DATA, root: str | None = None,
            bars: int = 600, report=None) -> list[Step]:
    """Backtest, sweep and replay through the live runner each of ``strategies`` on the
    first ``bars`` candles of ``data``, returning one :class:`Step` per run; ``report`` is
    called with each step as it ends.

    >>> [step.name for step in warm_up(["ema_cross"])]  # doctest: +SKIP
    ['backtest ema_cross', 'sweep ema_cross', 'live tick ema_cross (paper)', ...]
    """
    from mmats.backtest import backtest, sweep
    from mmats.data import load
    from mmats.strategy import load_strategy

    candles = load(data, root=root)
    candles = candles.iloc[:bars].reset_index(drop=True)  # attrs (venue, symbol) are kept
    steps = []
    for name in strategies:
        strategy = load_strategy(name)
        if strategy.inputs and not _inputs_found(strategy, candles, root):
            continue  # a shipped strategy for other data (its inputs are not in `data`)
        runs = [(f"backtest {strategy.name}", lambda s=strategy: backtest(s, candles)),
                (f"sweep {strategy.name}",
                 lambda s=strategy: sweep(s, candles, _two_combinations(s)))]
        runs += [(f"live tick {strategy.name} ({mode})",
                  lambda m=mode, n=name: _replay(n, candles, m, root)) for mode in _LIVE_MODES]
        for label, run in runs:
            step = _timed(label, run)
            steps.append(step)
            if report is not None:
                report(step)
    return steps


def _inputs_found(strategy, candles, root) -> bool:
    """Whether ``strategy``'s extra inputs can be built for ``candles`` (a strategy for
    5-minute bars reads an hourly input that daily candles cannot give)."""
    from mmats.backtest import market, with_inputs
    from mmats.data import load
    from mmats.data.extras import parse_inputs, series_needed, spec_of

    prices = market(candles)
    try:
        keys = series_needed(parse_inputs(strategy.input_specs, strategy.name),
                             venue=prices.venue, symbol=prices.symbol,
                             timeframe=prices.timeframe)
        with_inputs(prices, strategy, {spec_of(k): load(spec_of(k), root=root) for k in keys})
    except MMATSError:
        return False
    return True


def _two_combinations(strategy) -> dict:
    """A grid of the defaults and one other valid combination: the sweep kernel is one
    per strategy, compiled whatever the grid."""
    combos, _ = strategy.combinations(None)
    defaults = strategy.resolve_params()
    other = next((c for c in combos if c != defaults), defaults)
    return {name: sorted({defaults[name], other[name]}) for name in strategy.param_names}


def _replay(strategy: str, candles, mode: str, root: str | None = None) -> None:
    """A replay of ``strategy`` (a name or path) through the live runner: one tick per
    bar, each loading its state from the journal, as cron runs it."""
    from mmats.data import load
    from mmats.live.config import parse_config
    from mmats.live.replay import replay
    from mmats.live.sleeves import extra_symbols

    attrs = candles.attrs
    symbol = attrs.get("symbol") or "SAMPLE"
    config = parse_config({
        "mode": "paper",
        "markets": {"m": {"type": _MARKET_TYPES.get(attrs.get("calendar"), "crypto"),
                          "feed": attrs.get("venue") or "sample", "execution": "paper",
                          "symbols": [symbol], "timeframe": attrs["timeframe"]}},
        "models": [{"id": "warmup", "strategy": strategy, "market": "m"}],
    })
    given = {symbol: candles}
    for other in extra_symbols(config, "m"):  # read by the strategy's extra inputs
        frame = load(f"{attrs.get('venue')}:{other}:{attrs['timeframe']}", root=root)
        given[other] = frame[frame["ts"] <= candles["ts"].iloc[-1]].reset_index(drop=True)
    with tempfile.TemporaryDirectory(prefix="mmats-warmup-") as folder, _quiet("mmats.live"):
        replay(config, given, Path(folder) / "journal.sqlite", mode=mode)


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Warnings of a scratch replay (its journal is unsigned, ...) are not the user's."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _timed(label: str, run) -> Step:
    """Run ``run()``, recording numba's compilations (``numba:compile`` events) and
    cache loads."""
    from numba.core import event

    hits_before = _cache_hits()
    started = time.perf_counter()
    with event.install_recorder("numba:compile") as recorder:
        run()
    step = Step(label, time.perf_counter() - started)
    opened = {}
    for stamp, happened in recorder.buffer:
        name = _kernel_name(happened.data["dispatcher"])
        if happened.is_start:
            opened.setdefault(name, stamp)
        elif name in opened:
            step.compiled[name] = step.compiled.get(name, 0.0) + stamp - opened.pop(name)
    step.cached = _cache_hits() - hits_before
    return step


def _dispatchers():
    """The numba functions of MMATS's modules, its strategies and its generated kernels
    (all loaded under names starting with ``mmats``)."""
    from numba.core.dispatcher import Dispatcher

    for name, module in list(sys.modules.items()):
        if name.startswith("mmats") and module is not None:
            for value in list(vars(module).values()):
                if isinstance(value, Dispatcher):
                    yield value


def _cache_hits() -> int:
    seen = {id(d): d for d in _dispatchers()}
    return sum(sum(d.stats.cache_hits.values()) for d in seen.values())


def _kernel_name(dispatcher) -> str:
    """``nb.sim.simulate``, ``ema_cross.signal``: the module without the package prefix and
    the content hashes generated modules carry."""
    function = dispatcher.py_func
    module = re.sub(r"^mmats(_strategies|_kernels)?\.", "", function.__module__)
    module = re.sub(r"_[0-9a-f]{12,}", "", module)
    return f"{module}.{function.__qualname__}"


def _print_step(step: Step) -> None:
    slowest = sorted(step.compiled.items(), key=lambda item: -item[1])[:3]
    detail = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in slowest)
    more = f" (slowest: {detail})" if detail else ""
    print(f"  {step.name:36s} {step.seconds:6.1f} s  compiled {len(step.compiled):3d}, "
          f"from cache {step.cached:3d}{more}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
