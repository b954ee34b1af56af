"""fetch_into_store and scripts/fetch_data.py with the real ccxt client against the local
Binance look-alike."""

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest

from mmats.brokers.base import VenueUnavailable
from mmats.data import CandleStore
from mmats.data.fetch import fetch_into_store
from mmats.data.schema import candles_from_arrays
from mmats.errors import ConfigError

from .binance_server import kline_values
from .conftest import FIRST_BAR_MS, MINUTE_MS, NOW_MS

KLINES = "/api/v3/klines"
FORMING_MS = NOW_MS // MINUTE_MS * MINUTE_MS  # the bar still forming at NOW_MS
CLOSED = (FORMING_MS - FIRST_BAR_MS) // MINUTE_MS  # 2500 closed bars


def stamp(ms):
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def fetch(broker, root, **kwargs):
    kwargs = {"since": stamp(FIRST_BAR_MS), "now_ms": NOW_MS, **kwargs}
    return fetch_into_store(broker, CandleStore(root), "binance", "BTC/USDT", "1m", **kwargs)


def stored(root):
    return CandleStore(root).read("binance", "BTC/USDT", "1m")


def expected(first_ms, count):
    opens = first_ms + MINUTE_MS * np.arange(count)
    values = np.array([kline_values(int(t), MINUTE_MS) for t in opens])
    return candles_from_arrays(opens * 1_000_000, {c: values[:, i] for i, c in
                                                   enumerate(("open", "high", "low", "close",
                                                              "volume"))})


def test_pages_into_the_store_without_the_forming_bar(server, broker, tmp_path):
    report = fetch(broker, tmp_path)
    assert (report.pages, report.bars_received, report.bars_added) == (3, CLOSED, CLOSED)
    assert report.forming_dropped == 1 and report.rows_stored == CLOSED
    assert server.count("GET", KLINES) == 3
    assert report.first_ts == stamp(FIRST_BAR_MS)
    assert report.last_ts == stamp(FORMING_MS - MINUTE_MS)
    assert report.gaps == [] and report.missing_bars == 0 and report.calendar == "24/7"
    frame = stored(tmp_path)
    pd.testing.assert_frame_equal(frame, expected(FIRST_BAR_MS, CLOSED), check_like=True)


def test_a_rerun_fetches_nothing_and_leaves_the_file_alone(server, broker, tmp_path):
    fetch(broker, tmp_path)
    path = CandleStore(tmp_path).path("binance", "BTC/USDT", "1m")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    requests = server.count("GET", KLINES)
    again = fetch(broker, tmp_path)
    assert (again.pages, again.bars_added, again.rows_stored) == (0, 0, CLOSED)
    assert server.count("GET", KLINES) == requests
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_an_interrupted_fetch_resumes_to_the_same_store(server, make_broker, tmp_path):
    broker = make_broker()
    server.fail("500", times=100, path=KLINES, after=2)  # the venue fails from page 3 on
    with pytest.raises(VenueUnavailable, match="binance BTC/USDT: fetch 1m candles"):
        fetch(broker, tmp_path / "interrupted")
    assert len(stored(tmp_path / "interrupted")) == 2000  # the two pages that arrived
    server.clear_faults()
    resumed = fetch(broker, tmp_path / "interrupted")
    assert (resumed.pages, resumed.bars_added) == (1, CLOSED - 2000)

    fetch(make_broker(), tmp_path / "straight")
    pd.testing.assert_frame_equal(stored(tmp_path / "interrupted"), stored(tmp_path / "straight"))


class CountingStore(CandleStore):
    writes = 0

    def write(self, *args, **kwargs):
        self.writes += 1
        return super().write(*args, **kwargs)


def test_each_page_is_written_as_it_arrives(server, broker, tmp_path):
    store = CountingStore(tmp_path)
    fetch_into_store(broker, store, "binance", "BTC/USDT", "1m", since=stamp(FIRST_BAR_MS),
                     now_ms=NOW_MS)
    assert store.writes == 3


