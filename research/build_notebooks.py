"""Write the research notebooks from the cells below (run: python research/build_notebooks.py).

Keeping the cells here makes the notebooks easy to review in a diff; the test suite
executes the .ipynb files themselves. A cell of kind "plot" is a code cell tagged "plot":
it shows its figure with ``plt.show()``, and the test checks that the figure appears under
that cell and no image appears under any other.
"""

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

QUICKSTART = [
    ("markdown", """# MMATS quickstart

Load real candles, backtest a strategy, sweep its parameters, and write a tearsheet.
Everything runs offline on the bundled sample data."""),
    ("code", """%matplotlib inline
import matplotlib.pyplot as plt

from mmats.backtest import backtest, sweep
from mmats.data import load, quality_report

candles = load("bittrex:ETH/BTC:5m")
print(quality_report(candles).to_text())
candles.tail()"""),
    ("markdown", """## The data's quality
Every result states it: bars, bars the calendar expects, missing bars and gaps, zero volume,
rows rejected at import. Gaps are never filled; the scripts warn on stderr when one is large
(`--max-gap`) or too much is missing (`--max-missing`)."""),
    ("code", """from mmats.data import data_quality, data_quality_warnings

quality = data_quality(candles)
print(quality.summary())
gappy = data_quality(load("bittrex:ADA/BTC:5m"))  # the same weeks, with gaps
print(gappy.summary())
print(data_quality_warnings(gappy, max_gap="2h") or "no warnings")"""),
    ("markdown", """## One backtest
The decision at a bar's close fills at the next bar's open; 10 bps fees."""),
    ("code", """result = backtest("ema_cross", candles, {"fast": 10, "slow": 50}, fee_bps=10)
print({k: round(v, 4) for k, v in result.metrics.items()})
result.trades_frame().head()"""),
    ("plot", """ax = result.equity.plot(title="EMA cross 10/50, equity", figsize=(9, 3))
ax.figure.tight_layout()
plt.show()"""),
    ("markdown", """## A parameter sweep
Every combination runs inside one numba kernel; the heatmap shows the Sharpe ratio."""),
    ("plot", """swept = sweep("ema_cross", candles, {"fast": list(range(5, 55, 5)),
                                      "slow": list(range(20, 210, 20))}, fee_bps=10)
print(f"{len(swept.table)} combinations in {swept.seconds:.3f} s")
heat = swept.table.pivot(index="fast", columns="slow", values="sharpe")
fig, ax = plt.subplots(figsize=(8, 4))
image = ax.imshow(heat.to_numpy(), aspect="auto", cmap="RdYlGn")
ax.set_xticks(range(len(heat.columns)), heat.columns)
ax.set_yticks(range(len(heat.index)), heat.index)
ax.set_xlabel("slow"); ax.set_ylabel("fast"); fig.colorbar(image, label="Sharpe")
plt.show()
swept.best("sharpe", 5)"""),
    ("markdown", """## A tearsheet
quantstats, offline, against buy and hold of the same data."""),
    ("code", """import tempfile
from pathlib import Path
from mmats.reports.tearsheet import write_tearsheet

hold = candles.set_index("ts")["close"].pct_change().fillna(0.0)
path = write_tearsheet(result.returns, Path(tempfile.mkdtemp()) / "quickstart.html",
                       benchmark=hold, title="EMA cross 10/50 on ETH/BTC",
                       periods_per_year=result.market.periods_per_year)
print(path, path.stat().st_size, "bytes")"""),
]

