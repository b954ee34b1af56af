"""The tick's first step: bring the store up to date from the venues, with feed failover.

A market's feed that is listed under ``venues:`` is fetched by the runner itself: the
bars that closed since the last stored one (the bar still forming is never stored), so a
cron tick needs no separate fetcher. A market may list backup feeds (``feed: [binance,
kraken]``): when the primary errors or has no bar for ``stale_after_bars`` timeframes,
the next one is used for this tick, and every switch (and the return to the primary) is
journaled as a risk event and notified. Feeds not listed under ``venues:`` are store
folders filled by imports or ``scripts/fetch_data.py``.
"""

from __future__ import annotations

import json

from mmats.brokers.base import BrokerError
from mmats.data.calendar import timeframe_ns
from mmats.data.fetch import fetch_into_store
from mmats.data.store import CandleStore
from mmats.errors import DataError, MMATSError

MS = 1_000_000


def sync_candles(config, journal, now_ns: int, *, sources: dict | None = None,
                 lookback_bars: int = 500) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Fetch every live feed's closed bars into the store; returns ``({market: feed used},
    alerts)``. ``sources`` maps feed names to candle sources (default: adapters built from
    ``venues:``)."""
    from mmats.brokers.connect import open_venue
    from mmats.live.sleeves import extra_symbols

    sources = {} if sources is None else sources
    store = CandleStore(config.data_root)
    active, alerts = {}, []
    for market in config.markets:
        step = timeframe_ns(market.timeframe)
        if not any(config.is_live_feed(feed) for feed in market.feeds):
            active[market.name] = market.feed
            continue
        chosen, problems = None, []
        for feed in market.feeds:
            try:
                if config.is_live_feed(feed):
                    source = sources.get(feed)
                    if source is None:
                        source = sources[feed] = open_venue(config.venue(feed),
                                                            symbols=market.symbols)
                    for symbol in (*market.symbols, *extra_symbols(config, market.name)):
                        # history back to the lookback once (an empty store); then only
                        # what is new (extra inputs' symbols too)
                        fetch_into_store(source, store, feed, symbol, market.timeframe,
                                         since=now_ns - lookback_bars * step,
                                         now_ms=now_ns // MS, backfill=False,
                                         summarise=False)
                age = _age_in_bars(store, feed, market, now_ns, step)
            except (BrokerError, DataError) as error:
                problems.append(f"{feed}: {error}")
                continue
            except MMATSError as error:  # a configuration problem: no point failing over
                raise MMATSError(f"market {market.name}: feed {feed}: {error}") from None
            if age > config.stale_after_bars:
                problems.append(f"{feed}: newest bar is {age:.1f} bars old")
                continue
            chosen = feed
            break
        _journal_outage(journal, market, problems if chosen is None else None, now_ns,
                        alerts)
        if chosen is None:  # every feed failed: the stale-data halt decides
            chosen = market.feed
        _journal_switch(journal, market, chosen, problems, now_ns, alerts)
        active[market.name] = chosen
    _sync_series(config, store, sources, now_ns, lookback_bars, alerts)
    return active, alerts


def _sync_series(config, store, sources, now_ns, lookback_bars, alerts) -> None:
    """The series the models' extra inputs read from another venue or at another
    timeframe, fetched into the store when their venue is a live feed (else the store
    folder is filled by imports). A failure is alerted, never fatal: the tick then reads
    what the store has, and the input goes stale rather than the tick stopping."""
    from mmats.brokers.connect import open_venue
    from mmats.live.sleeves import extra_series

    for venue, symbol, timeframe in extra_series(config):
        if not config.is_live_feed(venue):
            continue
        try:
            source = sources.get(venue)
            if source is None:
                source = sources[venue] = open_venue(config.venue(venue), symbols=[symbol])
            step = timeframe_ns(timeframe)
            fetch_into_store(source, store, venue, symbol, timeframe,
                             since=now_ns - lookback_bars * step, now_ms=now_ns // MS,
                             backfill=False, summarise=False)
        except (BrokerError, DataError) as error:
            alerts.append(("MMATS input series failing",
                           f"{venue}:{symbol}:{timeframe}: {error}"))


def _age_in_bars(store, feed, market, now_ns, step) -> float:
    """How many timeframes ago the newest stored bar of the market's symbols closed."""
    ages = []
    for symbol in market.symbols:
        frame = store.read(feed, symbol, market.timeframe,
                           start=None if now_ns is None else _stamp(now_ns - 50 * step))
        if len(frame) == 0:
            return float("inf")
        newest = frame["ts"].iloc[-1].value
        ages.append((now_ns - (newest + step)) / step)
    return max(ages)


def _stamp(ns):
    import pandas as pd

    return pd.Timestamp(ns, tz="UTC")


def _journal_outage(journal, market, problems, now_ns, alerts) -> None:
    """Journal and alert when every feed of a market starts failing (``problems``) and
    when one works again (``None``): once per outage, not at every tick of it."""
    scope = f"market:{market.name}"
    last = journal.last_risk_event(("feeds_failing", "feeds_recovered"), scope)
    failing = last is not None and last["kind"] == "feeds_failing"
    if problems is not None and not failing:
        message = f"{market.name}: {'; '.join(problems)}"
        journal.append_risk_event("CRITICAL", scope, "feeds_failing", message,
                                  {"problems": problems}, ts_ns=now_ns)
        alerts.append(("MMATS feeds failing", message))
    elif problems is None and failing:
        message = f"{market.name}: candles flow again"
        journal.append_risk_event("INFO", scope, "feeds_recovered", message, {},
                                  ts_ns=now_ns)
        alerts.append(("MMATS feeds recovered", message))


def _journal_switch(journal, market, chosen, problems, now_ns, alerts) -> None:
    scope = f"market:{market.name}"
    last = journal.last_risk_event(("feed_failover", "feed_restored"), scope)
    previous = json.loads(last["data"])["feed"] if last else market.feed
    if chosen == previous:
        return
    kind = "feed_restored" if chosen == market.feed else "feed_failover"
    message = (f"{market.name}: candles now from {chosen} (was {previous})"
               + (f": {'; '.join(problems)}" if problems else ""))
    journal.append_risk_event("WARNING", scope, kind, message,
                              {"feed": chosen, "previous": previous}, ts_ns=now_ns)
    alerts.append((f"MMATS {kind.replace('_', ' ')}", message))
