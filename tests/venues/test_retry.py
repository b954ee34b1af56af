"""The venues' one retry policy (:mod:`mmats.brokers.retry`) and each venue's classifier.

The policy is checked with plain callables (attempt counts, back-off, waits, budgets),
then through the real ccxt and oandapyV20 clients against the local look-alike venues:
each fault they produce is classified as the module's table says, and the policy tries a
request as often, and waits as long, as it promises. Waits go to a recorder, not a sleep.
"""

from __future__ import annotations

import email.utils
import time

import pytest

from mmats.brokers.base import (
    AuthenticationFailed,
    BrokerError,
    InsufficientFunds,
    OutcomeUnknown,
    RateLimited,
    VenueUnavailable,
)
from mmats.brokers.ccxt_broker import CcxtBroker
from mmats.brokers.oanda_broker import OandaBroker
from mmats.brokers.retry import (
    GIVE_UP,
    RATE_LIMITED,
    RETRY,
    RetryPolicy,
    give_up,
    rate_limited,
    retry,
    retry_after_s,
)

from .oanda_server import OandaServer

ORDER = "/api/v3/order"
ACCOUNT = "/api/v3/account"
OANDA_TOKEN = "retry-token-5Hq8Zr2Lx"


class Flaky:
    """A request failing with ``errors`` in turn, then answering ``"ok"``."""

    def __init__(self, *errors: Exception):
        self.errors, self.calls = list(errors), 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Slow(Exception):
    """A failure the test classifier retries."""


class Busy(Exception):
    """A failure the test classifier treats as a rate limit; ``wait_s``: its hint."""

    def __init__(self, wait_s=None):
        super().__init__("busy")
        self.wait_s = wait_s


class Refused(Exception):
    """A failure the test classifier gives up on."""


def classify(exc):
    if isinstance(exc, Slow):
        return retry(lambda tries: VenueUnavailable(f"down after {tries} attempts"))
    if isinstance(exc, Busy):
        return rate_limited(lambda tries, wait: RateLimited(f"busy {tries} times",
                                                            retry_after=wait), exc.wait_s)
    if isinstance(exc, Refused):
        return give_up(BrokerError("refused"))
    return give_up(exc)


# -- the policy ---------------------------------------------------------------------------

def test_a_failure_is_retried_with_doubling_back_off_until_it_succeeds():
    waits = []
    request = Flaky(Slow(), Slow(), Slow())
    assert RetryPolicy(attempts=4, backoff_s=0.5, sleep=waits.append).call(
        request, classify) == "ok"
    assert request.calls == 4 and waits == [0.5, 1.0, 2.0]


def test_tries_are_capped_by_attempts_then_the_verdicts_error_is_raised():
    waits = []
    request = Flaky(*[Slow()] * 10)
    with pytest.raises(VenueUnavailable, match="down after 3 attempts") as caught:
        RetryPolicy(attempts=3, backoff_s=0.1, sleep=waits.append).call(request, classify)
    assert request.calls == 3 and waits == [0.1, 0.2]
    # raised outside the except block: the venue's exception is not chained to it
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_a_rate_limit_waits_what_the_venue_asked():
    waits = []
    request = Flaky(Busy(3.0), Busy(7.0))
    assert RetryPolicy(backoff_s=0.5, sleep=waits.append).call(request, classify) == "ok"
    assert waits == [3.0, 7.0]


def test_a_rate_limit_without_a_hint_backs_off_and_reports_the_next_wait():
    waits = []
    request = Flaky(*[Busy()] * 10)
    with pytest.raises(RateLimited, match="busy 5 times") as caught:
        RetryPolicy(rate_limit_attempts=5, backoff_s=0.5, sleep=waits.append).call(
            request, classify)
    assert request.calls == 5 and waits == [0.5, 1.0, 2.0, 4.0]
    assert caught.value.retry_after == 8.0  # the wait that would have come next


def test_a_wait_longer_than_max_wait_is_raised_not_slept_through():
    waits = []
    request = Flaky(Busy(600.0))
    with pytest.raises(RateLimited) as caught:
        RetryPolicy(max_wait_s=60.0, sleep=waits.append).call(request, classify)
    assert request.calls == 1 and waits == [] and caught.value.retry_after == 600.0


