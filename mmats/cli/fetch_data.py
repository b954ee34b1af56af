"""Fetch candles from a venue into the candle store (resumable, idempotent).

examples:
  mmats fetch --data binance:BTC/USDT:1h --since 2024-01-01
  mmats fetch --data binance:ETH/BTC:5m --since 2024-06-01 --until 2024-07-01 --json
  mmats fetch --data oanda:EUR/USD:1h --since 2024-01-01 --sandbox

VENUE is any ccxt exchange id (binance, kraken, okx, ...) or oanda. Pages are written to
the store as they arrive: an interrupted fetch loses at most one page, and running the same
command again continues where the store stops; bars already stored are not fetched again.
The bar still forming is never stored. Missing bars (gaps) are listed at the end.

Keys, when the venue needs them (public ccxt candles do not): MMATS_<VENUE>_API_KEY and
MMATS_<VENUE>_SECRET, e.g. MMATS_BINANCE_API_KEY; for oanda MMATS_OANDA_TOKEN (or
MMATS_OANDA_API_KEY) and MMATS_OANDA_ACCOUNT_ID.

exit codes: 0 fetched (or already up to date); 1 the venue or the data failed (bars stored
before it are kept: re-run to resume); 2 usage or input error (a bad option or date, a store
root that is a file, the live extra not installed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from mmats.cli import (
    add_data_option,
    add_json_option,
    check_date,
    command_parser,
    fail,
    series_from,
)
from mmats.redact import redact_urls


def parse_args(argv=None, prog="mmats fetch") -> argparse.Namespace:
    parser = command_parser(prog, __doc__)
    parser.add_argument("series", nargs="*", metavar="VENUE SYMBOL TIMEFRAME",
                        help="the same as --data VENUE:SYMBOL:TIMEFRAME (three words)")
    add_data_option(parser, default=None, what="the series to fetch: VENUE:SYMBOL:TIMEFRAME, "
                    "e.g. binance:BTC/USDT:1h")
    parser.add_argument("--since", required=True, metavar="DATE",
                        help="first bar to fetch (UTC), e.g. 2024-01-01")
    parser.add_argument("--until", metavar="DATE",
                        help="stop before bars opening at this time (default: now)")
    parser.add_argument("--base-url", metavar="URL",
                        help="talk to this server instead of the venue (a proxy or test server)")
    parser.add_argument("--sandbox", action="store_true",
                        help="the venue's test environment (ccxt sandbox, OANDA practice)")
    parser.add_argument("--flush-seconds", type=float, metavar="S", default=10.0,
                        help="gather pages and write them every S seconds (default 10; 0 "
                             "writes each page at once). Each write rewrites the file, so "
                             "long 1m histories fetch much faster gathered; pages gathered "
                             "when the fetch stops are written, and a hard kill loses at "
                             "most S seconds of fetching, fetched again by the next run")
    add_json_option(parser)
    args = parser.parse_args(argv)
    from mmats.data import timeframe_ns
    from mmats.data.io import default_root
    from mmats.data.store import to_ns
    from mmats.errors import ConfigError

    try:
        args.venue, args.symbol, args.timeframe = series_from(args.data, args.series,
                                                              "three words")
        args.venue = args.venue.strip().lower()
        args.root = args.root or str(default_root())
        timeframe_ns(args.timeframe)
        if args.flush_seconds is not None and args.flush_seconds < 0:
            raise ConfigError(f"--flush-seconds must be >= 0, got {args.flush_seconds}")
        check_date("--since", args.since)
        check_date("--until", args.until)
        since = to_ns(args.since)
        if args.until is not None and to_ns(args.until) <= since:
            raise ConfigError(f"--until {args.until} must be after --since {args.since}")
    except ConfigError as exc:
        parser.error(str(exc))
    return args


def main(argv=None, prog="mmats fetch") -> int:
    args = parse_args(argv, prog)
    # Imported after parsing so that --help answers at once.
    from mmats.brokers.base import BrokerError
    from mmats.data import CandleStore
    from mmats.data.fetch import fetch_into_store
    from mmats.errors import ConfigError, MMATSError

    where = f"{args.venue} {args.symbol} {args.timeframe}"
    store = CandleStore(args.root)
    path = None
    try:  # a root that is a file, an unknown venue, no live extra: the command is wrong
        path = store.path(args.venue, args.symbol, args.timeframe)
        source = make_source(args.venue, base_url=args.base_url, sandbox=args.sandbox)
    except MMATSError as exc:
        return fail(type(exc)(f"{where}: {exc}"))
    except OSError as exc:
        return fail(exc)
    try:
        report = fetch_into_store(source, store, args.venue, args.symbol, args.timeframe,
                                  since=args.since, until=args.until,
                                  flush_s=args.flush_seconds,
                                  # ccxt venues are crypto exchanges: missing bars are
                                  # counted on a 24/7 calendar, not guessed from the data
                                  calendar=None if args.venue == "oanda" else "24/7",
                                  progress=not args.json and sys.stderr.isatty())
    except KeyboardInterrupt:
        print(f"\ninterrupted: {where}; the bars fetched so far are stored, run the same "
              "command again to continue", file=sys.stderr)
        return 130
    except ConfigError as exc:  # e.g. a symbol the venue does not list
        return fail(ConfigError(f"{where}: {exc}"))
    except (BrokerError, MMATSError, OSError) as exc:
        print(f"error: {where}: {redact_urls(str(exc))}", file=sys.stderr)
        if path is not None and path.is_file():
            print("the bars fetched before the error are stored; run the same command again "
                  "to continue", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
    return 0


def make_source(venue: str, *, base_url=None, sandbox=False):
    """The adapter that fetches ``venue``'s candles, with keys from the environment."""
    from mmats.errors import ConfigError

    prefix = "MMATS_" + re.sub(r"[^A-Z0-9]", "_", venue.upper())
    if venue == "oanda":
        try:
            from mmats.brokers.oanda_broker import OandaBroker
        except ImportError as exc:
            raise ConfigError(f"the OANDA adapter cannot be imported ({exc}); install the live "
                              "extra: pip install -e '.[live]'") from None
        token = os.environ.get(f"{prefix}_TOKEN") or os.environ.get(f"{prefix}_API_KEY")
        return OandaBroker(account_id=os.environ.get(f"{prefix}_ACCOUNT_ID"), token=token,
                           practice=sandbox, base_url=base_url)
    try:
        from mmats.brokers.ccxt_broker import CcxtBroker
    except ImportError as exc:
        raise ConfigError(f"the ccxt adapter cannot be imported ({exc}); install the live "
                          "extra: pip install -e '.[live]'") from None
    return CcxtBroker(venue, api_key=os.environ.get(f"{prefix}_API_KEY"),
                      secret=os.environ.get(f"{prefix}_SECRET"), sandbox=sandbox,
                      base_url=base_url)