def test_gathered_pages_are_written_together_and_kept_when_the_fetch_fails(server, broker,
                                                                          tmp_path):
    store = CountingStore(tmp_path)
    server.fail("500", times=100, path=KLINES, after=2)
    with pytest.raises(VenueUnavailable):
        fetch_into_store(broker, store, "binance", "BTC/USDT", "1m",
                         since=stamp(FIRST_BAR_MS), now_ms=NOW_MS, flush_s=3600)
    assert store.writes == 1 and len(stored(tmp_path)) == 2000
    server.clear_faults()
    report = fetch_into_store(broker, store, "binance", "BTC/USDT", "1m",
                              since=stamp(FIRST_BAR_MS), now_ms=NOW_MS, flush_s=3600)
    assert store.writes == 2 and report.bars_added == CLOSED - 2000
    pd.testing.assert_frame_equal(stored(tmp_path), expected(FIRST_BAR_MS, CLOSED),
                                  check_like=True)


def test_the_forming_bar_is_stored_once_closed_with_its_final_values(server, broker, tmp_path):
    fetch(broker, tmp_path)
    server.now_ms = NOW_MS + MINUTE_MS
    later = fetch(broker, tmp_path, now_ms=NOW_MS + MINUTE_MS)
    assert (later.pages, later.bars_added, later.forming_dropped) == (1, 1, 1)
    last = stored(tmp_path).iloc[-1]
    assert last["ts"] == stamp(FORMING_MS)
    assert tuple(last.iloc[1:]) == kline_values(FORMING_MS, MINUTE_MS)


def test_gaps_are_reported(server, broker, tmp_path):
    missing = {FIRST_BAR_MS + 10 * MINUTE_MS, FIRST_BAR_MS + 11 * MINUTE_MS,
               FIRST_BAR_MS + 1500 * MINUTE_MS}
    server.add_klines("BTCUSDT", "1m", first_open_ms=FIRST_BAR_MS, missing=missing)
    report = fetch(broker, tmp_path)
    assert report.rows_stored == CLOSED - 3 and report.missing_bars == 3
    assert [(g.start, g.end, g.missing_bars) for g in report.gaps] == [
        (stamp(FIRST_BAR_MS + 9 * MINUTE_MS), stamp(FIRST_BAR_MS + 12 * MINUTE_MS), 2),
        (stamp(FIRST_BAR_MS + 1499 * MINUTE_MS), stamp(FIRST_BAR_MS + 1501 * MINUTE_MS), 1)]
    assert "gaps: 2, 3 missing bar(s) (24/7 calendar)" in str(report)
    assert report.to_dict()["gaps"][0]["missing_bars"] == 2


def test_until_is_exclusive(server, broker, tmp_path):
    report = fetch(broker, tmp_path, until=stamp(FIRST_BAR_MS + 1500 * MINUTE_MS))
    assert (report.pages, report.rows_stored) == (2, 1500)
    assert report.last_ts == stamp(FIRST_BAR_MS + 1499 * MINUTE_MS)


def test_an_earlier_since_back_fills(server, broker, tmp_path):
    fetch(broker, tmp_path, since=stamp(FIRST_BAR_MS + 1200 * MINUTE_MS))
    report = fetch(broker, tmp_path)
    assert (report.bars_added, report.rows_stored) == (1200, CLOSED)
    pd.testing.assert_frame_equal(stored(tmp_path), expected(FIRST_BAR_MS, CLOSED),
                                  check_like=True)


def test_since_off_the_grid_starts_at_the_next_bar(server, broker, tmp_path):
    report = fetch(broker, tmp_path, since=stamp(FIRST_BAR_MS + 30_000))
    assert report.first_ts == stamp(FIRST_BAR_MS + MINUTE_MS)


def test_since_before_the_listing_starts_at_the_first_bar(server, broker, tmp_path):
    report = fetch(broker, tmp_path, since="2020-01-01")
    assert report.first_ts == stamp(FIRST_BAR_MS) and report.rows_stored == CLOSED


def test_until_before_since_is_a_config_error(broker, tmp_path):
    with pytest.raises(ConfigError, match="until .* must be after since"):
        fetch(broker, tmp_path, until=stamp(FIRST_BAR_MS - MINUTE_MS))


class ListSource:
    """Any venue: pages of a fixed frame, sending one bar before the cursor as some venues
    do, and a page size smaller than asked for."""

    def __init__(self, frame, page=7):
        self.frame, self.page, self.calls = frame, page, 0

    def fetch_candles(self, symbol, timeframe, since_ms, limit=1000):
        self.calls += 1
        ts_ms = self.frame["ts"].astype("int64") // 1_000_000
        start = max(0, int(np.searchsorted(ts_ms, since_ms)) - 1)
        return self.frame.iloc[start:start + min(limit, self.page)].reset_index(drop=True)


