"""Reading the candle files forex traders already have: MetaTrader 4/5 exports and HistData.

:func:`read_forex_file` reads one file into the candle schema (``ts`` = bar open time in UTC)
and validates it like :func:`mmats.data.read_candle_file`: a bad row is rejected with the
file, its 1-based data row (header excluded) and the reason, and with ``strict=True`` any
reject raises :class:`~mmats.errors.CandleValidationError`. The layouts::

    mt4       MetaTrader 4 History Center export (F2, Export): no header, comma separated
              2024.01.02,00:00,1.10420,1.10480,1.10390,1.10450,1234
              date YYYY.MM.DD, time HH:MM (HH:MM:SS accepted), open, high, low, close,
              tick volume.
    mt5       MetaTrader 5 export (Symbols, Bars, Export): tab separated, with a header
              <DATE> <TIME> <OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> <VOL> <SPREAD>
              2024.01.02 00:00:00 1.10420 1.10480 1.10390 1.10450 1234 0 6
              Daily and longer bars have no <TIME> (00:00). Volume is <TICKVOL> (forex has
              no traded volume, <VOL> is 0), or <VOL> when there is no <TICKVOL>.
    histdata  HistData.com 1-minute bid bars, in any of its three bar layouts:
              ASCII and NinjaTrader (DAT_ASCII_*_M1_*, DAT_NT_*_M1_*):
                  20240102 000000;1.104200;1.104800;1.103900;1.104500;0
              MetaStock (DAT_MS_*): pair, YYYYMMDDHHMM, open, high, low, close, volume
                  EURUSD,202401020000,1.104200,1.104800,1.103900,1.104500,0
              MetaTrader (DAT_MT_*): the mt4 layout; the content is the same as an MT4
                  export, so ``format="auto"`` tells them apart by the DAT_MT_ file name.
              Volume is always 0. HistData's tick files (DAT_ASCII_*_T_*, DAT_NT_*_T_*) are
              not bars and its Excel files are .xlsx: both are refused with a message.

Times. HistData writes Eastern Standard Time *without* daylight saving all year, i.e. a
fixed UTC-05:00; it is converted to UTC. MetaTrader writes the broker's server time, which
``utc_offset`` describes (default UTC), in any of these forms:

- a fixed offset: ``"+02:00"``, ``"-5"``, ``"UTC+3"``, ``2`` (hours) or a timedelta;
- an IANA zone, whose daylight-saving rules apply: ``"Europe/Athens"``;
- an IANA zone shifted by a fixed offset: ``"America/New_York+07:00"``. Many brokers run
  "New York close" servers at UTC+2 in winter and UTC+3 in summer, switching on the US
  dates; that is New York time plus seven hours, which is exactly this form.

A local time that a daylight-saving change makes ambiguous or non-existent is rejected
(markets are closed at those hours, so a bar there means the zone is wrong). Daily bars of
a server whose offset changes with the season open at different UTC hours in winter and
summer, so they do not sit on one daily grid; import M1 or H1 bars and resample instead.

Files may be plain, ``.gz``, or a ``.zip`` holding one ``.csv`` (as HistData ships them),
in UTF-8 or UTF-16 (MetaTrader 5 exports are often UTF-16), with or without a byte-order mark.

>>> df, rejects = read_forex_file("DAT_ASCII_EURUSD_M1_2024.csv", timeframe="1m")  # doctest: +SKIP
>>> df, rejects = read_forex_file("EURUSD1.csv", utc_offset="America/New_York+07:00")  # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import datetime as dt
import gzip
import re
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from mmats.data.io import PARQUET_SUFFIXES, read_candle_file
from mmats.data.schema import VALUE_COLUMNS, Reject, format_rejects, validate_candles
from mmats.errors import CandleValidationError, ConfigError, DataError
from mmats.units import HOUR_NS, MINUTE_NS

FORMATS = ("mt4", "mt5", "histdata")
CHOICES = ("auto", "mmats") + FORMATS
HISTDATA_UTC_OFFSET = "-05:00"

_SNIFF_BYTES = 1 << 16
_SNIFF_LINES = 20

# One line of each headerless layout (stripped); the class each line votes for.
_LINE_CLASSES = (
    ("mt4", re.compile(r"^\d{4}\.\d{1,2}\.\d{1,2},\d{1,2}:\d{2}(:\d{2})?,[^,]+(,[^,]*){4}$")),
    ("histdata-ascii", re.compile(r"^\d{8} \d{6};[^;]+(;[^;]*){4}$")),
    ("histdata-metastock", re.compile(r"^[A-Za-z0-9._/-]+,\d{12},[^,]+(,[^,]*){4}$")),
    ("histdata-tick", re.compile(r"^\d{8} \d{9},[^,]+,[^,]+,[^,]*$")),
    ("histdata-nt-tick", re.compile(r"^\d{8} \d{6};[^;]+;[^;]*$")),
)


class Layout(NamedTuple):
    """How to cut one layout's lines into fields (``columns``: field index of each value)."""

    name: str
    separator: str
    fields: int
    date_field: int
    time_field: int | None
    ts_format: str
    columns: dict[str, int | None]
    header_lines: int = 0
    example: str = ""