def test_give_up_is_raised_at_once_and_an_unclassified_error_as_it_is():
    waits = []
    policy = RetryPolicy(sleep=waits.append)
    request = Flaky(Refused())
    with pytest.raises(BrokerError, match="refused"):
        policy.call(request, classify)
    assert request.calls == 1
    bug = KeyError("a bug, not a venue failure")
    with pytest.raises(KeyError) as caught:
        policy.call(Flaky(bug), classify)
    assert caught.value is bug and waits == []


def test_each_kind_of_failure_has_its_own_budget_and_back_off():
    waits = []
    request = Flaky(Busy(), Busy(), Slow(), Slow())
    policy = RetryPolicy(attempts=3, rate_limit_attempts=3, backoff_s=0.25,
                         sleep=waits.append)
    assert policy.call(request, classify) == "ok"
    assert request.calls == 5 and waits == [0.25, 0.5, 0.25, 0.5]


def test_retry_after_is_read_as_seconds_or_an_http_date():
    assert retry_after_s("4") == 4.0 and retry_after_s("-3") == 0.0
    assert retry_after_s(email.utils.formatdate(1_000_030, usegmt=True), now_s=1_000_000) \
        == pytest.approx(30.0)
    assert retry_after_s("tomorrow") is None and retry_after_s(None) is None


def test_both_adapters_default_to_the_one_policy():
    assert CcxtBroker("binance").retry == RetryPolicy()
    assert OandaBroker("101-1", OANDA_TOKEN).retry == RetryPolicy()
    assert RetryPolicy() == RetryPolicy(attempts=4, rate_limit_attempts=5, backoff_s=0.5,
                                        max_wait_s=60.0, sleep=time.sleep)


# -- the classifiers, through the real clients ----------------------------------------------

class Once:
    """A policy that tries once and keeps the classifier's verdict (a recorder in place of
    :class:`RetryPolicy`: the client and the venue are real)."""

    def __init__(self):
        self.verdicts = []

    def call(self, request, classify):
        try:
            return request()
        except Exception as exc:
            verdict = classify(exc)
        self.verdicts.append(verdict)
        raise verdict.error(1, 0.0)


def _market(cid, qty=0.01):
    return {"client_order_id": cid, "symbol": "BTC/USDT", "side": "buy", "qty": qty,
            "type": "market", "price": None, "time_in_force": "GTC"}


def _load_then(fault):
    """Load the markets first (one request), then arrange ``fault`` for the order."""
    def arrange(server, broker):
        broker.instrument("BTC/USDT")
        fault(server)
    return arrange


CCXT_CASES = {
    # name: (arrange the venue, the request, verdict, error raised, venue's wait)
    "500 on a read": (lambda s, b: s.fail("500", path=ACCOUNT), lambda b: b.balances(),
                      RETRY, VenueUnavailable, None),
    "503 on a read": (lambda s, b: s.fail("503", path=ACCOUNT), lambda b: b.balances(),
                      RETRY, VenueUnavailable, None),
    "dropped read": (lambda s, b: s.fail("drop", path=ACCOUNT), lambda b: b.balances(),
                     RETRY, VenueUnavailable, None),
    "429 with Retry-After": (lambda s, b: s.fail("429", path=ACCOUNT, retry_after=3),
                             lambda b: b.balances(), RATE_LIMITED, RateLimited, 3.0),
    "418 without": (lambda s, b: s.fail("418", path=ACCOUNT), lambda b: b.balances(),
                    RATE_LIMITED, RateLimited, None),
    "429 on an order": (_load_then(lambda s: s.fail("429", path=ORDER, retry_after=2)),
                        lambda b: b.send(_market("mm-r-429")), RATE_LIMITED, RateLimited, 2.0),
    "503 on an order": (_load_then(lambda s: s.fail("503", path=ORDER)),
                        lambda b: b.send(_market("mm-r-503")), GIVE_UP, OutcomeUnknown, None),
    "dropped order": (_load_then(lambda s: s.fail("drop", path=ORDER)),
                      lambda b: b.send(_market("mm-r-drop")), GIVE_UP, OutcomeUnknown, None),
    "order, venue down": (_load_then(lambda s: s.stop()),
                          lambda b: b.send(_market("mm-r-down")), RETRY, VenueUnavailable,
                          None),
    "insufficient funds": (lambda s, b: None, lambda b: b.send(_market("mm-r-poor", 1.0)),
                           GIVE_UP, InsufficientFunds, None),
    "key revoked": (lambda s, b: setattr(s, "api_key", "rotated"), lambda b: b.balances(),
                    GIVE_UP, AuthenticationFailed, None),
}


