"""MetaTrader 4/5 and HistData files: layouts, time zones, bad rows, detection, import."""

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmats.data import CandleStore
from mmats.data.forex_formats import (
    detect_format,
    local_to_utc_ns,
    parse_utc_offset,
    read_forex_file,
)
from mmats.errors import CandleValidationError, ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
HOUR = pd.Timedelta(hours=1)
NO_SHIFT = pd.Timedelta(0)


def bars(start="2024-01-02 00:00", count=30, seed=7) -> pd.DataFrame:
    """EUR/USD-like 1-minute bars (naive wall-clock ts), prices on the 5th decimal."""
    rng = np.random.default_rng(seed)
    close = np.round(1.1042 + np.cumsum(rng.normal(0, 0.00012, count)), 5)
    open_ = np.round(np.r_[1.1042, close[:-1]], 5)
    spread = np.round(rng.uniform(0.00002, 0.00015, (2, count)), 5)
    return pd.DataFrame({
        "ts": pd.date_range(start, periods=count, freq="1min"),
        "open": open_,
        "high": np.round(np.maximum(open_, close) + spread[0], 5),
        "low": np.round(np.minimum(open_, close) - spread[1], 5),
        "close": close,
        "volume": rng.integers(1, 400, count).astype(float),
    })


def mt4_lines(frame) -> list[str]:
    return [f"{r.ts:%Y.%m.%d},{r.ts:%H:%M},{r.open:.5f},{r.high:.5f},{r.low:.5f},{r.close:.5f},"
            f"{int(r.volume)}" for r in frame.itertuples()]


def mt5_lines(frame) -> list[str]:
    header = "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>"
    return [header] + [f"{r.ts:%Y.%m.%d}\t{r.ts:%H:%M:%S}\t{r.open:.5f}\t{r.high:.5f}\t"
                       f"{r.low:.5f}\t{r.close:.5f}\t{int(r.volume)}\t0\t7"
                       for r in frame.itertuples()]


def histdata_lines(frame) -> list[str]:
    return [f"{r.ts:%Y%m%d %H%M%S};{r.open:.6f};{r.high:.6f};{r.low:.6f};{r.close:.6f};0"
            for r in frame.itertuples()]


def write(path: Path, lines: list[str], encoding="utf-8") -> Path:
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def expected(frame, shift=NO_SHIFT, volume=True) -> pd.DataFrame:
    """``frame`` as the schema says it should come out: UTC = wall clock - shift."""
    out = frame.copy()
    out["ts"] = (out["ts"] - shift).dt.tz_localize("UTC").dt.as_unit("ns")
    if not volume:
        out["volume"] = 0.0
    return out.reset_index(drop=True)


def same(actual, wanted):
    pd.testing.assert_frame_equal(actual.reset_index(drop=True), wanted, check_exact=False,
                                  rtol=0, atol=1e-9)


# -- each format ---------------------------------------------------------------------------


def test_mt4_history_center_export_default_utc(tmp_path):
    frame = bars()
    clean, rejects = read_forex_file(write(tmp_path / "EURUSD1.csv", mt4_lines(frame)),
                                     timeframe="1m")
    assert rejects == []
    same(clean, expected(frame))
    assert clean.attrs["format"] == "mt4" and clean.attrs["utc_offset"] == "UTC"
    assert clean["volume"].iloc[0] == frame["volume"].iloc[0]  # tick volume kept


def test_mt4_with_a_fixed_server_offset(tmp_path):
    frame = bars()
    path = write(tmp_path / "EURUSD1.csv", mt4_lines(frame))
    for offset in ("+02:00", "UTC+2", "2", 2, pd.Timedelta(hours=2)):
        clean, _ = read_forex_file(path, utc_offset=offset, timeframe="1m")
        same(clean, expected(frame, 2 * HOUR))
        assert clean.attrs["utc_offset"] == "UTC+02:00"
    # The first bar of 2024-01-02 00:00 server time opened at 22:00 UTC the day before.
    assert str(clean["ts"].iloc[0]) == "2024-01-01 22:00:00+00:00"


