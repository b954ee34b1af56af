"""OANDA's v20 pricing stream through the real oandapyV20 client and requests, against a
local server speaking the stream dialect (tests/venues/oanda_stream_server.py)."""

import logging
import threading
import time
import traceback

import pytest

from mmats.brokers.base import AuthenticationFailed, BrokerError
from mmats.brokers.oanda_stream import OandaPricingStream, time_ns
from mmats.brokers.streams import (
    HEARTBEAT,
    BarBuilder,
    BarStream,
    StreamBar,
    StreamClosed,
    StreamTick,
    open_stream,
)
from mmats.errors import ConfigError
from mmats.live.config import VenueConfig

from .oanda_stream_server import OandaStreamServer

# Distinctive, so a leak into any message is found by a plain substring search.
TOKEN = "TOKENoa7Qx2Lm9Rv4Zp8Kw1Ys6Hd3"
ACCOUNT = "101-004-7777777-001"
MINUTE_NS = 60_000_000_000
T0 = 1_767_607_200_000_000_000  # 2026-01-05 10:00 UTC, a Monday
PROMPT_S = 1.5  # the contract's "about a second" after stop or close()


@pytest.fixture
def venue():
    server = OandaStreamServer(token=TOKEN, account_id=ACCOUNT, heartbeat_s=0.2).start()
    yield server
    server.stop()


class Running:
    """A stream's run() in a thread: what it emitted, how and when it ended."""

    def __init__(self, stream, symbols=("EUR/USD",), emit=None):
        self.stream, self.messages, self.stop = stream, [], threading.Event()
        self.error, self.ended_at = None, None
        self._emit = emit
        self.thread = threading.Thread(target=self._run, args=(symbols,), daemon=True)
        self.thread.start()

    def _run(self, symbols):
        try:
            self.stream.run(symbols, "1m", self._take, self.stop)
        except Exception as error:  # noqa: BLE001 - the test reads it
            self.error = error
        self.ended_at = time.monotonic()

    def _take(self, message):
        self.messages.append(message)
        if self._emit is not None:
            self._emit(message)

    def ticks(self):
        return [m for m in self.messages if isinstance(m, StreamTick)]

    def heartbeats(self):
        return sum(1 for m in self.messages if m == HEARTBEAT)

    def wait_ended(self, timeout_s=10.0):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"run() still running after {timeout_s} s"
        return self.error


