"""Write the synthetic sentiment sample ``mmats/data/sample/sentiment/ETH_BTC.jsonl``.

The records are **synthetic**: no news source is behind them. Every 30 to 150 minutes
(drawn at random) a made-up "source" judges ETH/BTC from the return of the hour *before*
its timestamp, plus noise: a stand-in with the shape and timing of a real feed, to try
the connector and the sentiment rule on the bundled candles. A few records are
deliberately stamped exactly at a bar close (not known at that close). Seeded, so the
file is the same on every run::

    python research/make_sentiment_sample.py
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CANDLES = ROOT / "mmats" / "data" / "sample" / "bittrex" / "ETH_BTC_5m.parquet"
OUT = ROOT / "mmats" / "data" / "sample" / "sentiment" / "ETH_BTC.jsonl"
SOURCES = ("wire", "desk", "forum")
HEADLINES = {1: "ETH gains against BTC", -1: "ETH slips against BTC"}


def records(seed: int = 2018) -> list[dict]:
    rng = np.random.default_rng(seed)
    candles = pd.read_parquet(CANDLES)
    close = candles.set_index(candles["ts"] + pd.Timedelta(minutes=5))["close"]  # by close
    when = close.index[0] + pd.Timedelta(hours=2)
    out = []
    while when < close.index[-1]:
        past = close[:when]  # bars closed by the timestamp
        hour = past.iloc[-1] / past.iloc[-13] - 1.0
        sentiment = float(np.clip(np.tanh(hour * 150.0) + rng.normal(0.0, 0.3), -1, 1))
        on_close = rng.random() < 0.05
        stamp = when.floor("5min") if on_close else when
        record = {"timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), "symbol": "ETH/BTC",
                  "sentiment": round(sentiment, 3),
                  "impact_horizon": str(rng.choice(["5m", "1h", "1h"])),
                  "source": str(rng.choice(SOURCES))}
        if abs(sentiment) > 0.7:
            record["headline"] = f"synthetic: {HEADLINES[int(np.sign(sentiment))]}"
        out.append(record)
        when += pd.Timedelta(seconds=int(rng.integers(30, 151)) * 60 + int(rng.integers(0, 60)))
    return out


def main(out: Path = OUT) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, separators=(", ", ": ")) for r in records()]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} records to {out}")


if __name__ == "__main__":
    main()
