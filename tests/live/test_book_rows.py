"""The scopes' books (a global or market limit's day, day-start equity, equity peak and
trip) are journaled at the closes that move them, not at every close: the journal holds
the same succession of books as when every close journaled them, and a replay ends in
the same states."""

import pytest

from mmats.data import load
from mmats.live.closes import Book, book_id
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.portfolio import scopes
from mmats.live.replay import replay
from mmats.live.sleeves import sleeves


def _config():
    return parse_config({
        "mode": "paper",
        "risk": {"max_drawdown_pct": 3.0, "max_daily_loss_pct": 1.0},
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC", "LTC/BTC"], "timeframe": "5m",
                               "risk": {"max_daily_loss_pct": 0.5}}},
        "models": [
            {"id": "ema", "strategy": "ema_cross", "market": "crypto",
             "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}},
            {"id": "rsi", "strategy": "rsi_reversion", "market": "crypto",
             "params": {"period": 7, "lower": 35, "upper": 65}, "costs": {"fee_bps": 10}},
        ],
    })


@pytest.fixture(scope="module")
def candles():
    return {symbol: load(f"bittrex:{symbol}:5m").iloc[:900].reset_index(drop=True)
            for symbol in ("ETH/BTC", "LTC/BTC")}


def _books(path, config) -> dict[str, list[bytes]]:
    """Each scope's journaled books, oldest first."""
    with Journal(path) as journal:
        return {scope.name: [row["state"] for row in journal.rows(
            "sleeve_states", "sleeve_id = ?", (book_id(scope),))]
            for scope in scopes(config, sleeves(config, 1.0))}


def _successive(rows: list[bytes]) -> list[bytes]:
    """The rows less those equal to the one before."""
    return [row for i, row in enumerate(rows) if i == 0 or row != rows[i - 1]]


def test_books_are_journaled_when_they_move(tmp_path, candles, monkeypatch):
    config = _config()
    moved = replay(config, candles, tmp_path / "moved.sqlite")
    with monkeypatch.context() as patch:  # every close journals every book, as before
        patch.setattr(Book, "unjournaled", lambda self: list(self.scopes))
        every = replay(config, candles, tmp_path / "every.sqlite")
    books_moved, books_every = _books(tmp_path / "moved.sqlite", config), \
        _books(tmp_path / "every.sqlite", config)
    with Journal(tmp_path / "every.sqlite") as journal:
        closes = len({row["ts_ns"] for row in journal.rows("ticks")})
        tripped = {row["kind"] for row in journal.rows("risk_events")}
    assert tripped  # a limit acted: its book moved
    for name, rows in books_every.items():
        assert len(rows) == closes  # one a close
        assert books_moved[name] == _successive(rows), name
        assert 0 < len(books_moved[name]) < len(rows) / 5, name  # most closes move nothing
    for sleeve_id, state in every.states.items():
        assert moved.states[sleeve_id].tobytes() == state.tobytes()
    assert moved.equity.equals(every.equity)
    with Journal(tmp_path / "moved.sqlite") as journal:
        assert journal.verify().ok