ROBUSTNESS = [
    ("markdown", """# Robustness: walk-forward, Monte Carlo, overfitting

Is the best parameter set an edge or an accident of the sample? Re-optimise on rolling
windows and trade only the windows that follow; then resample the out-of-sample returns
and ask how likely the result is to be luck."""),
    ("code", """%matplotlib inline
import matplotlib.pyplot as plt

from mmats.data import load
from mmats.validate.research import run_research

candles = load("bittrex:ETH/BTC:5m")
research = run_research("ema_cross", candles, {"fast": [5, 10, 20, 30], "slow": [40, 60, 100, 150]},
                        folds=4, fee_bps=10, mc_runs=500, seed=1)
research.walk_forward.folds[["fold", "test_start", "fast", "slow", "is_sharpe", "oos_sharpe"]]"""),
    ("code", """from mmats.data import data_quality

print(data_quality(candles).summary())  # gaps are never filled; a result states them"""),
    ("plot", """wf = research.walk_forward
ax = wf.equity.plot(label="walk-forward (out of sample)", figsize=(9, 3))
wf.benchmark.plot(ax=ax, label="buy and hold")
ax.legend(); ax.figure.tight_layout()
plt.show()
print("walk-forward efficiency", round(wf.efficiency, 3))"""),
    ("markdown", "## Monte Carlo of the out-of-sample returns"),
    ("code", """mc = research.monte_carlo
print("P(ruin)", mc.probability_of_ruin, " P(drawdown beyond limit)", mc.probability_of_drawdown)
mc.percentiles()"""),
    ("markdown", "## Overfitting statistics"),
    ("code", """print("deflated Sharpe ratio", round(float(research.deflated_sharpe.dsr), 3))
print("probability of backtest overfitting", round(float(research.pbo.pbo), 3))
print("SPA p-value", round(float(research.spa.pvalue), 3))
print()
print(research.verdict)"""),
]