def wait_for(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def stream_of(server, **extra):
    settings = dict(stream_url=server.url, timeout_s=5.0)
    settings.update(extra)
    return OandaPricingStream(server.account_id, settings.pop("token", TOKEN), **settings)


def started(server, symbols=("EUR/USD",), connections=1, **extra):
    running = Running(stream_of(server, **extra), symbols)
    server.wait_for_connections(connections)
    return running


def assert_hidden(error, secret=TOKEN):
    """The token is nowhere in the error: text, repr, arguments, chain or traceback."""
    assert error is not None
    assert error.__cause__ is None and (error.__context__ is None
                                        or error.__suppress_context__)
    texts = [str(error), repr(error), *map(str, error.args),
             "".join(traceback.format_exception(error))]
    assert not any(secret in text for text in texts), texts[0]


def test_prices_become_ticks_with_the_best_bid_and_ask_their_mid_and_the_quote_time(venue):
    running = started(venue, ("EUR/USD", "USD/JPY"))
    assert venue.requests[-1]["params"] == {"instruments": "EUR_USD,USD_JPY"}
    assert venue.requests[-1]["authorised"]
    venue.push_price("EUR_USD", "1.10001", "1.10011", time_ns=T0 + 123_456_789, depth=3)
    venue.push_price("USD_JPY", "157.123", "157.131", time_ns=T0 + 2_000_000_001,
                     pip="0.001", depth=2)
    wait_for(lambda: len(running.ticks()) == 2)
    eur, jpy = running.ticks()
    assert eur == StreamTick("EUR/USD", T0 + 123_456_789, (1.10001 + 1.10011) / 2,
                             bid=1.10001, ask=1.10011)
    assert jpy == StreamTick("USD/JPY", T0 + 2_000_000_001, (157.123 + 157.131) / 2,
                             bid=157.123, ask=157.131)
    assert running.stream.ticks == 2 and running.stream.bad_lines == 0
    running.stop.set()
    assert running.wait_ended() is None


def test_heartbeats_come_through_as_heartbeat(venue):
    running = started(venue)
    wait_for(lambda: running.heartbeats() >= 3, timeout_s=5)
    assert running.ticks() == []
    running.stop.set()
    assert running.wait_ended() is None


def test_ticks_fed_to_bar_builder_give_the_closed_bars_and_a_late_tick_is_dropped(venue):
    builder = BarBuilder("EUR/USD", "1m", MINUTE_NS)
    closed: list[StreamBar] = []

    def feed(message):  # what the feed watch does with each message
        if isinstance(message, StreamTick):
            closed.extend(builder.add(message))

    running = Running(stream_of(venue), emit=feed)
    venue.wait_for_connections(1)
    quotes = [  # second, bid, ask: mids 1.1001, 1.1005, 1.0999 | 1.1003, 1.1007 | 1.1010
        (1, "1.10005", "1.10015"), (20, "1.10045", "1.10055"), (59, "1.09985", "1.09995"),
        (61, "1.10025", "1.10035"), (90, "1.10065", "1.10075"),
        (30, "1.20000", "1.20010"),  # out of order: older than the bar now forming
        (125, "1.10095", "1.10105")]
    for second, bid, ask in quotes:
        venue.push_price("EUR_USD", bid, ask, time_ns=T0 + second * 1_000_000_000)
    wait_for(lambda: len(running.ticks()) == len(quotes))
    assert [bar.open_ns for bar in closed] == [T0, T0 + MINUTE_NS]
    first, second = closed
    assert (first.open, first.high, first.low, first.close, first.volume) == pytest.approx(
        (1.1001, 1.1005, 1.0999, 1.0999, 3))
    assert (second.open, second.high, second.low, second.close, second.volume) == \
        pytest.approx((1.1003, 1.1007, 1.1003, 1.1007, 2))
    assert all(bar.closed and bar.symbol == "EUR/USD" for bar in closed)
    assert builder.late_ticks == 1
    assert builder.forming().open == pytest.approx(1.1010)
    running.stop.set()
    running.wait_ended()


def test_prices_that_are_no_tick_are_skipped_but_prove_the_socket_alive(venue):
    venue.heartbeat_s = 60  # only the pushed lines
    running = started(venue)
    venue.push_price("EUR_USD", "1.1", "1.2", time_ns=T0, tradeable=False)  # market closed
    venue.push_price("EUR_USD", None, "1.2", time_ns=T0 + 1)  # an empty side
    venue.push_raw('{"type":"PRICE","instrument":"GBP_USD","time":"2026-01-05T10:00:00Z",'
                   '"bids":[{"price":"1.3"}],"asks":[{"price":"1.4"}],"tradeable":true}\n')
    venue.push_price("EUR_USD", "1.10001", "1.10011", time_ns=T0 + 2)
    wait_for(lambda: len(running.ticks()) == 1)
    assert running.ticks()[0].ts_ns == T0 + 2
    assert running.stream.skipped == 3 and running.stream.bad_lines == 0
    assert running.messages[:3] == [HEARTBEAT] * 3
    running.stop.set()
    running.wait_ended()


def test_malformed_lines_are_skipped_and_counted_and_split_lines_are_joined(venue):
    venue.heartbeat_s = 60
    running = started(venue)
    venue.push_raw("{not json\n")
    venue.push_raw("[1, 2]\n")
    venue.push_raw('{"type":"PRICE","instrument":"EUR_USD","time":"yesterday",'
                   '"bids":[{"price":"1.1"}],"asks":[{"price":"1.2"}],"tradeable":true}\n')
    venue.push_raw('{"type":"PRICE","instrument":"EUR_USD","time":"2026-01-05T10:00:00Z",'
                   '"bids":[{"price":"abc"}],"asks":[{"price":"1.2"}],"tradeable":true}\n')
    line = ('{"type":"PRICE","instrument":"EUR_USD","time":"2026-01-05T10:00:01.5Z",'
            '"bids":[{"price":"1.1"}],"asks":[{"price":"1.3"}],"tradeable":true}')
    venue.push_raw(line[:50])  # one line in two chunks, then two lines in one chunk
    venue.push_raw(line[50:] + "\n" + line.replace("01.5Z", "02Z") + "\n")
    wait_for(lambda: len(running.ticks()) == 2)
    assert running.stream.bad_lines == 4
    assert [t.ts_ns for t in running.ticks()] == [T0 + 1_500_000_000, T0 + 2_000_000_000]
    assert running.ticks()[0].price == pytest.approx(1.2)
    assert running.error is None and running.thread.is_alive()
    running.stop.set()
    assert running.wait_ended() is None


def test_a_dropped_connection_raises_stream_closed_and_a_reconnect_skips_the_snapshot(venue):
    venue.heartbeat_s = 60
    stream = stream_of(venue)
    running = Running(stream)
    venue.wait_for_connections(1)
    venue.push_price("EUR_USD", "1.10001", "1.10011", time_ns=T0)
    wait_for(lambda: len(running.ticks()) == 1)
    dropped = time.monotonic()
    assert venue.drop() == 1
    error = running.wait_ended()
    assert running.ended_at - dropped < PROMPT_S
    assert isinstance(error, StreamClosed) and "connection dropped" in str(error)
    assert f"{venue.url}/v3/accounts/{ACCOUNT}/pricing/stream" in str(error)
    assert_hidden(error)
    # the feed watch reconnects: OANDA's snapshot repeats the last price, already emitted
    again = Running(stream)
    venue.wait_for_connections(2)
    venue.push_price("EUR_USD", "1.10002", "1.10012", time_ns=T0 + 1)
    wait_for(lambda: len(again.ticks()) == 1)
    assert again.ticks()[0].ts_ns == T0 + 1 and stream.repeats == 1
    venue.finish()  # the venue ends the body properly: still a closed stream
    error = again.wait_ended()
    assert isinstance(error, StreamClosed) and "ended the stream" in str(error)


def test_close_from_another_thread_ends_a_silent_stream(venue):
    venue.go_silent()
    running = started(venue)
    time.sleep(0.3)  # run() is waiting on a socket that says nothing
    closed_at = time.monotonic()
    threading.Thread(target=running.stream.close).start()
    error = running.wait_ended()
    assert running.ended_at - closed_at < PROMPT_S
    assert isinstance(error, StreamClosed) and "closed by the runner" in str(error)
    wait_for(lambda: venue.open_streams() == 0, timeout_s=3)  # the connection was let go


def test_stop_returns_on_a_silent_socket_and_lets_the_connection_go(venue):
    venue.go_silent()
    running = started(venue)
    time.sleep(0.3)
    stopped_at = time.monotonic()
    running.stop.set()
    assert running.wait_ended() is None
    assert running.ended_at - stopped_at < PROMPT_S
    wait_for(lambda: venue.open_streams() == 0, timeout_s=3)


def test_stop_and_close_return_while_the_venue_has_not_answered_yet(venue):
    venue.headers_delay_s = 30  # the request is sent, the answer's headers never come
    for tries, end in enumerate(("stop", "close"), start=1):
        running = Running(stream_of(venue))
        wait_for(lambda n=tries: len(venue.requests) == n)
        time.sleep(0.2)
        ended_at = time.monotonic()
        if end == "stop":
            running.stop.set()
        else:
            running.stream.close()
        error = running.wait_ended()
        assert running.ended_at - ended_at < PROMPT_S
        assert error is None if end == "stop" else isinstance(error, StreamClosed)
    assert venue.connections == 0


def test_nothing_received_for_timeout_s_raises_stream_closed(venue):
    venue.go_silent()
    running = started(venue, timeout_s=0.5)
    error = running.wait_ended(timeout_s=5)
    assert isinstance(error, StreamClosed) and "nothing received for 0.5 s" in str(error)


def test_a_wrong_token_is_authentication_failed_and_not_retried(venue):
    wrong = "WRONGtokenZZ9x8c7v6b5n4m3"
    running = Running(stream_of(venue, token=wrong))
    error = running.wait_ended()
    assert isinstance(error, AuthenticationFailed) and not isinstance(error, StreamClosed)
    assert "HTTP 401" in str(error) and "check the token" in str(error)
    assert_hidden(error, wrong)
    venue.refuse(403, times=1)  # a token not allowed on this account
    error = Running(stream_of(venue)).wait_ended()
    assert isinstance(error, AuthenticationFailed) and "HTTP 403" in str(error)
    assert_hidden(error)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_server_error_is_stream_closed_naming_url_and_status(venue, status):
    venue.refuse(status, times=1)
    stream = stream_of(venue)
    error = Running(stream).wait_ended()
    assert isinstance(error, StreamClosed)
    assert f"HTTP {status}" in str(error) and venue.url in str(error)
    assert_hidden(error)
    running = Running(stream)  # the next try gets through
    venue.wait_for_connections(1)
    running.stop.set()
    assert running.wait_ended() is None


def test_an_unknown_instrument_is_a_config_error_naming_the_symbol(venue):
    error = Running(stream_of(venue), ("EUR/USD", "XAU/XYZ")).wait_ended()
    assert isinstance(error, ConfigError) and not isinstance(error, StreamClosed)
    assert "XAU/XYZ" in str(error) and "HTTP 400" in str(error)
    error = Running(OandaPricingStream("101-004-0000000-999", TOKEN, stream_url=venue.url,
                                       timeout_s=5)).wait_ended()
    assert type(error) is BrokerError and "check the account id" in str(error)


def test_a_refused_connection_is_stream_closed(venue):
    url = venue.url
    venue.stop()
    error = Running(OandaPricingStream(ACCOUNT, TOKEN, stream_url=url, timeout_s=2)).wait_ended()
    assert isinstance(error, StreamClosed) and "could not open the stream" in str(error)
    assert url in str(error)
    assert_hidden(error)
    venue.start()  # for the fixture's stop


def test_the_token_is_in_no_error_repr_or_log(venue, caplog):
    caplog.set_level(logging.DEBUG)
    errors = []
    for status in (401, 400, 500):
        venue.refuse(status, times=1)
        errors.append(Running(stream_of(venue)).wait_ended())
    running = started(venue, connections=1)
    venue.drop()
    errors.append(running.wait_ended())
    running = started(venue, connections=2, timeout_s=0.3)
    venue.go_silent()
    errors.append(running.wait_ended())
    assert [type(e) for e in errors] == [AuthenticationFailed, BrokerError, StreamClosed,
                                         StreamClosed, StreamClosed]
    for error in errors:
        assert_hidden(error)
    assert TOKEN not in repr(running.stream) and ACCOUNT in repr(running.stream)
    assert caplog.records and TOKEN not in caplog.text


def test_credentials_come_from_the_environment_and_must_be_there(monkeypatch, venue):
    monkeypatch.setenv("OANDA_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("OANDA_TOKEN", TOKEN)
    running = Running(OandaPricingStream(stream_url=venue.url))
    venue.wait_for_connections(1)
    assert venue.requests[-1]["authorised"]
    running.stop.set()
    running.wait_ended()
    monkeypatch.delenv("OANDA_TOKEN")
    with pytest.raises(AuthenticationFailed, match="OANDA_TOKEN"):
        OandaPricingStream()
    monkeypatch.delenv("OANDA_ACCOUNT_ID")
    with pytest.raises(AuthenticationFailed, match="OANDA_ACCOUNT_ID"):
        OandaPricingStream(token=TOKEN)
    with pytest.raises(ConfigError, match="stream_url"):
        OandaPricingStream(ACCOUNT, TOKEN, stream_url="stream.example.com")
    with pytest.raises(ConfigError, match="timeout_s"):
        OandaPricingStream(ACCOUNT, TOKEN, timeout_s=0)


def test_open_stream_gives_this_adapter_for_an_oanda_venue(venue):
    config = VenueConfig(name="oanda", exchange="oanda", sandbox=True, stream_url=venue.url,
                         timeout_s=3.0)
    stream = open_stream(config, keys={"account_id": ACCOUNT, "token": TOKEN})
    assert isinstance(stream, OandaPricingStream) and isinstance(stream, BarStream)
    assert (stream.venue, stream.bars_from_ticks, stream.timeout_s) == ("oanda", True, 3.0)
    assert stream.url == venue.url
    practice = OandaPricingStream(ACCOUNT, TOKEN)
    live = OandaPricingStream(ACCOUNT, TOKEN, practice=False)
    assert practice.url == "https://stream-fxpractice.oanda.com"
    assert live.url == "https://stream-fxtrade.oanda.com"


def test_oanda_times_to_nanoseconds():
    assert time_ns("2026-01-05T10:00:00.123456789Z") == T0 + 123_456_789
    assert time_ns("2026-01-05T10:00:00Z") == T0
    assert time_ns("2026-01-05T10:00:00.5Z") == T0 + 500_000_000
    assert time_ns("2026-01-05T11:00:00.000000001+01:00") == T0 + 1
    assert time_ns("1767607200.000000002") == T0 + 2
    with pytest.raises(ValueError):
        time_ns("yesterday")