_MT4 = Layout("mt4", ",", 7, 0, 1, "%Y.%m.%d %H:%M:%S",
              {"open": 2, "high": 3, "low": 4, "close": 5, "volume": 6},
              example="2024.01.02,00:00,1.10420,1.10480,1.10390,1.10450,1234")
_HISTDATA = {
    "histdata-ascii": Layout("histdata-ascii", ";", 6, 0, None, "%Y%m%d %H%M%S",
                             {"open": 1, "high": 2, "low": 3, "close": 4, "volume": 5},
                             example="20240102 000000;1.104200;1.104800;1.103900;1.104500;0"),
    "histdata-metastock": Layout("histdata-metastock", ",", 7, 1, None, "%Y%m%d%H%M",
                                 {"open": 2, "high": 3, "low": 4, "close": 5, "volume": 6},
                                 example="EURUSD,202401020000,1.1042,1.1048,1.1039,1.1045,0"),
    "histdata-mt": _MT4._replace(name="histdata-mt"),
}
_REFUSED = {
    "histdata-tick": "HistData tick quotes (DateTime,Bid,Ask,Volume), not bars",
    "histdata-nt-tick": "HistData NinjaTrader tick bars (DateTime;Quote;Volume), not OHLC bars",
    "mt5-ticks": "a MetaTrader 5 tick export (<BID>/<ASK> columns), not bars",
}


class ServerClock(NamedTuple):
    """What a file's local times mean: ``zone`` (IANA name, or None for a fixed offset) and
    ``shift_ns``, the offset from UTC (fixed) or from the zone's local time."""

    zone: str | None
    shift_ns: int


def parse_utc_offset(value) -> ServerClock:
    """Read a ``utc_offset`` (see the module docstring) into a :class:`ServerClock`.

    >>> parse_utc_offset("+02:00").shift_ns // 3_600_000_000_000
    2
    >>> parse_utc_offset("America/New_York+7").zone
    'America/New_York'
    """
    if value is None:
        return ServerClock(None, 0)
    if isinstance(value, dt.timedelta):
        return _fixed(int(pd.Timedelta(value).value), str(value))
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _fixed(int(round(float(value) * 60)) * MINUTE_NS, str(value))
    text = str(value).strip()
    if text.upper() in ("", "UTC", "GMT", "Z"):
        return ServerClock(None, 0)
    match = re.fullmatch(r"(?:UTC|GMT)?\s*([+-]?\d{1,2})(?::?(\d{2}))?", text, re.IGNORECASE)
    if match:
        return _fixed(_offset_ns(match.group(1), match.group(2)), text)
    if _zone_exists(text):
        return ServerClock(text, 0)
    match = re.fullmatch(r"(.+?)([+-]\d{1,2})(?::?(\d{2}))?", text)
    if match and _zone_exists(match.group(1)):
        return ServerClock(match.group(1), _offset_ns(match.group(2), match.group(3)))
    raise ConfigError(f"utc offset {value!r} is not understood; use a fixed offset such as "
                      "'+02:00' or '-5', an IANA zone such as 'Europe/Athens', or a zone plus "
                      "an offset such as 'America/New_York+07:00' (UTC+2 winter / +3 summer)")


