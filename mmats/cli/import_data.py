"""Import candle files (CSV or Parquet) into the candle store.

examples:
  mmats import eth_2018.csv --data bittrex:ETH/BTC:5m
  mmats import a.csv b.csv --data binance:XRP/ETH:5m --resample-to 1h,1d --json
  mmats import DAT_ASCII_EURUSD_M1_2024.zip --data fx:EUR/USD:1m --resample-to 5m,1h,1d
  mmats import EURUSD1.csv --format mt4 --tz America/New_York+07:00 --data fx:EUR/USD:1m

--data names the series the files hold (VENUE:SYMBOL:TIMEFRAME; --venue, --symbol and
--timeframe say the same in three options). --format auto (the default) reads MetaTrader
4/5 exports and HistData.com files by their content and anything else as before (see
mmats/data/forex_formats.py for the layouts). HistData times are EST without daylight
saving and become UTC; MetaTrader times are the broker's server time, which --tz names: a
fixed offset (+02:00), an IANA zone (Europe/Athens) or a zone plus an offset
(America/New_York+07:00, the common UTC+2/+3 "New York close" server); default UTC.

Strict by default: every file is validated first, and if any row of any file is bad nothing
is written and the bad rows (file, row, reason) are listed on stderr. The files are then
written as one transaction: if any write fails (a file off the stored bars' grid, a full
disk), every stored file is put back as it was. With --reject-bad the good rows are
written and each rejected row is printed on stderr (exit 0); the file's metadata counts
them, and backtests report the total as data_quality.rejected_rows. Appends are idempotent:
re-importing an overlapping range adds no duplicates; a bar whose values changed takes the
new values and is reported. --resample-to rebuilds longer timeframes from the whole stored
series (complete bars only) and stores them too.

exit codes: 0 imported; 1 a write failed (a full disk, no permission: the store is put
back as it was); 2 usage or input error (a bad option, a missing or unreadable file, bad
rows, a file off the stored bars' grid: nothing written).
"""

from __future__ import annotations

import argparse
import json
import sys

from mmats.cli import (
    EXIT_INPUT,
    EXIT_NO,
    add_data_option,
    add_json_option,
    command_parser,
    fail,
    series_from,
)


def parse_args(argv=None, prog="mmats import") -> argparse.Namespace:
    parser = command_parser(prog, __doc__)
    parser.add_argument("files", nargs="+", metavar="FILE", help="CSV or Parquet candle files")
    add_data_option(parser, default=None, what="the series the files hold: "
                    "VENUE:SYMBOL:TIMEFRAME, e.g. bittrex:ETH/BTC:5m")
    parser.add_argument("--venue", help="the VENUE of --data, given alone (e.g. binance)")
    parser.add_argument("--symbol", help="the SYMBOL of --data, given alone (e.g. ETH/BTC)")
    parser.add_argument("--timeframe", help="the TIMEFRAME of --data, given alone (e.g. 5m)")
    parser.add_argument("--resample-to", default="", metavar="TF[,TF...]",
                        help="also store these longer timeframes, e.g. 1h,1d")
    parser.add_argument("--reject-bad", action="store_true",
                        help="write the good rows and print the rejected ones "
                             "(default: write nothing if any row is bad)")
    add_json_option(parser)
    parser.add_argument("--format", default="auto",
                        choices=("auto", "mmats", "mt4", "mt5", "histdata"),
                        help="file layout (default: auto, detected from the content)")
    parser.add_argument("--tz", default=None, metavar="OFFSET|ZONE",
                        help="MetaTrader server time: +02:00, Europe/Athens or "
                             "America/New_York+07:00 (default: UTC)")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.resample_to.split(",") if t.strip()]
    from mmats.data import timeframe_ns
    from mmats.data.io import default_root
    from mmats.errors import ConfigError

    try:
        given = (args.venue, args.symbol, args.timeframe)
        args.venue, args.symbol, args.timeframe = series_from(
            args.data, given, "--venue, --symbol and --timeframe")
        args.root = args.root or str(default_root())
        source_ns = timeframe_ns(args.timeframe)
        for target in args.targets:
            if timeframe_ns(target) % source_ns:
                raise ConfigError(f"--resample-to {target} is not a whole multiple of "
                                  f"--timeframe {args.timeframe}")
    except ConfigError as exc:
        parser.error(str(exc))
    return args


