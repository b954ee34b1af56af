"""The live tick reads top-down as named stages (:mod:`mmats.live.tick`), run in order on
real ticks; and the live wing's modules import one another without a loop: control and
runner never import each other, and no module imports another's private name."""

import ast
from pathlib import Path

import pytest

import mmats.live
from mmats.data import CandleStore, load
from mmats.live import control
from mmats.live.config import parse_config
from mmats.live.journal import Journal

FIVE_MINUTES = 300_000_000_000
LIVE = Path(mmats.live.__file__).parent
STAGES = ["sync", "recover", "reconcile", "decide", "gate", "journal", "plan", "act",
          "stale_check", "notify"]
PER_CLOSE = ["decide", "gate", "journal"]


def _config(tmp_path, mode):
    return parse_config({
        "mode": mode, "stale_after_bars": 3,
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}}],
        "notifications": [f"file://{tmp_path / 'notes.log'}"],
        "journal": str(tmp_path / "journal.sqlite"),
        "data_root": str(tmp_path / "data"),
    })


@pytest.fixture
def candles(tmp_path):
    """The store holds the first 250 bars of the sample."""
    frame = load("bittrex:ETH/BTC:5m").iloc[:400].reset_index(drop=True)
    CandleStore(tmp_path / "data").write("bittrex", "ETH/BTC", "5m", frame.iloc[:250])
    return frame


def _close(candles, bar):
    return candles["ts"].iloc[bar].value + FIVE_MINUTES


def _tick(config, now_ns, **options):
    """One store tick as cron runs it; returns (report, stages run, tables appended to,
    in the journal's order)."""
    head = 0
    if config.journal.exists():  # (an operator journal is created signed, by the tick)
        with Journal(config.journal, readonly=True) as journal:
            head = journal.head()[0]
    stages = []
    report = control.tick_once(config, now_ns=now_ns, trace=stages.append, **options)
    with Journal(config.journal, readonly=True) as journal:
        tables = [row["table_name"] for row in journal.rows("chain") if row["seq"] > head]
    return report, stages, tables


def test_a_paper_tick_runs_the_stages_in_order(tmp_path, candles):
    config = _config(tmp_path, "paper")
    # the first tick warms up on 249 closed bars: decide, gate, journal at each close,
    # and the newest close's plan (a paper tick plans nothing: the kernel fills)
    report, stages, tables = _tick(config, _close(candles, 248) + 1)
    assert report.bars == 249
    assert stages == STAGES[:3] + PER_CLOSE * 249 + STAGES[6:]
    assert tables[0] == "config_snapshots"  # sync journals the configuration first
    assert tables.count("ticks") == tables.count("signals") == 249
    # a cron tick one bar later: every stage once, in the stated order
    report, stages, tables = _tick(config, _close(candles, 249))
    assert report.bars == 1
    assert stages == STAGES
    written = [t for t in tables if t not in ("orders", "fills")]
    # the bar, its decision, the sleeve's state; then the global and the market book,
    # where the close moved them (tests/live/test_book_rows.py)
    assert written[:3] == ["ticks", "signals", "sleeve_states"]
    assert written[3:] in ([], ["sleeve_states"], ["sleeve_states", "sleeve_states"])


def test_the_stale_check_comes_after_the_closes_and_before_the_notifications(
        tmp_path, candles):
    config = _config(tmp_path, "paper")
    _tick(config, _close(candles, 249))
    # no new bar for five bars (the limit is three): no close to process, the sleeve halts
    report, stages, tables = _tick(config, _close(candles, 249) + 5 * FIVE_MINUTES)
    assert report.bars == 0
    assert stages == ["sync", "recover", "reconcile", "act", "stale_check", "notify"]
    assert tables == ["sleeve_states", "risk_events"]  # halted, with its stale_data event
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == "HALTED"
    assert "MMATS halted: stale data" in (tmp_path / "notes.log").read_text()


def test_an_operator_tick_acts_after_the_close_is_journaled(tmp_path, candles):
    config = _config(tmp_path, "operator")  # real orders, to the paper venue
    _tick(config, _close(candles, 60))
    for bar in range(61, 250):  # one bar a tick, until a decision goes out
        report, stages, tables = _tick(config, _close(candles, bar))
        assert stages == STAGES
        if report.orders:
            break
    assert report.orders, "no order in 190 bars of ema_cross"
    first_order = tables.index("orders")
    # the close's bar and decision are in the journal before the order it decided
    assert tables.index("ticks") < tables.index("signals") < first_order
    assert set(tables[first_order:]) <= {"orders", "fills", "sleeve_states", "risk_events"}


# -- the modules' imports ------------------------------------------------------------------
def _live_imports(path: Path) -> set[str]:
    """The ``mmats.live`` modules a module imports, at module level or inside functions."""
    found = set()
    package = "mmats.live"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                base = ".".join([package] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith(package + ".") and (LIVE / f"{name.split('.')[2]}.py").exists():
                found.add(".".join(name.split(".")[:3]))
    return found - {f"{package}.{path.stem}"}


def _private_imports(path: Path) -> list[str]:
    return [f"{node.module}.{alias.name}"
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmats")
            for alias in node.names if alias.name.startswith("_")]


def test_control_and_runner_do_not_import_each_other():
    control_imports = _live_imports(LIVE / "control.py")
    runner_imports = _live_imports(LIVE / "runner.py")
    assert "mmats.live.runner" not in control_imports
    assert "mmats.live.control" not in runner_imports
    # and the wiring both stand on imports neither of them
    assert not {"mmats.live.control", "mmats.live.runner"} & _live_imports(
        LIVE / "wiring.py")


def test_the_live_modules_import_one_another_without_a_loop():
    graph = {f"mmats.live.{path.stem}": _live_imports(path) for path in LIVE.glob("*.py")}
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import loop: " + " -> ".join(path[path.index(module):]
                                                               + [module]))
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_no_live_module_imports_a_private_name():
    private = {path.name: _private_imports(path) for path in LIVE.glob("*.py")}
    assert {name: found for name, found in private.items() if found} == {}


def test_the_stages_are_called_in_order_from_one_place():
    tree = ast.parse((LIVE / "tick.py").read_text())
    callers = {}
    for function in tree.body:
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                        and node.func.id in STAGES:
                    callers.setdefault(function.name, []).append(
                        (node.lineno, node.func.id))
    assert list(callers) == ["_run"]
    assert [name for _, name in sorted(callers["_run"])] == STAGES
