"""CSV and FIXML exports from a backtest result and from the journal; the journal script."""

import json
import sqlite3
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from mmats.backtest import backtest
from mmats.data import load
from mmats.errors import ConfigError
from mmats.live.journal import Journal
from mmats.reports.exports import FIXML_NAMESPACE, trades_to_csv, trades_to_fixml

NS = {"f": FIXML_NAMESPACE}


@pytest.fixture(scope="module")
def result():
    return backtest("ema_cross", load("bittrex:ETH/BTC:5m"), fee_bps=10)


@pytest.fixture
def journal_path(tmp_path, result):
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        for index, fill in enumerate(result.fills):
            journal.append_fill("ema_cross", "ETH/BTC", f"cid-{index}", fill)
    return path


def _reports(path):
    root = ET.parse(path).getroot()
    assert root.tag == f"{{{FIXML_NAMESPACE}}}FIXML" and root.get("v").startswith("5.0")
    return root.findall("f:Batch/f:TrdCaptRpt", NS)


def _check_fixml(path, fills, symbol, account):
    reports = _reports(path)
    assert len(reports) == len(fills) > 0
    for report, fill in zip(reports, fills, strict=True):
        assert float(report.get("LastQty")) == fill["qty"]
        assert float(report.get("LastPx")) == fill["price"]
        time = pd.Timestamp(int(fill["ts_ns"]), tz="UTC")
        assert pd.Timestamp(report.get("TxnTm")) == time
        assert report.get("TrdDt") == time.strftime("%Y-%m-%d") and report.get("TrdID")
        assert report.find("f:Instrmt", NS).get("Sym") == symbol
        side = report.find("f:RptSide", NS)
        assert side.get("Side") == ("1" if fill["side"] > 0 else "2")
        assert side.get("Acct") == account
        assert float(side.find("f:Comm", NS).get("Comm")) == fill["fee"]
    return reports


def _check_csv(path, fills):
    frame = pd.read_csv(path)
    assert len(frame) == len(fills)
    np.testing.assert_array_equal(frame["qty"].to_numpy(), fills["qty"])
    np.testing.assert_array_equal(frame["price"].to_numpy(), fills["price"])
    np.testing.assert_array_equal(frame["fee"].to_numpy(), fills["fee"])
    assert list(frame["side"]) == ["BUY" if side > 0 else "SELL" for side in fills["side"]]
    assert (pd.to_datetime(frame["time"]).dt.as_unit("ns").astype("int64").to_numpy() == fills["ts_ns"]).all()
    return frame


def test_exports_from_a_backtest(tmp_path, result):
    assert result.fills["fee"].sum() > 0
    frame = _check_csv(trades_to_csv(result, tmp_path / "fills.csv"), result.fills)
    assert (frame["symbol"] == "ETH/BTC").all()
    _check_fixml(trades_to_fixml(result, tmp_path / "fills.fixml", account="acct-1"),
                 result.fills, "ETH/BTC", "acct-1")
    # a bare record array works too
    _check_csv(trades_to_csv(result.fills, tmp_path / "bare.csv"), result.fills)
    assert list(tmp_path.glob(".*.tmp")) == []  # atomic writes leave no temporaries


def test_trade_exports(tmp_path, result):
    frame = pd.read_csv(trades_to_csv(result.trades, tmp_path / "trades.csv"))
    assert len(frame) == len(result.trades)
    np.testing.assert_array_equal(frame["pnl"].to_numpy(), result.trades["pnl"])
    assert (pd.to_datetime(frame["exit_time"]).dt.as_unit("ns").astype("int64").to_numpy()
            == result.trades["exit_ts_ns"]).all()
    reports = _reports(trades_to_fixml(result.trades, tmp_path / "trades.fixml",
                                       symbol="ETH/BTC"))
    assert len(reports) == 2 * len(result.trades)


def test_exports_from_the_journal_match_the_backtest(tmp_path, result, journal_path):
    with Journal(journal_path) as journal:
        frame = _check_csv(trades_to_csv(journal, tmp_path / "j.csv"), result.fills)
        reports = _check_fixml(trades_to_fixml(journal, tmp_path / "j.fixml", account="a"),
                               result.fills, "ETH/BTC", "a")
    assert list(frame["client_order_id"]) == [f"cid-{i}" for i in range(len(result.fills))]
    assert reports[0].find("f:RptSide", NS).get("ClOrdID") == "cid-0"


def test_bad_source(tmp_path, result):
    with pytest.raises(ConfigError, match="source"):
        trades_to_csv(result.orders, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def _script(repo, python, *arguments):
    return subprocess.run([python, str(repo / "scripts" / "journal.py"), *arguments],
                          capture_output=True, text=True, timeout=60)


def test_script_verify_and_export(repo, python, tmp_path, journal_path, result):
    done = _script(repo, python, "verify", "--journal", str(journal_path))
    assert done.returncode == 0 and "ok" in done.stdout
    done = _script(repo, python, "verify", "--journal", str(journal_path), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["rows_checked"] == len(result.fills)
    for fmt in ("csv", "fixml"):
        output = tmp_path / f"out.{fmt}"
        done = _script(repo, python, "export", "--journal", str(journal_path), "--format", fmt,
                       "--output", str(output))
        assert done.returncode == 0, done.stderr
    _check_csv(tmp_path / "out.csv", result.fills)
    assert len(_reports(tmp_path / "out.fixml")) == len(result.fills)

    db = sqlite3.connect(journal_path)
    db.execute("DROP TRIGGER fills_no_update")
    db.execute("UPDATE fills SET price = price * 1.01 WHERE seq = 3")
    db.commit()
    db.close()
    done = _script(repo, python, "verify", "--journal", str(journal_path))
    assert done.returncode == 1 and "fills" in done.stdout and "seq 3" in done.stdout
    done = _script(repo, python, "verify", "--journal", str(journal_path), "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["problems"][0]["seq"] == 3


def test_script_unreadable(repo, python, tmp_path):
    done = _script(repo, python, "verify", "--journal", str(tmp_path / "missing.sqlite"))
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert not (tmp_path / "missing.sqlite").exists()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"\x00garbage" * 500)
    done = _script(repo, python, "verify", "--journal", str(garbage))
    assert done.returncode == 2 and "unreadable" in done.stderr
