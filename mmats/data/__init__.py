"""Candles: the schema, the Parquet/DuckDB store, loading, resampling and quality checks.

>>> from mmats.data import load, resample, quality_report
>>> df = load("bittrex:ETH/BTC:5m")
>>> hourly = resample(df, "1h")
>>> quality_report(df).ok
True
"""

from mmats.data.calendar import (
    CALENDARS,
    calendar_for_venue,
    infer_calendar,
    infer_timeframe,
    periods_per_year,
    timeframe_name,
    timeframe_ns,
)
from mmats.data.io import load, read_candle_file
from mmats.data.quality import (
    DataQuality,
    GapEvent,
    Outlier,
    QualityReport,
    data_quality,
    data_quality_warnings,
    quality_report,
)
from mmats.data.resample import resample
from mmats.data.schema import COLUMNS, Reject, validate_candles
from mmats.data.store import AppendReport, CandleStore, Conflict, symbol_key

__all__ = [
    "CALENDARS", "COLUMNS", "AppendReport", "CandleStore", "Conflict", "DataQuality",
    "GapEvent", "Outlier", "QualityReport", "Reject", "calendar_for_venue", "data_quality",
    "data_quality_warnings", "infer_calendar", "infer_timeframe", "load", "periods_per_year", "quality_report", "read_candle_file", "resample",
    "symbol_key", "timeframe_name", "timeframe_ns", "validate_candles",
]