def test_mt4_new_york_close_server_follows_us_daylight_saving(tmp_path):
    winter, summer = bars("2024-01-10 12:00", 5), bars("2024-07-10 12:00", 5, seed=3)
    both = pd.concat([winter, summer], ignore_index=True)
    path = write(tmp_path / "EURUSD1.csv", mt4_lines(both))
    clean, _ = read_forex_file(path, utc_offset="America/New_York+07:00")
    # UTC+2 in January, UTC+3 in July (New York time + 7 hours).
    same(clean, pd.concat([expected(winter, 2 * HOUR), expected(summer, 3 * HOUR)],
                          ignore_index=True))
    # 2024-03-10 and 2024-03-31 sit either side of the EU change: a US-dated server is +3
    # on 2024-03-20 where Europe/Athens is still +2.
    march = bars("2024-03-20 12:00", 2)
    path = write(tmp_path / "march.csv", mt4_lines(march))
    us, _ = read_forex_file(path, utc_offset="America/New_York+07:00")
    eu, _ = read_forex_file(path, utc_offset="Europe/Athens")
    same(us, expected(march, 3 * HOUR))
    same(eu, expected(march, 2 * HOUR))


def test_mt5_export_with_header_tick_volume_and_utf16(tmp_path):
    frame = bars()
    for encoding in ("utf-8", "utf-16", "utf-16-le"):  # with and without a byte-order mark
        path = write(tmp_path / f"EURUSD_M1_{encoding}.csv", mt5_lines(frame), encoding)
        assert detect_format(path) == "mt5"
        clean, rejects = read_forex_file(path, utc_offset="+03:00", timeframe="1m")
        assert rejects == []
        same(clean, expected(frame, 3 * HOUR))  # <TICKVOL>, not the zero <VOL>


def test_mt5_daily_export_has_no_time_column(tmp_path):
    lines = ["<DATE>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>",
             "2024.01.02\t1.10420\t1.10480\t1.09390\t1.09450\t81234\t0\t6",
             "2024.01.03\t1.09450\t1.09700\t1.08900\t1.09200\t79001\t0\t6"]
    clean, _ = read_forex_file(write(tmp_path / "EURUSD_D1.csv", lines), timeframe="1d")
    assert [str(t) for t in clean["ts"]] == ["2024-01-02 00:00:00+00:00",
                                             "2024-01-03 00:00:00+00:00"]
    assert clean["volume"].tolist() == [81234.0, 79001.0]


def test_histdata_ascii_is_est_without_daylight_saving(tmp_path):
    january, july = bars("2024-01-02 00:00", 20), bars("2024-07-01 17:00", 20, seed=1)
    both = pd.concat([january, july], ignore_index=True)
    path = write(tmp_path / "DAT_ASCII_EURUSD_M1_2024.csv", histdata_lines(both))
    clean, rejects = read_forex_file(path, timeframe="1m")
    assert rejects == []
    # +5 hours in winter AND summer: HistData never switches to EDT.
    same(clean, expected(both, -5 * HOUR, volume=False))
    assert str(clean["ts"].iloc[20]) == "2024-07-01 22:00:00+00:00"
    assert clean.attrs["format"] == "histdata-ascii"
    assert clean.attrs["utc_offset"] == "UTC-05:00"


def test_histdata_metastock_and_metatrader_layouts(tmp_path):
    frame = bars()
    metastock = [f"EURUSD,{r.ts:%Y%m%d%H%M},{r.open:.6f},{r.high:.6f},{r.low:.6f},"
                 f"{r.close:.6f},0" for r in frame.itertuples()]
    ms_path = write(tmp_path / "DAT_MS_EURUSD_M1_202401.csv", metastock)
    mt_lines = [line.rsplit(",", 1)[0] + ",0" for line in mt4_lines(frame)]
    mt_path = write(tmp_path / "DAT_MT_EURUSD_M1_202401.csv", mt_lines)
    for path, layout in ((ms_path, "histdata-metastock"), (mt_path, "histdata-mt")):
        assert detect_format(path) == "histdata"
        clean, _ = read_forex_file(path, timeframe="1m")
        same(clean, expected(frame, -5 * HOUR, volume=False))
        assert clean.attrs["format"] == layout
    # The same MetaTrader content under another name is an MT4 export (server time, UTC).
    renamed = write(tmp_path / "EURUSD1.csv", mt_lines)
    assert detect_format(renamed) == "mt4"
    clean, _ = read_forex_file(renamed, format="histdata")  # the override says otherwise
    same(clean, expected(frame, -5 * HOUR, volume=False))


