"""The CSV import read against the plain pandas read (issue 14, item 7).

read_raw_candles reads a CSV with pandas and parses an ISO-8601 ts column up front
(_parse_iso_ts). The frame must be the one the plain read gives: ``pd.read_csv(path,
skipinitialspace=True)`` mapped onto the schema, the ts texts left to validate_candles.
The same bytes are stored for good files in every shape (quoted fields, aliases, extra
columns, CRLF, BOM, gzip, many digits), and the same messages (file, row, column) are
given for bad ones.

These tests were written for a polars read of large CSVs, which MMATS no longer has:
``benchmarks/bench_import.py`` found polars no faster than pandas at 10M rows (0.95x in
one run, 0.93x in the median of three), so it left the dependencies.
"""

import csv
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmats.cli import import_data
from mmats.data import CandleStore, read_candle_file, validate_candles
from mmats.data.io import _map_columns, read_raw_candles
from mmats.errors import CandleValidationError, DataError

SAMPLE = Path(__file__).resolve().parents[2] / "mmats" / "data" / "sample"
SAMPLES = sorted(SAMPLE.glob("*/*.parquet"))
HEADER = "ts,open,high,low,close,volume"
GOOD = "2018-01-10 00:00:00,1.0,1.2,0.9,1.1,10"
NEXT = "2018-01-10 00:05:00,1.0,1.2,0.9,1.1,10"


def _pandas_read(path: Path, timeframe, strict=True):
    """The reference: pandas read_csv, the ts texts left to validate_candles."""
    try:
        raw = pd.read_csv(path, skipinitialspace=True)
    except Exception as exc:  # the reader's own error; read_raw_candles wraps it
        raise DataError(f"{path}: cannot read it (damaged or truncated?): {exc}") from None
    frame, dropped = _map_columns(raw, str(path))
    frame.attrs = {"source": str(path), "dropped_columns": dropped}
    return validate_candles(frame, source=str(path), timeframe=timeframe, strict=strict)


def _stored(root: Path, frame: pd.DataFrame, timeframe: str) -> bytes:
    return CandleStore(root).write("v", "X/Y", timeframe, frame, source="same.csv").path.read_bytes()


def _assert_same_as_pandas(tmp_path, path: Path, timeframe: str | None):
    """read_candle_file gives what the reference read gives, and stores the same bytes."""
    old, old_rejects = _pandas_read(path, timeframe)
    new, new_rejects = read_candle_file(path, timeframe)
    assert new_rejects == old_rejects == []
    pd.testing.assert_frame_equal(new, old)
    assert new.attrs == old.attrs
    tf = timeframe or new.attrs.get("timeframe") or "1m"
    assert _stored(tmp_path / "new", new, tf) == _stored(tmp_path / "old", old, tf)
    return new


def _sample_timeframe(path: Path) -> str:
    return path.stem.rsplit("_", 1)[1]