STRATEGIES = [
    ("markdown", """# Strategies that see more than one series

A strategy may read other series beside its own bars (`INPUTS`: a longer timeframe of
its symbol, another symbol), say how sure it is (`OUTPUTS` with a `confidence`), and
have its size lowered by news sentiment. Each input reaches it aligned as-of: at a bar it
sees only what had closed by that bar's close. The three strategies below ship with
MMATS; the live runner replays each exactly as these backtests run it."""),
    ("code", """%matplotlib inline
import matplotlib.pyplot as plt

from mmats.backtest import backtest, sweep
from mmats.data import load
from mmats.strategy import load_strategy

candles = load("bittrex:ETH/BTC:5m")
trend = load_strategy("trend_filter")
print("trend_filter reads", trend.input_specs)"""),
    ("markdown", """## A 5-minute entry with a 1-hour filter
`trend_filter` trades an EMA cross on 5-minute bars only while the last closed hour is
above the hour `hours` before it. Against the same cross without the filter:"""),
    ("code", """filtered = backtest("trend_filter", candles, {"fast": 10, "slow": 50, "hours": 4}, fee_bps=10)
plain = backtest("ema_cross", candles, {"fast": 10, "slow": 50}, fee_bps=10)
for name, result in (("with the 1h filter", filtered), ("EMA cross alone", plain)):
    m = result.metrics
    print(f"{name:20s} return {m['total_return']:+.2%}  trades {m['trades']:4.0f}  "
          f"max drawdown {m['max_drawdown']:.2%}")"""),
    ("plot", """ax = filtered.equity.plot(label="with the 1h filter", figsize=(9, 3))
plain.equity.plot(ax=ax, label="EMA cross alone")
ax.set_title("trend_filter against ema_cross, 10 bps fees"); ax.legend(); ax.figure.tight_layout()
plt.show()"""),
    ("markdown", """## Confidence: momentum sized to a volatility target
`vol_target_momentum` returns `(exposure, confidence)`: its confidence is the target
volatility over the recent one, capped at 1. A model sizes by it only when asked
(`size_by_confidence=True`, here in steps of 0.25 so it does not rebalance every bar)."""),
    ("code", """params = {"lookback": 96, "vol_window": 288, "target_bps": 20}
flat = backtest("vol_target_momentum", candles, params, fee_bps=10)
sized = backtest("vol_target_momentum", candles, params, fee_bps=10,
                 size_by_confidence=True, confidence_step=0.25)
print("confidence: mean", round(sized.confidence.mean(), 3), " share of bars below 1:",
      round(float((sized.confidence < 1).mean()), 3))
for name, result in (("all-in", flat), ("sized by confidence", sized)):
    m = result.metrics
    print(f"{name:20s} return {m['total_return']:+.2%}  volatility {m['volatility']:.3f}  "
          f"max drawdown {m['max_drawdown']:.2%}")"""),
    ("plot", """fig, ax = plt.subplots(figsize=(9, 3))
sized.acted.plot(ax=ax, label="exposure acted on", drawstyle="steps-post")
sized.confidence.plot(ax=ax, label="confidence", alpha=0.6)
ax.set_title("vol_target_momentum: the confidence sizes the position"); ax.legend()
fig.tight_layout()
plt.show()"""),
    ("markdown", """## A two-symbol spread
`pair_spread` trades ETH/BTC on the z-score of its log price ratio to LTC/BTC, which
it reads as an extra input (here from the bundled LTC/BTC sample, found by its venue and
timeframe). A small sweep of its grid:"""),
    ("code", """grid = {"window": [48, 96, 288], "entry": [1.5, 2.0], "exit": [0.0, 0.5], "short": [0, 1]}
spread = sweep("pair_spread", candles, grid, fee_bps=10)
print(f"{len(spread.table)} combinations")
spread.best("sharpe", 5)[["window", "entry", "exit", "short", "sharpe", "total_return", "trades"]]"""),
    ("markdown", """## News sentiment
`mmats/data/sample/sentiment/ETH_BTC.jsonl` holds synthetic records (see its README): a
record counts at the closes after its timestamp, up to its horizon. The rule lowers the
exposure when sentiment points against the position (`weight`) and caps it when the
opposition is strong (`cap_above`, `cap`); it never opens or flips a position."""),
    ("code", """from pathlib import Path

import mmats
from mmats.data.sentiment import read_sentiment

sample = Path(mmats.__file__).parent / "data" / "sample" / "sentiment" / "ETH_BTC.jsonl"
records = read_sentiment(sample)
print(len(records), "records,", len(records.refused), "refused")
rule = {"weight": 1.0, "cap_above": 0.5, "cap": 0.25}
news = backtest("ema_cross", candles, {"fast": 10, "slow": 50}, fee_bps=10,
                sentiment=records, sentiment_rule=rule)
lowered = (news.acted < news.signal).sum()
print(f"bars whose exposure sentiment lowered: {lowered} of {len(news.acted)}")
for name, result in (("with sentiment", news), ("without", plain)):
    m = result.metrics
    print(f"{name:15s} return {m['total_return']:+.2%}  max drawdown {m['max_drawdown']:.2%}")"""),
    ("plot", """ax = news.equity.plot(label="with the sentiment rule", figsize=(9, 3))
plain.equity.plot(ax=ax, label="without")
ax.set_title("ema_cross 10/50 with synthetic sentiment"); ax.legend(); ax.figure.tight_layout()
plt.show()"""),
]


def build(cells, path):
    """Write ``cells`` ((kind, source) pairs) to the notebook at ``path``.

    Cell ids follow the cell's position, so rebuilding an unchanged notebook changes nothing.
    """
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    for index, (kind, source) in enumerate(cells):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(source, id=f"cell-{index}")
        else:
            cell = nbformat.v4.new_code_cell(source, id=f"cell-{index}")
        if kind == "plot":
            cell.metadata["tags"] = ["plot"]
        notebook.cells.append(cell)
    nbformat.write(notebook, path)


if __name__ == "__main__":
    build(QUICKSTART, HERE / "quickstart.ipynb")
    build(ROBUSTNESS, HERE / "robustness.ipynb")
    build(STRATEGIES, HERE / "strategies.ipynb")
