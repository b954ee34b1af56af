"""The news/sentiment connector: records checked with the reason and the line, read from a
file, a folder and a real local HTTP endpoint, aligned to bars as-of (a record counts
only at closes after it, for its horizon), and the rule that turns them into confidence
and a size cap."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmats.data.sentiment import (
    SentimentRule,
    align_sentiment,
    parse_record,
    read_sentiment,
    sentiment_factor,
)
from mmats.errors import ConfigError, DataError
from mmats.units import MINUTE_NS

GOOD = {"timestamp": "2018-01-12T10:03:00Z", "symbol": "ETH/BTC", "sentiment": -0.6,
        "impact_horizon": "5m", "source": "wire", "headline": "Exchange halts withdrawals"}


def line(**changes) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def ns(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value


@pytest.mark.parametrize(("changes", "reason"), [
    ({"sentiment": 1.5}, "'sentiment' must be a number in [-1, 1], not 1.5"),
    ({"sentiment": "0.3"}, "'sentiment' must be a number in [-1, 1]"),
    ({"sentiment": True}, "'sentiment' must be a number in [-1, 1]"),
    ({"impact_horizon": "1d"}, "'impact_horizon' must be one of 1m, 5m, 1h, not '1d'"),
    ({"timestamp": "2018-01-12T10:03:00"}, "has no time zone"),
    ({"timestamp": "yesterday"}, "is not an ISO 8601 time"),
    ({"timestamp": 1515751380000}, "must be an ISO 8601 string"),
    ({"symbol": ""}, "'symbol' must be a non-empty string"),
    ({"source": ...}, "missing 'source'"),
    ({"headline": 7}, "'headline' must be a string"),
])
def test_a_bad_record_is_refused_with_its_reason(changes, reason):
    with pytest.raises(ValueError) as refused:
        parse_record(line(**changes))
    assert reason in str(refused.value)


def test_a_file_keeps_good_records_and_names_each_refused_line(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text("\n".join([line(), "", "{not json", line(sentiment=-2),
                               line(timestamp="2018-01-12T09:00:00+01:00", sentiment=0.4),
                               "[1, 2]"]) + "\n")
    records = read_sentiment(path)
    assert len(records) == 2
    # sorted by time: 09:00+01:00 is 08:00 UTC, before 10:03 UTC
    assert list(records.frame["ts_ns"]) == [ns("2018-01-12 08:00"), ns("2018-01-12 10:03")]
    assert [(r.line, r.reason.split(" (")[0]) for r in records.refused] == [
        (3, "not JSON"), (4, "'sentiment' must be a number in [-1, 1], not -2"),
        (6, "not a JSON object")]
    assert all(r.where == str(path) for r in records.refused)
    with pytest.raises(DataError, match=r"3 sentiment record\(s\) refused: .*news.jsonl, "
                                        r"line 3: not JSON"):
        read_sentiment(path, strict=True)


def test_a_folder_is_read_in_name_order_and_repeats_are_kept_once(tmp_path):
    (tmp_path / "b.jsonl").write_text(line() + "\n" + line(sentiment=0.2) + "\n")
    (tmp_path / "a.jsonl").write_text(line() + "\n")  # the same record as b's first
    (tmp_path / "notes.txt").write_text("not read")
    records = read_sentiment(tmp_path)
    assert sorted(records.frame["sentiment"]) == [-0.6, 0.2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no \\*.jsonl file"):
        read_sentiment(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        read_sentiment(tmp_path / "missing.jsonl")


class _Endpoint(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 200

    def do_GET(self):  # noqa: N802 (the standard library's name)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_http_endpoint_is_read_and_its_failures_named(endpoint):
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/sentiment"
    _Endpoint.status, _Endpoint.body = 200, (line() + "\n" + line(symbol="LTC/BTC") + "\n"
                                             + "oops\n").encode()
    records = read_sentiment(url)
    assert list(records.frame["symbol"]) == ["ETH/BTC", "LTC/BTC"]
    assert [(r.where, r.line) for r in records.refused] == [(url, 3)]
    _Endpoint.status = 503
    with pytest.raises(DataError, match=f"sentiment endpoint {url} answered HTTP 503"):
        read_sentiment(url)
    with pytest.raises(DataError, match="could not be read"):
        read_sentiment("http://127.0.0.1:9/nothing-listens", timeout_s=2)


def test_a_record_counts_only_at_closes_after_it_for_its_horizon(tmp_path):
    opens = np.arange(ns("2018-01-12 09:55"), ns("2018-01-12 11:30"), 5 * MINUTE_NS)
    path = tmp_path / "news.jsonl"
    path.write_text("\n".join([
        line(timestamp="2018-01-12T10:03:00Z", sentiment=-0.6, impact_horizon="5m"),
        # exactly at a close (10:05): not known at that close, counted from the next
        line(timestamp="2018-01-12T10:05:00Z", sentiment=0.4, impact_horizon="1m"),
        line(timestamp="2018-01-12T10:20:00Z", sentiment=0.8, impact_horizon="1h"),
        line(symbol="LTC/BTC", sentiment=1.0),
    ]))
    records = read_sentiment(path)
    values, counts = align_sentiment(records, "ETH/BTC", opens, 5 * MINUTE_NS)
    closes = pd.to_datetime(opens + 5 * MINUTE_NS, utc=True).strftime("%H:%M")
    seen = {c: (v, n) for c, v, n in zip(closes, values, counts, strict=True) if n}
    # 10:03 + 5m: only the close at 10:05; 10:05 + 1m: no close in (10:05, 10:06];
    # 10:20 + 1h: the closes 10:25 ... 11:20
    expected = {"10:05": (-0.6, 1)}
    expected.update({t.strftime("%H:%M"): (0.8, 1) for t in
                     pd.date_range("2018-01-12 10:25", "2018-01-12 11:20", freq="5min")})
    assert seen == expected
    assert np.isnan(values[counts == 0]).all()


def test_alignment_equals_a_brute_force_as_of_reading():
    """Random records, both ways of combining: each bar's value is what reading only the
    records stamped before its close (and still in force) gives."""
    rng = np.random.default_rng(7)
    bar = 5 * MINUTE_NS
    opens = ns("2018-01-12") + bar * np.arange(400)
    stamps = ns("2018-01-12") + rng.integers(-3600, 400 * 300, 300) * 1_000_000_000
    stamps[:20] = opens[rng.integers(0, 400, 20)] + bar  # some exactly at a close
    horizons = rng.choice([MINUTE_NS, 5 * MINUTE_NS, 60 * MINUTE_NS], 300)
    frame = pd.DataFrame({"ts_ns": stamps, "symbol": "X", "sentiment": rng.uniform(-1, 1, 300),
                          "horizon_ns": horizons, "source": "s", "headline": ""})
    frame = frame.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    for how in ("mean", "last"):
        values, counts = align_sentiment(frame, "X", opens, bar, how=how)
        for i, close in enumerate(opens + bar):
            live = frame[(frame.ts_ns < close) & (close <= frame.ts_ns + frame.horizon_ns)]
            assert counts[i] == len(live)
            if live.empty:
                assert np.isnan(values[i])
            elif how == "mean":
                assert values[i] == pytest.approx(live.sentiment.mean(), abs=1e-12)
            else:
                assert values[i] == live.sentiment.iloc[-1]


def test_the_rule_lowers_confidence_and_caps_size_only_against_the_position():
    rule = SentimentRule.from_dict({"weight": 0.5, "cap_above": 0.6, "cap": 0.25})
    sentiment = np.array([np.nan, 0.8, -0.4, -0.8, 0.8, -0.8, 0.9])
    exposure = np.array([1.0, 1.0, 1.0, 1.0, -0.5, 0.0, np.nan])
    multiplier, cap = rule.apply(sentiment, exposure)
    np.testing.assert_allclose(multiplier, [1.0, 1.0, 0.8, 0.6, 0.6, 1.0, 1.0])
    inf = np.inf
    np.testing.assert_allclose(cap, [inf, inf, inf, 0.25, 0.25, inf, inf])
    assert sentiment_factor(-1.0, 1.0, 1.0, 1.0, 0.0) == (0.0, 0.0)


@pytest.mark.parametrize(("values", "message"), [
    ({"weight": 1.5}, "sentiment.weight must be a number in [0, 1], not 1.5"),
    ({"cap_above": 0}, "sentiment.cap_above must be a number in (0, 1], not 0"),
    ({"cap": "half"}, "sentiment.cap must be a number in [0, 1]"),
    ({"how": "median"}, "sentiment.how must be one of mean, last"),
    ({"wieght": 0.2}, "unknown key 'wieght'"),
])
def test_a_bad_rule_names_its_key(values, message):
    with pytest.raises(ConfigError) as error:
        SentimentRule.from_dict(values)
    assert message in str(error.value)


def test_the_synthetic_sample_ships_whole_and_is_its_generators_output(tmp_path):
    """The sample reads with no refusal, lies within the ETH/BTC candles, stamps a few
    records exactly at a close, and is what research/make_sentiment_sample.py writes."""
    import importlib.util

    import mmats

    sample = Path(mmats.__file__).parent / "data" / "sample" / "sentiment" / "ETH_BTC.jsonl"
    records = read_sentiment(sample, strict=True)
    assert len(records) > 200 and set(records.frame["symbol"]) == {"ETH/BTC"}
    assert records.frame["ts_ns"].is_monotonic_increasing
    on_close = records.frame["ts_ns"] % (5 * 60 * 10**9) == 0
    assert 0 < on_close.sum() < len(records) // 5
    root = Path(mmats.__file__).parents[1] / "research" / "make_sentiment_sample.py"
    if not root.exists():
        pytest.skip("an installed copy without the research folder")
    spec = importlib.util.spec_from_file_location("make_sentiment_sample", root)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == sample.read_bytes()


def test_a_backtest_reads_sentiment_as_of_and_it_lowers_and_caps_exposure():
    """The sample's records change what the bar step acts on exactly where the rule says,
    only against the position, never opening one; and the as-of check passes."""
    import mmats
    from mmats.backtest import backtest, market
    from mmats.data.sentiment import check_asof, sentiment_factors

    sample = Path(mmats.__file__).parent / "data" / "sample" / "sentiment" / "ETH_BTC.jsonl"
    spec = "bittrex:ETH/BTC:5m"
    rule = {"weight": 1.0, "cap_above": 0.5, "cap": 0.25}
    plain = backtest("ema_cross", spec, {"fast": 10, "slow": 50})
    news = backtest("ema_cross", spec, {"fast": 10, "slow": 50}, sentiment=sample,
                    sentiment_rule=rule)
    signal, acted = news.signal.to_numpy(), news.acted.to_numpy()
    np.testing.assert_array_equal(plain.acted.to_numpy(), signal)
    changed = signal != acted
    assert changed.sum() > 50
    assert (acted[changed] < signal[changed]).all() and (acted >= 0).all()  # long-only EMA
    assert (signal[changed] > 0).all()  # flat stays flat: sentiment opens nothing
    prices = market(spec)
    multiplier, cap = sentiment_factors(read_sentiment(sample), SentimentRule(**rule),
                                        "ETH/BTC", prices.ts_ns, prices.bar_ns, signal)
    np.testing.assert_array_equal(acted, np.minimum(signal * multiplier, cap))
    assert news.metrics["total_return"] != plain.metrics["total_return"]
    assert check_asof(read_sentiment(sample), SentimentRule(**rule), "ETH/BTC",
                      prices.ts_ns, prices.bar_ns, signal, n_cuts=200) == []


def test_the_as_of_check_catches_a_record_used_before_its_time():
    """An alignment that reads an hour ahead (as a feed stamped an hour late would) is
    caught: the check sees bars moved by records not yet known at their close."""
    from mmats.backtest import market
    from mmats.data.sentiment import check_asof

    prices = market("bittrex:ETH/BTC:5m")
    records = read_sentiment(Path(__file__).parents[2] / "mmats" / "data" / "sample"
                             / "sentiment" / "ETH_BTC.jsonl")
    signal = np.ones(len(prices))
    rule = SentimentRule(weight=1.0, cap_above=0.5, cap=0.25)
    assert check_asof(records, rule, "ETH/BTC", prices.ts_ns, prices.bar_ns, signal) == []
    import mmats.data.sentiment as module

    honest = module.align_sentiment

    def peeking(records, symbol, bar_open_ns, bar_ns, *, how="mean"):
        return honest(records, symbol, bar_open_ns + 3_600_000_000_000, bar_ns, how=how)
    module.align_sentiment = peeking
    try:
        late = check_asof(records, rule, "ETH/BTC", prices.ts_ns, prices.bar_ns, signal)
    finally:
        module.align_sentiment = honest
    assert len(late) > 10


def test_a_bar_aligned_alone_equals_it_aligned_with_the_history_bit_for_bit():
    """A live tick aligns one bar; the backtest the whole history: the same additions in
    the same order, so the same float, even where several records are in force."""
    from mmats.backtest import market

    prices = market("bittrex:ETH/BTC:5m")
    records = read_sentiment(Path(__file__).parents[2] / "mmats" / "data" / "sample"
                             / "sentiment" / "ETH_BTC.jsonl")
    whole, counts = align_sentiment(records, "ETH/BTC", prices.ts_ns, prices.bar_ns)
    assert counts.max() >= 2
    for i in np.flatnonzero(counts > 0):
        alone, _ = align_sentiment(records, "ETH/BTC", prices.ts_ns[i:i + 1], prices.bar_ns)
        assert alone[0] == whole[i]