@pytest.mark.parametrize("case", list(CCXT_CASES))
def test_ccxt_classifier(server, make_broker, case):
    arrange, call, action, error, wait_s = CCXT_CASES[case]
    policy = Once()
    broker = make_broker(retry=policy)
    arrange(server, broker)
    with pytest.raises(error):
        call(broker)
    assert [(v.action, v.wait_s) for v in policy.verdicts] == [(action, wait_s)]


def test_ccxt_unknown_order_is_given_up_and_answered_none(server, make_broker):
    policy = Once()
    broker = make_broker(retry=policy)
    assert broker.lookup("mm-never", "BTC/USDT") is None
    assert [v.action for v in policy.verdicts] == [GIVE_UP]


@pytest.fixture(scope="module")
def venue():
    with OandaServer(token=OANDA_TOKEN, delay_s=1.0) as running:
        yield running


@pytest.fixture
def make_oanda(venue):
    venue.reset()
    made = []

    def make(**settings):
        client = OandaBroker(venue.account_id, settings.pop("token", OANDA_TOKEN),
                             base_url=venue.url, timeout_s=0.25, **settings)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _oanda_order(cid):
    return {"client_order_id": cid, "symbol": "EUR/USD", "side": "buy", "qty": 1000.0,
            "type": "market", "price": None, "time_in_force": "GTC"}


OANDA_CASES = {
    "500 on a read": ({"kind": "500", "path": "/summary"}, lambda b: b.balances(), RETRY,
                      VenueUnavailable, None),
    "503 on a read": ({"kind": "503", "path": "/summary"}, lambda b: b.balances(), RETRY,
                      VenueUnavailable, None),
    "read timeout": ({"kind": "timeout", "path": "/summary"}, lambda b: b.balances(), RETRY,
                     VenueUnavailable, None),
    "dropped read": ({"kind": "drop", "path": "/summary"}, lambda b: b.balances(), RETRY,
                     VenueUnavailable, None),
    "429 with Retry-After": ({"kind": "429", "path": "/summary", "retry_after": 3},
                             lambda b: b.balances(), RATE_LIMITED, RateLimited, 3.0),
    "429 without": ({"kind": "429", "path": "/summary"}, lambda b: b.balances(),
                    RATE_LIMITED, RateLimited, None),
    "refused read": (None, lambda b: b.fetch_candles("NOPE/USD", "1h", since_ms=0), GIVE_UP,
                     BrokerError, None),
    "429 on an order": ({"kind": "429", "method": "POST", "path": "/orders"},
                        lambda b: b.send(_oanda_order("mm-r-429")), RATE_LIMITED,
                        RateLimited, None),
    "500 on an order": ({"kind": "500", "method": "POST", "path": "/orders"},
                        lambda b: b.send(_oanda_order("mm-r-500")), GIVE_UP, OutcomeUnknown,
                        None),
    "order timeout": ({"kind": "timeout", "method": "POST", "path": "/orders"},
                      lambda b: b.send(_oanda_order("mm-r-slow")), GIVE_UP, OutcomeUnknown,
                      None),
    "order answered 200 empty": ({"kind": "wrong_status", "method": "POST",
                                  "path": "/orders"},
                                 lambda b: b.send(_oanda_order("mm-r-200")), GIVE_UP,
                                 VenueUnavailable, None),
}


@pytest.mark.parametrize("case", list(OANDA_CASES))
def test_oanda_classifier(venue, make_oanda, case):
    fault, call, action, error, wait_s = OANDA_CASES[case]
    policy = Once()
    broker = make_oanda(retry=policy)
    broker.instrument("EUR/USD")  # rules cached: the next request is the one under test
    if fault is not None:
        fault = dict(fault)
        venue.fail_next(fault.pop("kind"), **fault)
    with pytest.raises(error):
        call(broker)
    assert [(v.action, v.wait_s) for v in policy.verdicts] == [(action, wait_s)]


def test_oanda_bad_token_is_given_up(make_oanda):
    policy = Once()
    with pytest.raises(AuthenticationFailed):
        make_oanda(retry=policy, token="wrong-token-00000").balances()
    assert [v.action for v in policy.verdicts] == [GIVE_UP]