def test_histdata_zip_and_gzip(tmp_path):
    frame = bars()
    archive = tmp_path / "HISTDATA_COM_ASCII_EURUSD_M1202401.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("DAT_ASCII_EURUSD_M1_202401.csv", "\r\n".join(histdata_lines(frame)))
        handle.writestr("DAT_ASCII_EURUSD_M1_202401.txt", "HistData.com status report\n")
    clean, _ = read_forex_file(archive, timeframe="1m")
    same(clean, expected(frame, -5 * HOUR, volume=False))
    assert clean.attrs["source"] == f"{archive}:DAT_ASCII_EURUSD_M1_202401.csv"
    packed = tmp_path / "EURUSD1.csv.gz"
    packed.write_bytes(gzip.compress("\n".join(mt4_lines(frame)).encode()))
    clean, _ = read_forex_file(packed, timeframe="1m")
    same(clean, expected(frame))


# -- bad rows --------------------------------------------------------------------------------


def test_bad_rows_are_named_by_file_row_and_reason(tmp_path):
    lines = mt4_lines(bars(count=8))
    lines[2] = "2024.01.02,00:02,1.10470,1.10400,1.10460,1.10480,50"       # high < low
    lines[4] = "2024.02.30,00:04,1.10470,1.10490,1.10460,1.10480,50"       # no such day
    lines[5] = "2024.01.02,00:05,1.10470,1.10490"                         # fields missing
    lines[6] = "2024.01.02,00:06,1.10470,abc,1.10460,1.10480,50"           # not a number
    path = write(tmp_path / "EURUSD1.csv", lines)
    with pytest.raises(CandleValidationError) as caught:
        read_forex_file(path, timeframe="1m")
    rows = [(r.source, r.row) for r in caught.value.rejects]
    assert rows == [(str(path), 3), (str(path), 5), (str(path), 6), (str(path), 7)]
    reasons = [r.reason for r in caught.value.rejects]
    assert reasons[0].startswith("high < low (high=1.104, low=1.1046)")
    assert reasons[1] == ("unparseable date/time '2024.02.30 00:04:00' "
                          "(expected YYYY.MM.DD and HH:MM or HH:MM:SS)")
    assert reasons[2].startswith("expected 7 comma-separated fields") and "got 4" in reasons[2]
    assert reasons[3] == "high is not a number: 'abc'"
    message = str(caught.value)
    assert message.startswith(f"{path}: 4 of 8 row(s) rejected; nothing was written.")
    assert "\n  row 3: high < low" in message  # no header: row 3 is line 3
    # Lenient: the good rows come back, the bad ones are listed.
    clean, rejects = read_forex_file(path, timeframe="1m", strict=False)
    assert len(clean) == 4 and [r.row for r in rejects] == [3, 5, 6, 7]


def test_mt5_rows_count_from_the_line_after_the_header(tmp_path):
    lines = mt5_lines(bars(count=5))
    lines[3] = lines[3].replace("\t1.", "\t-1.", 1)  # data row 3 = line 4: negative open
    path = write(tmp_path / "EURUSD_M1.csv", lines)
    with pytest.raises(CandleValidationError) as caught:
        read_forex_file(path)
    assert [r.row for r in caught.value.rejects] == [3]
    assert "row 3 (line 4): non-positive price (open=-1." in str(caught.value)


def test_duplicate_rows_are_numbered_as_in_the_file(tmp_path):
    lines = histdata_lines(bars(count=6))
    lines[1] = "garbage"
    lines.insert(3, "")  # a blank line keeps its place in the numbering but is no row
    lines[5] = lines[4].rsplit(";", 1)[0] + ";5"  # row 6: row 5's minute, another volume
    path = write(tmp_path / "DAT_ASCII_EURUSD_M1_2024.csv", lines)
    with pytest.raises(CandleValidationError) as caught:
        read_forex_file(path, format="histdata")
    found = {r.row: r.reason for r in caught.value.rejects}
    assert sorted(found) == [2, 5, 6]
    assert found[2].startswith("expected 6 semicolon-separated fields")
    assert "conflicting values (rows 5, 6)" in found[5] and found[5] == found[6]
    assert str(caught.value).startswith(f"{path}: 3 of 6 row(s) rejected")