def _ts_texts(frame: pd.DataFrame, form: str) -> pd.Series:
    ts = frame["ts"]
    ns = ts.to_numpy("M8[ns]").view(np.int64)
    forms = {
        "space": lambda: ts.dt.strftime("%Y-%m-%d %H:%M:%S"),
        "T": lambda: ts.dt.strftime("%Y-%m-%dT%H:%M:%S"),
        "Z": lambda: ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "minutes": lambda: ts.dt.strftime("%Y-%m-%d %H:%M"),
        "fraction": lambda: ts.dt.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "pandas": lambda: ts.astype(str),  # "2018-01-10 00:00:00+00:00"
        "+0200": lambda: ts.dt.tz_convert("Etc/GMT-2").dt.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "+05:30": lambda: ts.dt.tz_convert("Asia/Kolkata").map(lambda t: t.isoformat()),
        "athens": lambda: ts.dt.tz_convert("Europe/Athens").map(lambda t: t.isoformat()),
        "epoch_s": lambda: pd.Series(ns // 10**9),
        "epoch_ms": lambda: pd.Series(ns // 10**6),
    }
    return forms[form]()


TS_FORMS = ("space", "T", "Z", "minutes", "fraction", "pandas", "+0200", "+05:30", "athens",
            "epoch_s", "epoch_ms")


@pytest.mark.parametrize("form", TS_FORMS)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_stores_the_same_bytes(tmp_path, sample, form):
    """Every bundled sample (thousands of rows each), its times written eleven ways."""
    frame = pd.read_parquet(sample)
    table = frame.assign(ts=_ts_texts(frame, form).to_numpy())
    path = tmp_path / "same.csv"
    table.to_csv(path, index=False)
    new = _assert_same_as_pandas(tmp_path, path, _sample_timeframe(sample))
    assert len(new) == len(frame) > 500
    pd.testing.assert_frame_equal(new, frame.reset_index(drop=True), check_like=False)


def test_daily_dates_alone(tmp_path):
    frame = pd.read_parquet(SAMPLE / "nasdaq" / "GOOG_1d.parquet")
    path = tmp_path / "goog.csv"
    frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%d")).to_csv(path, index=False)
    _assert_same_as_pandas(tmp_path, path, "1d")


@pytest.fixture(scope="module")
def eth():
    return pd.read_parquet(SAMPLE / "bittrex" / "ETH_BTC_5m.parquet")


def test_quoted_fields_aliases_extra_columns_and_order(tmp_path, eth):
    table = eth.assign(ts=eth["ts"].dt.strftime("%Y-%m-%d %H:%M:%S"), trades=7,
                       note="a, quoted \"note\"")
    table = table[["note", "volume", "close", "ts", "trades", "low", "high", "open"]].rename(columns={"volume": "Vol", "ts": "Date", "open": "O"})
    path = tmp_path / "quoted.csv"
    table.to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    new = _assert_same_as_pandas(tmp_path, path, "5m")
    assert new.attrs["dropped_columns"] == ["note", "trades"]
    assert list(new.columns) == ["ts", "open", "high", "low", "close", "volume"]


def test_many_digits_and_exponents_parse_to_the_same_floats(tmp_path, eth):
    """Both parsers round decimals correctly: 17-digit reprs, 25 places, exponents."""
    rng = np.random.default_rng(3)
    n = len(eth)
    base = rng.lognormal(0, 4, n)
    spread = 1 + rng.uniform(0, 0.01, n)
    lines = [HEADER]
    for i, ts in enumerate(eth["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")):
        low, high = base[i], base[i] * spread[i]
        mid = float((low + high) / 2)
        lines.append(f"{ts},{mid!r},{high:.25f},{low:.17e},{mid:.9g},{rng.lognormal(2, 3):.20g}")
    path = tmp_path / "digits.csv"
    path.write_text("\n".join(lines) + "\n")
    _assert_same_as_pandas(tmp_path, path, "5m")


def test_crlf_bom_gzip_and_no_final_newline(tmp_path, eth):
    text = eth.assign(ts=eth["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(index=False)
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    _assert_same_as_pandas(tmp_path / "a", crlf, "5m")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.rstrip("\n").encode())
    _assert_same_as_pandas(tmp_path / "b", bom, "5m")
    packed = tmp_path / "packed.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    _assert_same_as_pandas(tmp_path / "c", packed, "5m")


# -- good files in unusual shapes: read as the reference reads them ----------------------------


def _rows(*lines: str) -> str:
    return "\n".join([HEADER, *lines]) + "\n"


SAME_READS = {  # good files in shapes a reader might read otherwise
    "trailing_empty_lines": _rows(GOOD, NEXT) + "\n\n",
    "blank_line_between": _rows(GOOD, "", NEXT),
    "spaces_in_header": _rows(GOOD, NEXT).replace(HEADER, HEADER.replace(",", ", ")),
    "seven_digit_fraction": _rows(GOOD.replace(":00,", ":00.0000000,", 1),
                                   NEXT.replace(":00,", ":00.0000000,", 1)),
    "naive_then_aware": _rows(GOOD, NEXT.replace(":00,", ":00+00:00,", 1)),
    "zero_volume_as_minus_zero": _rows(GOOD, NEXT[:-2] + "-0"),
    "epoch_seconds_as_float": _rows("1515542400.0,1.0,1.2,0.9,1.1,10",
                                     "1515542700,1.0,1.2,0.9,1.1,10"),
    "one_digit_month": _rows(GOOD, NEXT.replace("-01-", "-1-")),  # pandas takes it
    "spaces_after_commas": _rows(GOOD.replace(",", ", "), NEXT.replace(",", ", ")),
    "repeated_extra_header": _rows(GOOD + ",1,2", NEXT + ",1,2").replace(
        HEADER, HEADER + ",x,x"),
}


@pytest.mark.parametrize("name", sorted(SAME_READS))
def test_files_in_unusual_shapes_read_as_before(tmp_path, name):
    text = SAME_READS[name]
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    new = _assert_same_as_pandas(tmp_path, path, "5m")
    assert len(new) == 2


BAD_FILES = {  # (text, what the message must name)
    "price_not_a_number": (_rows(GOOD, NEXT.replace("1.2", "1.2x")),
                           "row 2 (line 3): high is not a number: '1.2x'"),
    "price_na": (_rows(GOOD, NEXT.replace("1.1", "NA")), "row 2 (line 3): NaN in close"),
    "price_nan": (_rows(GOOD, NEXT.replace("1.1", "nan")), "row 2 (line 3): NaN in close"),
    "price_empty": (_rows(GOOD, NEXT.replace(",1.1,", ",,")), "row 2 (line 3): NaN in close"),
    "price_negative": (_rows(GOOD, NEXT.replace("0.9", "-0.9")),
                       "row 2 (line 3): non-positive price (low=-0.9)"),
    "price_inf": (_rows(GOOD, NEXT.replace("1.2", "inf")),
                  "row 2 (line 3): infinite value (high=inf)"),
    "high_below_low": (_rows(GOOD, NEXT.replace("1.2", "0.8")),
                       "row 2 (line 3): high < low (high=0.8, low=0.9)"),
    "bad_timestamp": (_rows(GOOD, "yesterday" + NEXT[19:]),
                      "row 2 (line 3): unparseable ts 'yesterday'"),
    "leap_second": (_rows(GOOD, NEXT.replace("05:00", "04:60")),
                    "row 2 (line 3): unparseable ts '2018-01-10 00:04:60'"),
    "signed_year": (_rows(GOOD, "+" + NEXT), "row 2 (line 3): unparseable ts"),
    "year_3024": (_rows(GOOD, NEXT.replace("2018", "3024")),
                  "row 2 (line 3): ts '3024-01-10 00:05:00' is outside the dates"),
    "february_30": (_rows(GOOD, NEXT.replace("01-10", "02-30")),
                    "row 2 (line 3): unparseable ts '2018-02-30 00:05:00'"),
    "epoch_then_iso": (_rows("1515542400,1.0,1.2,0.9,1.1,10", NEXT),
                       "row 1 (line 2): unparseable ts '1515542400'"),
    "off_grid": (_rows(GOOD, NEXT.replace("05:00", "07:00")), "is off the 5m grid"),
    "conflicting_duplicate": (_rows(GOOD, GOOD.replace("1.1,", "1.15,")),
                              "duplicate ts 2018-01-10 00:00:00+00:00 with conflicting"),
    "comment_line": (_rows(GOOD, "# a note", NEXT), "row 2 (line 3): unparseable ts '# a note'"),
    "missing_column": ("ts,open,high,low,close\n2018-01-10 00:00:00,1.0,1.2,0.9,1.1\n",
                       "missing column(s) volume"),
    "two_ts_columns": ("date,time,open,high,low,close,volume\n"
                       "2018-01-10,00:00:00,1.0,1.2,0.9,1.1,10\n",
                       "columns 'date' and 'time' both look like 'ts'"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_rows_are_refused_with_the_pandas_messages(tmp_path, name):
    text, named = BAD_FILES[name]
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    with pytest.raises(CandleValidationError) as old:
        _pandas_read(path, "5m")
    with pytest.raises(CandleValidationError) as new:
        read_candle_file(path, "5m")
    assert str(new.value) == str(old.value)
    assert new.value.rejects == old.value.rejects
    assert str(new.value).startswith(f"{path}: ") and named in str(new.value)
    if name not in ("missing_column", "two_ts_columns"):
        old_clean, old_rejects = _pandas_read(path, "5m", strict=False)
        new_clean, new_rejects = read_candle_file(path, "5m", strict=False)
        assert new_rejects == old_rejects
        pd.testing.assert_frame_equal(new_clean, old_clean)


UNREADABLE = {
    "empty": b"",
    "more_fields_than_header": (_rows(GOOD) + NEXT + ",7\n").encode(),
    "unterminated_quote": (_rows(GOOD) + '"' + NEXT + "\n").encode(),
    "latin1": (_rows(GOOD) + "2018-01-10 00:05:00,1.0,1.2,0.9,1.1,10\xe9\n").encode("latin-1"),
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_files_are_named_as_before(tmp_path, name):
    path = tmp_path / f"{name}.csv"
    path.write_bytes(UNREADABLE[name])
    with pytest.raises(DataError) as old:
        _pandas_read(path, "5m")
    with pytest.raises(DataError) as new:
        read_candle_file(path, "5m")
    assert str(new.value) == str(old.value)
    assert str(new.value).startswith(f"{path}: cannot read it")


def test_truncated_gzip_is_named_as_before(tmp_path, eth):
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(eth.to_csv(index=False).encode())[:5000])
    with pytest.raises(DataError, match=r"cut\.csv\.gz: cannot read it \(damaged or truncated"):
        read_raw_candles(path)


def test_header_only_reads_as_before(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text(HEADER + "\n")
    old, _ = _pandas_read(path, "5m")
    new, _ = read_candle_file(path, "5m")
    pd.testing.assert_frame_equal(new, old)
    assert len(new) == 0


# -- through `mmats import` -------------------------------------------------------------------


@pytest.mark.parametrize("name, text, named", [
    ("price", _rows(GOOD, NEXT.replace("1.0", "one", 1)),
     "row 2 (line 3): open is not a number: 'one'"),
    ("timestamp", _rows(GOOD, "2018-13-10 00:05:00" + NEXT[19:]),
     "row 2 (line 3): unparseable ts '2018-13-10 00:05:00'"),
    ("column", "ts,open,high,low,volume\n2018-01-10 00:00:00,1.0,1.2,0.9,10\n",
     "missing column(s) close"),
    ("empty", "", "cannot read it (damaged or truncated?)"),
])
def test_import_refuses_malformed_files_naming_file_and_row(tmp_path, capsys, name, text,
                                                             named):
    good = tmp_path / "good.csv"
    good.write_text(_rows(GOOD, NEXT))
    bad = tmp_path / f"{name}.csv"
    bad.write_text(text)
    root = tmp_path / "store"
    code = import_data.main([str(good), str(bad), "--data", "bittrex:ETH/BTC:5m",
                             "--root", str(root)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}" in err and named in err
    assert "nothing was written" in err
    assert not list(root.rglob("*.parquet"))


def test_import_of_a_header_only_file_writes_no_bars(tmp_path, capsys):
    path = tmp_path / "header.csv"
    path.write_text(HEADER + "\n")
    root = tmp_path / "store"
    code = import_data.main([str(path), "--data", "bittrex:ETH/BTC:5m", "--root", str(root),
                             "--json"])
    capsys.readouterr()
    assert code == 0
    assert CandleStore(root).keys() == [] or len(CandleStore(root).read(
        "bittrex", "ETH/BTC", "5m")) == 0
