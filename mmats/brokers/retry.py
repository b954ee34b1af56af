"""One retry and back-off policy for every venue adapter, built on tenacity.

An adapter sends each request through :meth:`RetryPolicy.call` with its venue's
classifier, which tells the policy what one failure is (:class:`Verdict`):

- **retry**: the request failed before the venue acted on it (a timeout or a dropped
  connection of a read or a cancel, a 5xx, a connection that was never opened, orders
  included: nothing reached the venue). Tried up to ``attempts`` times in all, waiting
  ``backoff_s``, then twice that, and so on; then the verdict's error, usually
  :class:`~mmats.brokers.base.VenueUnavailable`.
- **rate limited** (429, Binance's 418): the venue refused to act for now. Waited out up to
  ``rate_limit_attempts`` tries: the venue's ``Retry-After`` when it sends one, else the
  doubling back-off. A wait longer than ``max_wait_s`` (a ban) is not slept through:
  :class:`~mmats.brokers.base.RateLimited` is raised at once. The error raised carries, as
  ``retry_after``, the wait that would have come next.
- **give up**: raised at once, never retried. Bad credentials
  (:class:`~mmats.brokers.base.AuthenticationFailed`), refusals
  (:class:`~mmats.brokers.base.OrderRejected`, insufficient funds, unknown order), and an
  order that may have reached the venue but whose answer was lost (a timeout, 5xx or
  dropped reply after sending: :class:`~mmats.brokers.base.OutcomeUnknown`): sending it
  again could place it twice, so the runner looks it up by its client order id instead
  (a duplicate client id is refused by both venues, which the adapters answer with the
  order already placed).

The back-off of each kind counts its own retries: a 5xx after two 429s waits
``backoff_s``. The classifiers, one per venue, sit in the adapters (the only modules that
import the venue SDKs): :func:`mmats.brokers.ccxt_broker.classify_error` and
:func:`mmats.brokers.oanda_wire.classify_failure`.

============================  =============================  ==============================
failure                       ccxt (Binance)                 OANDA v20
============================  =============================  ==============================
timeout, dropped, 5xx (read)  retry                          retry
cancel                        retry (a read)                 retry (cancelling twice is
                                                             harmless)
order, connection not opened  retry                          retry
order, answer lost or 5xx     give up: OutcomeUnknown        give up: OutcomeUnknown
429                           rate limited, ``Retry-After``  rate limited, ``Retry-After``
                              read from the response         read from the response
418 (Binance's IP ban)        rate limited, as 429           (not sent by OANDA)
401/403                       give up: AuthenticationFailed  give up: AuthenticationFailed
insufficient funds            give up: InsufficientFunds     (a 201 the adapter reads)
other 4xx on an order         give up: OrderRejected         give up: OrderRejected
other 4xx on a read           give up: BrokerError           give up: BrokerError
============================  =============================  ==============================

Both adapters default to ``RetryPolicy()``: 4 tries, 5 under rate limits, 0.5 s doubling,
no wait longer than 60 s.

>>> from mmats.brokers.base import VenueUnavailable
>>> waits = []
>>> policy = RetryPolicy(attempts=3, backoff_s=0.5, sleep=waits.append)
>>> answers = iter([TimeoutError("slow"), TimeoutError("slow"), "ok"])
>>> def request():
...     answer = next(answers)
...     if isinstance(answer, Exception):
...         raise answer
...     return answer
>>> policy.call(request, lambda exc: retry(lambda tries: VenueUnavailable(str(exc))))
'ok'
>>> waits
[0.5, 1.0]
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

T = TypeVar("T")
RETRY, RATE_LIMITED, GIVE_UP = "retry", "rate_limited", "give_up"


@dataclass(frozen=True)
class Verdict:
    """What to do about one failed request.

    ``action`` is :data:`RETRY`, :data:`RATE_LIMITED` or :data:`GIVE_UP`; ``error`` makes
    the exception to raise once the request is not tried again, given how many times it
    failed this way and the wait that would have come next; ``wait_s`` is the venue's own
    wait (``Retry-After``) for a rate limit, None when it sent none.
    """

    action: str
    error: Callable[[int, float], BaseException]
    wait_s: float | None = None


def retry(error: Callable[[int], BaseException]) -> Verdict:
    """Retry after the back-off; ``error(tries)`` once the tries are used up."""
    return Verdict(RETRY, lambda tries, _wait: error(tries))


def rate_limited(error: Callable[[int, float], BaseException],
                 wait_s: float | None = None) -> Verdict:
    """Wait ``wait_s`` (the venue's ``Retry-After``; None: the back-off) and retry;
    ``error(tries, next_wait_s)`` once the tries are used up or the wait is too long."""
    return Verdict(RATE_LIMITED, error, wait_s)


def give_up(error: BaseException) -> Verdict:
    """Raise ``error`` now; the request is not tried again."""
    return Verdict(GIVE_UP, lambda _tries, _wait: error)


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how long apart, a venue request is tried (see the module's rules).

    Parameters
    ----------
    attempts
        Tries of a request that fails before the venue acted (the first one included).
    rate_limit_attempts
        Tries while the venue answers "too many requests".
    backoff_s
        The first wait, in seconds; it doubles with each retry of the same kind.
    max_wait_s
        A longer wait asked by the venue is not slept through: rate limited at once.
    sleep
        Called with each wait in seconds (tests pass a recorder instead of sleeping).
    """

    attempts: int = 4
    rate_limit_attempts: int = 5
    backoff_s: float = 0.5
    max_wait_s: float = 60.0
    sleep: Callable[[float], object] = time.sleep

    def wait_s(self, verdict: Verdict, tries: int) -> float:
        """The wait after the ``tries``-th failure of ``verdict``'s kind: the venue's own
        for a rate limit that named one, else the back-off doubled per retry."""
        if verdict.action == RATE_LIMITED and verdict.wait_s is not None:
            return float(verdict.wait_s)
        return self.backoff_s * 2 ** (tries - 1)

    def call(self, request: Callable[[], T],
             classify: Callable[[Exception], Verdict]) -> T:
        """``request()``, tried again as ``classify`` says its failures allow; its result,
        or the error of the last failure's verdict. The error is raised outside any
        ``except`` block, so the venue's exception (whose request may carry a key in a
        header) is not chained to it."""
        tries = {RETRY: 0, RATE_LIMITED: 0, GIVE_UP: 0}

        def attempt() -> T:
            try:
                return request()
            except Exception as exc:  # every failure is the classifier's to judge
                verdict = classify(exc)
            tries[verdict.action] += 1
            raise _Failed(verdict, tries[verdict.action])

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, _Failed) and exc.verdict.action != GIVE_UP),
            stop=self._stop, wait=self._wait, sleep=self.sleep, reraise=True)
        try:
            return retrying(attempt)
        except _Failed as failed:
            verdict, count = failed.verdict, failed.tries
        raise verdict.error(count, self.wait_s(verdict, count))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        failed = state.outcome.exception()
        if failed.verdict.action == RATE_LIMITED:
            return (failed.tries >= self.rate_limit_attempts
                    or self.wait_s(failed.verdict, failed.tries) > self.max_wait_s)
        return failed.tries >= self.attempts

    def _wait(self, state: tenacity.RetryCallState) -> float:
        failed = state.outcome.exception()
        return self.wait_s(failed.verdict, failed.tries)


class _Failed(Exception):
    """One failed try, as the classifier judged it (internal to :meth:`RetryPolicy.call`)."""

    def __init__(self, verdict: Verdict, tries: int):
        super().__init__(verdict.action)
        self.verdict, self.tries = verdict, tries


def retry_after_s(value, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date
    (``now_s``: the clock, default ``time.time()``); None when absent or unreadable.

    >>> retry_after_s("7"), retry_after_s(None), retry_after_s("soon")
    (7.0, None, None)
    >>> retry_after_s("Thu, 01 Jan 1970 00:00:30 GMT", now_s=0.0)
    30.0
    """
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:  # an HTTP date
        stamp = email.utils.parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, stamp - (time.time() if now_s is None else now_s))