def test_daylight_saving_gap_is_rejected(tmp_path):
    # Europe/Athens jumps from 03:00 to 04:00 on 2024-03-31: 03:30 never happened there.
    lines = ["2024.03.31,02:59,1.08000,1.08010,1.07990,1.08000,10",
             "2024.03.31,03:30,1.08000,1.08010,1.07990,1.08000,10"]
    path = write(tmp_path / "EURUSD1.csv", lines)
    with pytest.raises(CandleValidationError) as caught:
        read_forex_file(path, utc_offset="Europe/Athens")
    (reject,) = caught.value.rejects
    assert reject.row == 2 and "does not exist in Europe/Athens" in reject.reason


# -- detection and options -----------------------------------------------------------------


def test_detection_by_content(tmp_path):
    frame = bars(count=5)
    assert detect_format(write(tmp_path / "a.csv", mt4_lines(frame))) == "mt4"
    assert detect_format(write(tmp_path / "b.txt", mt5_lines(frame))) == "mt5"
    assert detect_format(write(tmp_path / "c.csv", histdata_lines(frame))) == "histdata"
    plain = tmp_path / "plain.csv"
    expected(frame).to_csv(plain, index=False)
    assert detect_format(plain) == "mmats"
    expected(frame).to_parquet(tmp_path / "plain.parquet")
    assert detect_format(tmp_path / "plain.parquet") == "mmats"
    # One broken first line does not change the verdict of the others.
    broken = ["2024.01.02;00:00;oops"] + mt4_lines(frame)[1:]
    assert detect_format(write(tmp_path / "d.csv", broken)) == "mt4"
    # A plain file still reads through the existing importer, unchanged.
    clean, _ = read_forex_file(plain, timeframe="1m")
    same(clean, expected(frame))
    assert clean.attrs["format"] == "mmats"


def test_tick_files_are_refused(tmp_path):
    ticks = write(tmp_path / "DAT_ASCII_EURUSD_T_202401.csv",
                  ["20240102 000003660,1.104200,1.104370,0",
                   "20240102 000003973,1.104180,1.104350,0"])
    with pytest.raises(DataError, match="tick quotes"):
        detect_format(ticks)
    with pytest.raises(DataError, match="tick quotes"):
        read_forex_file(ticks, format="histdata")
    mt5_ticks = write(tmp_path / "EURUSD_ticks.csv",
                      ["<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>",
                       "2024.01.02\t00:00:00.123\t1.10420\t1.10430\t\t\t6"])
    with pytest.raises(DataError, match="tick export"):
        read_forex_file(mt5_ticks)


def test_explicit_format_overrides_detection(tmp_path):
    path = write(tmp_path / "DAT_ASCII_EURUSD_M1_2024.csv", histdata_lines(bars(count=3)))
    with pytest.raises(CandleValidationError) as caught:
        read_forex_file(path, format="mt4")
    assert [r.row for r in caught.value.rejects] == [1, 2, 3]
    assert all("expected 7 comma-separated fields" in r.reason for r in caught.value.rejects)
    with pytest.raises(CandleValidationError, match="no MetaTrader 5 header line"):
        read_forex_file(path, format="mt5")
    with pytest.raises(ConfigError, match="format 'csv' is unknown"):
        read_forex_file(path, format="csv")


def test_offset_options(tmp_path):
    assert parse_utc_offset(None) == parse_utc_offset("UTC") == (None, 0)
    assert parse_utc_offset("-05:30").shift_ns == -int(5.5 * HOUR.value)
    assert parse_utc_offset("GMT+3").shift_ns == 3 * HOUR.value
    assert parse_utc_offset(-4.5).shift_ns == -int(4.5 * HOUR.value)
    assert parse_utc_offset("Europe/Athens") == ("Europe/Athens", 0)
    for bad in ("Mars/Olympus", "+25", "two hours"):
        with pytest.raises(ConfigError):
            parse_utc_offset(bad)
    # local_to_utc_ns: a fixed offset is plain arithmetic, a zone follows its rules.
    noon = pd.Timestamp("2024-07-01 12:00").value
    fixed, _ = local_to_utc_ns(np.array([noon]), parse_utc_offset("-05:00"))
    zoned, _ = local_to_utc_ns(np.array([noon]), parse_utc_offset("America/New_York"))
    assert fixed[0] - noon == 5 * HOUR.value and zoned[0] - noon == 4 * HOUR.value
    # HistData is always EST; the same offset again is fine, another one is an error.
    path = write(tmp_path / "DAT_ASCII_EURUSD_M1_2024.csv", histdata_lines(bars(count=3)))
    assert len(read_forex_file(path, utc_offset="-05:00")[0]) == 3
    with pytest.raises(ConfigError, match="always in EST"):
        read_forex_file(path, utc_offset="+02:00")
    plain = tmp_path / "plain.csv"
    expected(bars(count=3)).to_csv(plain, index=False)
    with pytest.raises(ConfigError, match="naive times are UTC"):
        read_forex_file(plain, utc_offset="+02:00")