def test_any_source_with_fetch_candles_works(tmp_path):
    frame = expected(FIRST_BAR_MS, 30)
    source = ListSource(frame)
    store = CandleStore(tmp_path)
    report = fetch_into_store(source, store, "somevenue", "ABC/XYZ", "1m",
                              since=stamp(FIRST_BAR_MS), now_ms=FIRST_BAR_MS + 40 * MINUTE_MS,
                              calendar="24/7")
    assert report.bars_added == 30 and source.calls == 6  # 7, then 6 new per page, then none
    pd.testing.assert_frame_equal(store.read("somevenue", "ABC/XYZ", "1m"), frame,
                                  check_like=True)


def test_progress_bar_on_request(server, broker, tmp_path, capsys):
    fetch(broker, tmp_path, progress=True)
    assert "binance BTC/USDT 1m" in capsys.readouterr().err


# -- the script ----------------------------------------------------------------------------

def run(repo, python, *args, env=None):
    return subprocess.run([python, "scripts/fetch_data.py", *map(str, args)],
                          capture_output=True, text=True, cwd=repo, timeout=120,
                          env={**os.environ, **(env or {})})


def test_script_help(repo, python):
    done = run(repo, python, "--help")
    assert done.returncode == 0 and "usage" in done.stdout and "MMATS_" in done.stdout


def test_script_fetches_resumes_and_reports_gaps(repo, python, server, tmp_path):
    server.add_klines("BTCUSDT", "1m", first_open_ms=FIRST_BAR_MS,
                      missing={FIRST_BAR_MS + 100 * MINUTE_MS})
    args = ["binance", "BTC/USDT", "1m", "--since", stamp(FIRST_BAR_MS).isoformat(),
            "--until", stamp(FIRST_BAR_MS + 1200 * MINUTE_MS).isoformat(),
            "--root", tmp_path, "--base-url", server.url]
    done = run(repo, python, *args, "--json", "--flush-seconds", "60")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["bars_added"], out["rows_stored"], out["missing_bars"]) == (1199, 1199, 1)
    assert out["gaps"][0]["start"] == stamp(FIRST_BAR_MS + 99 * MINUTE_MS).isoformat()

    again = run(repo, python, *args)
    assert again.returncode == 0, again.stderr
    assert "0 page(s)" in again.stdout and "+0 new" in again.stdout
    assert "1 missing bar(s)" in again.stdout


def test_script_errors_name_venue_and_symbol(repo, python, server, tmp_path):
    done = run(repo, python, "binance", "BTC/USDX", "1m", "--since", "2023-01-01",
               "--root", tmp_path, "--base-url", server.url)
    assert done.returncode == 2  # a symbol the venue does not list: the command is wrong
    assert "error: binance BTC/USDX 1m: binance has no market 'BTC/USDX'" in done.stderr

    done = run(repo, python, "binanse", "BTC/USDT", "1m", "--since", "2023-01-01",
               "--root", tmp_path)
    assert done.returncode == 2 and "unknown exchange 'binanse'" in done.stderr

    server.fail("418", path=KLINES, retry_after=600)  # banned for longer than it waits
    done = run(repo, python, "binance", "BTC/USDT", "1m", "--since", "2023-01-01",
               "--root", tmp_path, "--base-url", server.url)
    assert done.returncode == 1
    assert "error: binance BTC/USDT 1m: binance BTC/USDT: fetch 1m candles: rate limited" \
        in done.stderr


def test_script_rejects_bad_arguments(repo, python, tmp_path):
    done = run(repo, python, "binance", "BTC/USDT", "7x", "--since", "2023-01-01")
    assert done.returncode == 2 and "timeframe '7x'" in done.stderr
    done = run(repo, python, "binance", "BTC/USDT", "1m", "--since", "2023-01-02",
               "--until", "2023-01-01")
    assert done.returncode == 2 and "must be after" in done.stderr


def test_script_oanda_without_a_token_says_so(repo, python, tmp_path):
    env = {k: "" for k in ("OANDA_TOKEN", "OANDA_ACCOUNT_ID", "MMATS_OANDA_TOKEN",
                           "MMATS_OANDA_API_KEY", "MMATS_OANDA_ACCOUNT_ID")}
    done = run(repo, python, "oanda", "EUR/USD", "1h", "--since", "2024-01-01",
               "--root", tmp_path, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: oanda EUR/USD 1h: ")
    assert "OANDA" in done.stderr
