#!/usr/bin/env python
"""Check the quality of a candle file or stored series and print a report.

    python scripts/check_data.py data/sample/bittrex/ADA_BTC_5m.parquet
    python scripts/check_data.py bittrex:ADA/BTC:5m --json
    python scripts/check_data.py my.csv --timeframe 1h --calendar forex

The file is read as is (not validated), so the report can describe a bad file: duplicate,
unsorted, unparseable or off-grid timestamps, NaN or infinite values, non-positive prices,
negative volume, high < low and OHLC inconsistencies are problems. Missing bars (gaps),
zero-volume bars and outlier returns are warnings only: real markets have holidays and
outages.

Exit codes: 0 no problems (warnings allowed), 1 problems found, 2 unreadable or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CALENDARS = ("24/7", "forex", "stocks")  # as mmats.data.CALENDARS; kept here so --help is instant


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="FILE_OR_SPEC",
                        help="a .csv/.parquet file or VENUE:SYMBOL:TIMEFRAME, e.g. bittrex:ETH/BTC:5m")
    parser.add_argument("--calendar", choices=CALENDARS,
                        help="trading calendar (default: from the venue, else inferred)")
    parser.add_argument("--timeframe", help="bar length (default: from the name, else inferred)")
    parser.add_argument("--root", help="store root for specs (default: $MMATS_DATA_ROOT or ./data, "
                                       "then the bundled data/sample)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    from mmats.data import calendar_for_venue, quality_report
    from mmats.data.io import read_raw_candles, resolve_source
    from mmats.errors import ConfigError, DataError

    try:
        located = resolve_source(args.source, args.root)
        raw = read_raw_candles(located.path)
        report = quality_report(
            raw,
            timeframe=args.timeframe or located.timeframe,
            calendar=args.calendar or calendar_for_venue(located.venue),
            source=str(located.path),
        )
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