# -- through scripts/import_data.py -----------------------------------------------------------


def run_import(*args, cwd):
    command = [sys.executable, str(REPO / "scripts" / "import_data.py"), *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_import_script_round_trip_into_the_store(tmp_path):
    # One hour of HistData bars, then the next hour from an MT4 export on a UTC+2 server:
    # both land in one UTC series, and resample to 15m.
    first = bars("2024-01-02 00:00", 60)                    # EST 00:00 = 05:00 UTC
    second = bars("2024-01-02 08:00", 60, seed=11)          # UTC+2 08:00 = 06:00 UTC
    histdata = write(tmp_path / "DAT_ASCII_EURUSD_M1_202401.csv", histdata_lines(first))
    mt4 = write(tmp_path / "EURUSD1.csv", mt4_lines(second))
    store_root = tmp_path / "store"
    result = run_import(histdata, mt4, "--tz", "+02:00", "--venue", "fx", "--symbol", "EUR/USD",
                        "--timeframe", "1m", "--resample-to", "15m", "--root", store_root,
                        "--json", cwd=tmp_path)
    # --tz applies to the MetaTrader file; HistData files refuse any other offset.
    assert result.returncode == 2 and "always in EST" in result.stderr
    assert not store_root.exists()
    result = run_import(histdata, "--venue", "fx", "--symbol", "EUR/USD", "--timeframe", "1m",
                        "--root", store_root, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_import(mt4, "--tz", "+02:00", "--venue", "fx", "--symbol", "EUR/USD",
                        "--timeframe", "1m", "--resample-to", "15m", "--root", store_root,
                        "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["formats"] == {str(mt4): {"format": "mt4", "utc_offset": "UTC+02:00"}}
    assert [(r["timeframe"], r["rows_added"]) for r in summary["reports"]] == [("1m", 60),
                                                                              ("15m", 8)]
    store = CandleStore(store_root)
    stored = store.read("fx", "EUR/USD", "1m")
    want = pd.concat([expected(first, -5 * HOUR, volume=False), expected(second, 2 * HOUR)],
                     ignore_index=True)
    same(stored, want)
    quarter = store.read("fx", "EUR/USD", "15m")
    assert str(quarter["ts"].iloc[0]) == "2024-01-02 05:00:00+00:00"
    assert quarter["high"].iloc[0] == want["high"].iloc[:15].max()
    assert quarter["volume"].iloc[-1] == want["volume"].iloc[-15:].sum()
    # Text mode says how each file was read.
    again = run_import(histdata, "--venue", "fx", "--symbol", "EUR/USD", "--timeframe", "1m",
                       "--root", store_root, cwd=tmp_path)
    assert again.returncode == 0 and "+0 added" in again.stdout
    assert "read as histdata-ascii, times UTC-05:00 converted to UTC" in again.stderr


def test_import_script_strict_names_bad_rows_and_writes_nothing(tmp_path):
    lines = mt5_lines(bars(count=10))
    lines[7] = lines[7].replace("2024.01.02", "2024-01-02")
    path = write(tmp_path / "EURUSD_M1.csv", lines)
    result = run_import(path, "--venue", "fx", "--symbol", "EUR/USD", "--timeframe", "1m",
                        "--root", tmp_path / "store", cwd=tmp_path)
    assert result.returncode == 2
    assert f"{path}: 1 of 10 row(s) rejected; nothing was written." in result.stderr
    assert "row 7 (line 8): unparseable date/time '2024-01-02 00:06:00'" in result.stderr
    assert not (tmp_path / "store").exists()
    lenient = run_import(path, "--format", "mt5", "--reject-bad", "--venue", "fx", "--symbol",
                         "EUR/USD", "--timeframe", "1m", "--root", tmp_path / "store",
                         cwd=tmp_path)
    assert lenient.returncode == 0, lenient.stderr
    assert f"rejected: {path} row 7: unparseable date/time" in lenient.stderr
    assert len(CandleStore(tmp_path / "store").read("fx", "EUR/USD", "1m")) == 9
