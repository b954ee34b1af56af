"""Reports of a research run: the quantstats tearsheet, the walk-forward HTML page and its
PDF, written offline from a small real run (the first 3,000 bars of ETH/BTC 5m)."""

import html
import re
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmats.data import load
from mmats.errors import ConfigError
from mmats.reports import write_research_report, write_tearsheet
from mmats.reports.research_report import default_stem, hold_returns, research_document
from mmats.validate.research import run_research

GRID = {"fast": [5, 10, 20], "slow": [30, 60]}
SECTIONS = ("Summary and verdict", "In-sample parameter heatmap", "Walk-forward folds",
            "Out-of-sample equity vs buy and hold", "Monte Carlo", "Overfitting",
            "Deflated Sharpe ratio", "Probability of backtest overfitting",
            "Superior predictive ability")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)


def _no_network(*args, **kwargs):
    raise AssertionError("a report tried to open a network connection")


@pytest.fixture(scope="module")
def candles():
    return load("bittrex:ETH/BTC:5m").iloc[:3000]  # the store's attrs name the symbol


@pytest.fixture(scope="module")
def research(candles):
    return run_research("ema_cross", candles, GRID, folds=3, mc_runs=200)


@pytest.fixture(scope="module")
def report(research, tmp_path_factory):
    directory = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        paths = write_research_report(research, directory)
    return paths


@pytest.fixture(scope="module")
def page(report) -> str:
    return report["html"].read_text(encoding="utf-8")


def test_files_are_written_under_one_timestamped_stem(report):
    assert sorted(report) == ["html", "pdf", "tearsheet"]
    stem = report["html"].stem
    assert re.fullmatch(r"walkforward_ema_cross_ETH_BTC_\d{8}T\d{6}Z", stem)
    assert report["tearsheet"].name == f"{stem}_tearsheet.html"
    assert report["pdf"].name == f"{stem}.pdf"
    directory = report["html"].parent
    assert sorted(p.name for p in directory.iterdir()) == sorted(p.name for p in report.values())


def test_stem_can_be_chosen_but_not_a_path(research, tmp_path):
    stamp = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
    assert default_stem(research, stamp) == "walkforward_ema_cross_ETH_BTC_20261122T013000Z"
    with pytest.raises(ConfigError, match="plain file name"):
        write_research_report(research, tmp_path, stem="../elsewhere")


def test_html_report_has_every_section_the_verdict_and_the_folds(research, page):
    for heading in SECTIONS:
        assert re.search(rf"<h[23]>{re.escape(html.escape(heading))}", page), heading
    assert html.escape(research.verdict) in page
    for fold in research.walk_forward.folds.itertuples():
        for stamp in (fold.train_start, fold.train_end, fold.test_start, fold.test_end):
            assert stamp.strftime("%Y-%m-%d %H:%M") in page
    assert page.count('src="data:image/png;base64,') >= 5
    assert "DSR = " in page and "PBO = " in page and "SPA p = " in page


def test_html_report_is_self_contained(page, report):
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", page)
    assert "<link" not in page and "<script" not in page
    assert f'href="{report["tearsheet"].name}"' in page  # the tearsheet, beside it


def test_tearsheet_has_its_sections_and_nothing_to_download(report):
    sheet = report["tearsheet"].read_text(encoding="utf-8")
    for section in ("Cumulative Return", "Key Performance Metrics", "EOY Returns",
                    "Worst 10 Drawdowns", "ema_cross on ETH/BTC"):
        assert section in sheet, section
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", sheet)
    assert "<link" not in sheet and "quantstats.io" not in sheet


def test_pdf_has_pages_with_the_summary_text(report):
    import pypdf  # a dev dependency

    reader = pypdf.PdfReader(report["pdf"])
    assert len(reader.pages) >= 4
    text = " ".join(page.extract_text() for page in reader.pages)
    for words in ("ema_cross", "Summary and verdict", "Walk-forward folds", "Monte Carlo",
                  "Deflated", "Probability of backtest overfitting"):
        assert words in text, words


def test_write_tearsheet_takes_local_series_only(research, tmp_path):
    wf = research.walk_forward
    hold = hold_returns(wf)
    with pytest.raises(ConfigError, match="ticker"):
        write_tearsheet(wf.returns, tmp_path / "a.html", benchmark="SPY",
                        periods_per_year=wf.market.periods_per_year)
    with pytest.raises(ConfigError, match="same index"):
        write_tearsheet(wf.returns, tmp_path / "a.html", benchmark=hold.iloc[10:],
                        periods_per_year=wf.market.periods_per_year)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_write_tearsheet_accepts_naive_and_aware_indexes_offline(research, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    wf = research.walk_forward
    naive = wf.returns.tz_convert("UTC").tz_localize(None).iloc[:500]
    hold = hold_returns(wf).iloc[:500]  # tz-aware: converted to naive UTC inside
    before = wf.returns.copy()
    path = write_tearsheet(naive, tmp_path / "t.html", benchmark=hold, title="A <b> test",
                           periods_per_year=wf.market.periods_per_year)
    sheet = path.read_text(encoding="utf-8")
    assert "<title>A &lt;b&gt; test</title>" in sheet
    assert "Cumulative Return" in sheet
    pd.testing.assert_series_equal(wf.returns, before)  # inputs untouched
    assert [p.name for p in tmp_path.iterdir()] == ["t.html"]


def test_single_parameter_grid_draws_a_line(candles):
    research = run_research("ema_cross", candles.iloc[:2000], {"fast": [5, 10, 20],
                            "slow": [60]}, folds=2, mc_runs=50)
    document = research_document(research)
    section = next(s for s in document.sections if s.anchor == "parameters")
    assert "The line is sharpe against fast" in section.blocks[0].text
    figure = section.blocks[1].figure
    assert len(figure.axes) == 1 and len(figure.axes[0].lines) == 3  # 2 folds + mean


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it "
                    "with apt-get install chromium); the HTML report is not rendered")
def test_chromium_renders_the_report(report, tmp_path):
    shot, log = tmp_path / "report.png", tmp_path / "chromium.log"
    with log.open("wb") as output:  # not pipes: chromium's helpers would hold them open
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             f"--screenshot={shot}", "--window-size=1280,4000", report["html"].as_uri()],
            check=True, stdout=output, stderr=subprocess.STDOUT, timeout=120)
    assert shot.exists(), log.read_text(errors="replace")
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    rgb = (pixels * 255).round().astype(np.uint32)
    colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
    assert len(colours) > 50  # text, tables and charts, not a blank or error page
    assert (pixels.min(axis=2) < 0.9).mean() > 0.05  # a fair share of the page is drawn