def main(argv=None, prog="mmats import") -> int:
    args = parse_args(argv, prog)
    # Imported after parsing so that --help answers at once.
    from mmats.data import CandleStore
    from mmats.data.forex_formats import read_forex_file
    from mmats.data.io import read_parquet_arrays
    from mmats.data.resample import resample_arrays
    from mmats.data.schema import candles_from_arrays
    from mmats.errors import CandleValidationError, ConfigError, DataError
    from mmats.files import restored_on_error

    store = CandleStore(args.root)
    loaded, rejected, formats, failed = [], [], {}, False
    for file in _progress(args.files, quiet=args.json):
        try:
            clean, rejects = read_forex_file(file, format=args.format, utc_offset=args.tz,
                                             timeframe=args.timeframe,
                                             strict=not args.reject_bad)
        except CandleValidationError as exc:
            print(exc, file=sys.stderr)
            failed = True
            continue
        except (DataError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        for reject in rejects:
            print(f"rejected: {reject.source} row {reject.row}: {reject.reason}", file=sys.stderr)
        rejected += [reject._asdict() for reject in rejects]
        formats[str(file)] = {"format": clean.attrs["format"],
                              "utc_offset": clean.attrs["utc_offset"]}
        if clean.attrs["format"] != "mmats" and not args.json:
            print(f"{file}: read as {clean.attrs['format']}, times {clean.attrs['utc_offset']} "
                  "converted to UTC", file=sys.stderr)
        loaded.append((file, clean, len(rejects)))
    if failed:
        print("no file was imported; nothing was written.", file=sys.stderr)
        return EXIT_INPUT

    reports = []
    try:
        paths = [store.path(args.venue, args.symbol, timeframe)
                 for timeframe in (args.timeframe, *args.targets)]
        with restored_on_error(paths):  # one transaction: every file, or none of them
            rejected_rows = 0  # the store keeps the total; carried until a file exists
            for file, clean, rejects in loaded:
                rejected_rows += rejects
                reports.append(store.write(args.venue, args.symbol, args.timeframe, clean,
                                           source=str(file), rejected_rows=rejected_rows))
                rejected_rows = 0 if reports[-1].written else rejected_rows
            if args.targets:
                # The whole series, read into arrays with pyarrow (half the time of a frame
                # through DuckDB at 10M bars; polars was no faster), resampled by the numpy
                # code resample() runs.
                if not paths[0].is_file():  # nothing stored: the store says so
                    store.read(args.venue, args.symbol, args.timeframe)
                full = read_parquet_arrays(paths[0])
                for target in args.targets:
                    ts_ns, values = resample_arrays(full["ts"], full, target, args.timeframe,
                                                    source=str(paths[0]))
                    reports.append(store.write(args.venue, args.symbol, target,
                                               candles_from_arrays(ts_ns, values),
                                               source=f"resampled from {args.timeframe}"))
    except CandleValidationError as exc:
        print(exc, file=sys.stderr)
        print("no file was imported; the store is as it was.", file=sys.stderr)
        return EXIT_INPUT
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("no file was imported; the store is as it was.", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:  # a full disk, no permission: not the files' fault
        fail(exc)
        print("no file was imported; the store is as it was.", file=sys.stderr)
        return EXIT_NO

    if args.json:
        print(json.dumps({"reports": [r.to_dict() for r in reports], "rejected": rejected,
                          "formats": formats}, indent=2))
    else:
        for report in reports:
            print(report)
        if rejected:
            print(f"{len(rejected)} row(s) rejected (listed on stderr)")
    return 0


def _progress(items, quiet):
    if quiet or len(items) < 2 or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc="importing", unit="file")

