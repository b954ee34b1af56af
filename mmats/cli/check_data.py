"""Check the quality of a candle file or stored series and print a report.

examples:
  mmats check-data --data bittrex:ADA/BTC:5m --json
  mmats check-data --data my.csv --timeframe 1h --calendar forex
  mmats check-data bittrex:ADA/BTC:5m            # the data may also come first

The file is read as is (not validated), so the report can describe a bad file: duplicate,
unsorted, unparseable or off-grid timestamps, NaN or infinite values, non-positive prices,
negative volume, high < low and OHLC inconsistencies are problems. Missing bars (gaps),
zero-volume bars and outlier returns are warnings only: real markets have holidays and
outages.

exit codes: 0 no problems (warnings allowed); 1 problems found; 2 usage or input error (a
bad option, a missing or unreadable file).
"""

from __future__ import annotations

import json

from mmats.cli import add_data_option, add_json_option, command_parser, fail

CALENDARS = ("24/7", "forex", "stocks")  # as mmats.data.CALENDARS; kept here so --help is instant


def main(argv=None, prog="mmats check-data") -> int:
    parser = command_parser(prog, __doc__)
    parser.add_argument("source", nargs="?", metavar="FILE|VENUE:SYMBOL:TIMEFRAME",
                        help="the same as --data")
    add_data_option(parser, default=None)
    parser.add_argument("--calendar", choices=CALENDARS,
                        help="trading calendar (default: from the venue, else inferred)")
    parser.add_argument("--timeframe", help="bar length (default: from the name, else inferred)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.source and args.data and args.source != args.data:
        parser.error(f"two data sources: {args.source} and --data {args.data}")
    if not (args.source or args.data):
        parser.error("which data? give --data FILE or --data VENUE:SYMBOL:TIMEFRAME")
    args.source = args.source or args.data
    from mmats.data import calendar_for_venue, quality_report
    from mmats.data.io import read_raw_candles, resolve_source
    from mmats.errors import MMATSError

    try:
        located = resolve_source(args.source, args.root)
        raw = read_raw_candles(located.path)
        report = quality_report(
            raw,
            timeframe=args.timeframe or located.timeframe,
            calendar=args.calendar or calendar_for_venue(located.venue),
            source=str(located.path),
        )
    except (MMATSError, OSError) as exc:
        return fail(exc)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1