def test_an_oanda_order_that_cannot_have_left_is_retried():
    policy = Once()
    with OandaServer(token=OANDA_TOKEN) as gone:
        broker = OandaBroker(gone.account_id, OANDA_TOKEN, base_url=gone.url, timeout_s=0.25,
                             retry=policy)
        broker.instrument("EUR/USD")
    with pytest.raises(VenueUnavailable, match="not sent"):
        broker.send(_oanda_order("mm-r-refused"))
    broker.close()
    assert [v.action for v in policy.verdicts] == [RETRY] and gone.orders == []


# -- the policy, through the real clients ---------------------------------------------------

def test_ccxt_tries_a_failing_read_as_often_as_the_policy_says(server, make_broker, sleeps):
    broker = make_broker(retry=RetryPolicy(attempts=3, backoff_s=0.25, sleep=sleeps.append))
    server.fail("503", times=2, path=ACCOUNT)
    assert broker.balances()["USDT"] == 10000.0
    assert server.count("GET", ACCOUNT) == 3 and sleeps == [0.25, 0.5]
    server.fail("500", times=5, path=ACCOUNT)
    with pytest.raises(VenueUnavailable, match="after 3 attempt"):
        broker.balances()
    assert server.count("GET", ACCOUNT) == 3 + 3


def test_ccxt_rate_limits_have_their_own_budget_and_waits(server, make_broker, sleeps):
    broker = make_broker(retry=RetryPolicy(attempts=3, rate_limit_attempts=3, backoff_s=0.25,
                                           sleep=sleeps.append))
    server.fail("429", times=2, path=ACCOUNT, retry_after=1)
    server.fail("503", times=2, path=ACCOUNT)
    assert broker.balances()["USDT"] == 10000.0
    assert server.count("GET", ACCOUNT) == 5 and sleeps == [1.0, 1.0, 0.25, 0.5]
    server.fail("429", times=9, path=ACCOUNT, retry_after=2)
    with pytest.raises(RateLimited, match="after 3 attempt") as caught:
        broker.balances()
    assert caught.value.retry_after == 2.0 and server.count("GET", ACCOUNT) == 5 + 3


def test_ccxt_never_sends_an_order_twice_when_its_answer_was_lost(server, make_broker, sleeps):
    broker = make_broker(retry=RetryPolicy(attempts=5, sleep=sleeps.append))
    broker.instrument("BTC/USDT")
    server.fail("500", times=3, path=ORDER)
    with pytest.raises(OutcomeUnknown):
        broker.send(_market("mm-r-once"))
    assert server.count("POST", ORDER) == 1 and sleeps == []


def test_oanda_waits_the_retry_after_of_a_429(venue, make_oanda):
    waits = []
    broker = make_oanda(sleep=waits.append)
    venue.fail_next("429", count=2, path="/pricing", retry_after=3)
    assert broker.price("EUR/USD")["ask"] > 0
    assert waits == [3.0, 3.0]


def test_oanda_does_not_sleep_through_a_long_retry_after(venue, make_oanda):
    waits = []
    broker = make_oanda(sleep=waits.append)
    venue.fail_next("429", count=5, path="/summary", retry_after=600)
    with pytest.raises(RateLimited, match="429") as caught:
        broker.balances()
    assert caught.value.retry_after == 600.0 and waits == []
    assert venue.count("GET", "/summary") == 1


def test_oanda_reads_a_retry_after_given_as_a_date(venue, make_oanda):
    waits = []
    broker = make_oanda(sleep=waits.append)
    venue.fail_next("429", path="/summary",
                    retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    assert broker.balances() == {"USD": 100_000.0}
    assert len(waits) == 1 and 27.0 <= waits[0] <= 30.0


def test_oanda_tries_as_often_as_the_policy_says(venue, make_oanda):
    waits = []
    broker = make_oanda(retry=RetryPolicy(attempts=2, rate_limit_attempts=3, backoff_s=0.1,
                                          sleep=waits.append))
    venue.fail_next("503", count=5, path="/openPositions")
    with pytest.raises(VenueUnavailable, match="2 attempts"):
        broker.positions()
    assert venue.count("GET", "/openPositions") == 2 and waits == [0.1]
    venue.fail_next("429", count=2, path="/openTrades")
    assert broker.trades() == []
    assert venue.count("GET", "/openTrades") == 3 and waits == [0.1, 0.1, 0.2]