def _fixed(shift_ns: int, label: str) -> ServerClock:
    if abs(shift_ns) > 14 * HOUR_NS:
        raise ConfigError(f"utc offset {label!r} is more than 14 hours from UTC")
    return ServerClock(None, shift_ns)


def _offset_ns(hours: str, minutes: str | None) -> int:
    sign = -1 if hours.startswith("-") else 1
    return sign * (abs(int(hours)) * HOUR_NS + int(minutes or 0) * MINUTE_NS)


def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def describe_clock(clock: ServerClock) -> str:
    """``'UTC+02:00'``, ``'America/New_York+07:00'``, ``'UTC'``: for messages and reports."""
    if clock.shift_ns == 0:
        return clock.zone or "UTC"
    sign = "-" if clock.shift_ns < 0 else "+"
    minutes = abs(clock.shift_ns) // MINUTE_NS
    offset = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return f"{clock.zone}{offset}" if clock.zone else f"UTC{offset}"


def local_to_utc_ns(local_ns: np.ndarray, clock: ServerClock) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock times (int64 ns, read as if UTC) -> UTC ns; returns ``(ts_ns, bad)``,
    ``bad`` marking local times a daylight-saving change makes ambiguous or non-existent.

    >>> clock = parse_utc_offset("-05:00")
    >>> int(local_to_utc_ns(np.array([0]), clock)[0][0]) // 3_600_000_000_000
    5
    """
    local_ns = np.asarray(local_ns, dtype=np.int64)
    if clock.zone is None:
        return local_ns - clock.shift_ns, np.zeros(local_ns.size, dtype=bool)
    wall = pd.Series((local_ns - clock.shift_ns).view("M8[ns]"))
    aware = wall.dt.tz_localize(clock.zone, ambiguous="NaT", nonexistent="NaT")
    bad = aware.isna().to_numpy()
    utc = aware.dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("ns")
    ts_ns = utc.to_numpy(dtype="M8[ns]").view(np.int64).copy()
    ts_ns[bad] = 0
    return ts_ns, bad


# -- reading ------------------------------------------------------------------------------


def detect_format(path) -> str:
    """The format of a candle file from its content: ``'mt4'``, ``'mt5'``, ``'histdata'``
    or ``'mmats'`` (anything else, left to :func:`mmats.data.read_candle_file`).

    Raises :class:`DataError` for files recognised as something that is not bars
    (tick exports).

    >>> detect_format("DAT_ASCII_EURUSD_M1_2024.csv")   # doctest: +SKIP
    'histdata'
    """
    return _public_name(_sniff(Path(path)))


def read_forex_file(path, format: str = "auto", utc_offset=None, timeframe: str | None = None,
                    strict: bool = True) -> tuple[pd.DataFrame, list[Reject]]:
    """Read an MT4, MT5, HistData or MMATS candle file; returns ``(clean_df, rejects)``.

    ``format`` is one of ``auto`` (detect from the content), ``mmats`` (any file
    :func:`~mmats.data.read_candle_file` reads), ``mt4``, ``mt5`` or ``histdata``.
    ``utc_offset`` is the MetaTrader server's clock (see the module docstring; default UTC);
    HistData is always UTC-05:00 and ``utc_offset`` may only repeat that. ``timeframe``
    checks the bar grid. ``clean_df.attrs`` holds ``format`` (the layout read) and
    ``utc_offset`` (the clock converted from).

    >>> df, _ = read_forex_file("EURUSD1.csv", format="mt4", utc_offset="+02:00")  # doctest: +SKIP
    """
    path = Path(path)
    if format not in CHOICES:
        raise ConfigError(f"format {format!r} is unknown; use one of {', '.join(CHOICES)}")
    layout_name = _sniff(path) if format == "auto" else _explicit_layout(path, format)
    if layout_name == "mmats":
        if utc_offset is not None:
            raise ConfigError(f"{path}: a utc offset applies to MetaTrader files, but this is "
                              "read as an MMATS/plain candle file, whose naive times are UTC "
                              "(write offsets into the timestamps, or pass the format)")
        clean, rejects = read_candle_file(path, timeframe=timeframe, strict=strict)
        clean.attrs.update(format="mmats", utc_offset=None)
        return clean, rejects
    clock = _clock_for(layout_name, utc_offset, path)
    label, lines = _read_lines(path)
    if layout_name == "mt5":
        layout, header_lines = _mt5_layout(label, lines)
    else:
        layout, header_lines = (_HISTDATA[layout_name] if layout_name in _HISTDATA else _MT4), 0
    return _parse(label, lines[header_lines:], layout, header_lines, clock, timeframe, strict)


def _public_name(layout_name: str) -> str:
    return "histdata" if layout_name.startswith("histdata") else layout_name


def _explicit_layout(path: Path, format: str) -> str:
    if format in ("mmats", "mt4", "mt5"):
        return format
    sniffed = _sniff(path, refuse=False)
    if sniffed in _REFUSED:
        raise DataError(f"{path}: {_REFUSED[sniffed]}; MMATS imports bars")
    if sniffed in _HISTDATA:
        return sniffed
    return "histdata-mt" if sniffed == "mt4" else "histdata-ascii"


def _clock_for(layout_name: str, utc_offset, path: Path) -> ServerClock:
    if not layout_name.startswith("histdata"):
        return parse_utc_offset(utc_offset)
    clock = parse_utc_offset(HISTDATA_UTC_OFFSET)
    if utc_offset is not None and parse_utc_offset(utc_offset) != clock:
        raise ConfigError(f"{path}: HistData files are always in EST without daylight saving "
                          f"(UTC{HISTDATA_UTC_OFFSET}); drop the utc offset {utc_offset!r}")
    return clock


def _sniff(path: Path, refuse: bool = True) -> str:
    """The layout of a file from its first lines (``'mmats'`` when none fits)."""
    if path.name.lower().endswith(PARQUET_SUFFIXES):
        return "mmats"
    member, head = _read_head(path)
    lines = [line.strip() for line in head.splitlines() if line.strip()][:_SNIFF_LINES]
    if not lines:
        return "mmats"
    if lines[0].upper().startswith("<DATE>"):
        tokens = {t.strip().strip("<>").upper() for t in re.split(r"[\t,;]", lines[0])}
        name = "mt5-ticks" if tokens & {"BID", "ASK"} else "mt5"
    else:
        votes: dict[str, int] = {}
        for line in lines:
            for name, pattern in _LINE_CLASSES:
                if pattern.match(line):
                    votes[name] = votes.get(name, 0) + 1
                    break
        name = max(votes, key=votes.get) if votes else "mmats"
        if votes.get(name, 0) * 2 <= len(lines):
            name = "mmats"
        if name == "mt4" and Path(member).name.upper().startswith("DAT_MT_"):
            name = "histdata-mt"
    if refuse and name in _REFUSED:
        raise DataError(f"{path}: {_REFUSED[name]}; MMATS imports bars")
    if name == "mmats" and path.name.lower().endswith(".zip"):
        raise DataError(f"{path}: this archive holds no MetaTrader or HistData bars; unzip it "
                        "and import the candle file inside")
    return name


def _read_head(path: Path) -> tuple[str, str]:
    """The member name and the decoded first bytes of a plain, gzip or zip file."""
    member, handle = _open(path)
    data = _read(path, handle, _SNIFF_BYTES)
    return member, _decode(data, path, partial=True)


def _read_lines(path: Path) -> tuple[str, list[str]]:
    """``(label, lines)`` of the whole file; the label names a zip member too."""
    member, handle = _open(path)
    data = _read(path, handle)
    label = str(path) if member == path.name else f"{path}:{member}"
    return label, _decode(data, path).splitlines()


def _read(path: Path, handle, size: int = -1) -> bytes:
    """Up to ``size`` bytes (all by default) of an open plain, gzip or zip member, closed
    after; a truncated or corrupt archive is a :class:`DataError` naming ``path``."""
    try:
        with handle:
            return handle.read(size)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read it (damaged or truncated?): {exc}") from None


def _open(path: Path):
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a candle file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.name.lower().endswith(".zip"):
            archive = zipfile.ZipFile(path)
            names = [n for n in archive.namelist()
                     if n.lower().endswith((".csv", ".txt")) and not n.endswith("/")]
            csvs = [n for n in names if n.lower().endswith(".csv")] or names
            if len(csvs) != 1:
                archive.close()
                found = ", ".join(csvs) or "none"
                raise DataError(f"{path}: expected one .csv file in the archive, found {found}; "
                                "unzip it and import the files one by one")
            return csvs[0], archive.open(csvs[0])
        if path.name.lower().endswith(".gz"):
            return path.name, gzip.open(path, "rb")
        return path.name, open(path, "rb")
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read it: {exc}") from None


def _decode(data: bytes, path: Path, partial: bool = False) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif data[:64].count(b"\x00") > 8:  # UTF-16 without a byte-order mark
        encoding = "utf-16-le" if data[1:2] == b"\x00" else "utf-16-be"
    else:
        encoding = "utf-8-sig"
    if partial and encoding.startswith("utf-16"):
        data = data[: len(data) // 2 * 2]
    try:
        return data.decode(encoding, errors="replace" if partial else "strict")
    except UnicodeDecodeError as exc:
        if encoding == "utf-8-sig":
            return data.decode("latin-1")  # every byte decodes; bad bytes show up as bad rows
        raise DataError(f"{path}: cannot decode it as {encoding}: {exc}") from None


def _mt5_layout(label: str, lines: list[str]) -> tuple[Layout, int]:
    """The MT5 layout named by the header line, and how many lines the header takes."""
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    header = lines[first].strip() if first is not None else ""
    if not header.upper().startswith("<DATE>"):
        reason = (f"no MetaTrader 5 header line; expected e.g. "
                  f"<DATE>\\t<TIME>\\t<OPEN>\\t<HIGH>\\t<LOW>\\t<CLOSE>\\t<TICKVOL>, got "
                  f"{header[:60]!r}")
        raise CandleValidationError(f"{label}: {reason}. Nothing was written.",
                                    [Reject(label, 0, reason)])
    separator = "\t" if "\t" in header else ("," if "," in header else ";")
    tokens = [t.strip().strip("<>").upper() for t in header.split(separator)]
    position = {token: i for i, token in enumerate(tokens)}
    if "BID" in position or "ASK" in position:
        raise DataError(f"{label}: {_REFUSED['mt5-ticks']}; MMATS imports bars")
    missing = [t for t in ("DATE", "OPEN", "HIGH", "LOW", "CLOSE") if t not in position]
    if missing:
        reason = f"the MetaTrader 5 header lacks {', '.join(f'<{t}>' for t in missing)}"
        raise CandleValidationError(f"{label}: {reason}. Nothing was written.",
                                    [Reject(label, 0, reason)])
    volume = position.get("TICKVOL", position.get("VOL"))
    columns = {c: position[c.upper()] for c in ("open", "high", "low", "close")}
    columns["volume"] = volume
    time = position.get("TIME")
    layout = Layout("mt5", separator, len(tokens), position["DATE"], time,
                    "%Y.%m.%d %H:%M:%S" if time is not None else "%Y.%m.%d", columns,
                    header_lines=first + 1, example=header)
    return layout, first + 1


def _parse(label: str, lines: list[str], layout: Layout, header_lines: int, clock: ServerClock,
           timeframe: str | None, strict: bool) -> tuple[pd.DataFrame, list[Reject]]:
    """Cut lines into fields, read their times, then validate like any candle frame.

    Every line after the header keeps its position (row = line number - header lines), so
    row numbers in every reason, including the schema's duplicate messages, match the file.
    """
    n = len(lines)
    cut = [line.split(layout.separator) for line in lines]
    counts = np.fromiter((len(fields) for fields in cut), dtype=np.int64, count=n)
    blank = np.fromiter((not line.strip() for line in lines), dtype=bool, count=n)
    fits = (counts == layout.fields) & ~blank
    own: dict[int, str] = {}
    for i in np.flatnonzero(~fits & ~blank):
        own[int(i)] = (f"expected {layout.fields} {_separator_name(layout.separator)}-separated "
                       f"fields (like {layout.example!r}), got {counts[i]}: {_show(lines[i])}")

    def column(index: int | None) -> np.ndarray:
        out = np.full(n, None, dtype=object)
        if index is not None:
            out[fits] = [cut[i][index].strip() for i in np.flatnonzero(fits)]
        return out

    stamp = column(layout.date_field)
    if layout.time_field is not None:
        times = column(layout.time_field)
        short = fits & np.array([t is not None and len(t) <= 5 for t in times], dtype=bool)
        times[short] = times[short] + ":00"
        stamp[fits] = stamp[fits] + " " + times[fits]
    parsed = pd.to_datetime(pd.Series(stamp), format=layout.ts_format, errors="coerce")
    unparsed = parsed.isna().to_numpy() & fits
    for i in np.flatnonzero(unparsed):
        own[int(i)] = (f"unparseable date/time {_show(stamp[i])} (expected "
                       f"{_format_hint(layout)})")
    local_ns = parsed.to_numpy(dtype="M8[ns]", na_value=np.datetime64(0, "ns")).view(np.int64)
    ts_ns, shifted_bad = local_to_utc_ns(local_ns, clock)
    for i in np.flatnonzero(shifted_bad & fits & ~unparsed):
        own[int(i)] = (f"local time {parsed.iloc[i]} is ambiguous or does not exist in "
                       f"{describe_clock(clock)} (a daylight-saving change); check utc_offset")
    good_ts = fits & ~unparsed & ~shifted_bad
    not_a_time = np.iinfo(np.int64).min  # NaT: the schema rejects these rows, reasons are ours
    ts = pd.Series(np.where(good_ts, ts_ns, not_a_time).view("M8[ns]")).dt.tz_localize("UTC")
    frame = pd.DataFrame({"ts": ts})
    for name in VALUE_COLUMNS:
        index = layout.columns[name]
        frame[name] = column(index) if index is not None else np.where(fits, "0", None)

    checked, schema_rejects = validate_candles(frame, source=label, timeframe=timeframe,
                                               strict=False)
    reasons: dict[int, str] = {}
    for reject in schema_rejects:
        i = reject.row - 1
        if blank[i]:
            continue
        if i in own:
            extra = [part for part in reject.reason.split("; ")
                     if not part.startswith(("unparseable ts", "NaN in"))]
            reasons[i] = "; ".join([own[i]] + (extra if fits[i] else []))
        else:
            reasons[i] = reject.reason
    rejects = [Reject(label, i + 1, reasons[i]) for i in sorted(reasons)]
    rows = int(np.count_nonzero(~blank))
    if rejects and strict:
        raise CandleValidationError(format_rejects(label, rejects, rows, header_lines), rejects)
    checked.attrs["validation"].update(rows_in=rows, rejected=len(rejects))
    checked.attrs.update(source=label, format=layout.name, utc_offset=describe_clock(clock))
    return checked, rejects


def _separator_name(separator: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab"}.get(separator, repr(separator))


def _format_hint(layout: Layout) -> str:
    if layout.name == "histdata-ascii":
        return "YYYYMMDD HHMMSS"
    if layout.name == "histdata-metastock":
        return "YYYYMMDDHHMM"
    if layout.name == "mt5" and layout.time_field is None:
        return "YYYY.MM.DD"
    return "YYYY.MM.DD and HH:MM or HH:MM:SS"


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
