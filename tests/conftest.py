"""Shared fixtures: the bundled sample candles and a factory for throwaway strategies."""

import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mmats" / "data" / "sample"
SAMPLES = {
    "crypto_5m": SAMPLE / "bittrex" / "ETH_BTC_5m.parquet",
    "forex_1h": SAMPLE / "fx" / "EUR_USD_1h.parquet",
    "stocks_1d": SAMPLE / "nasdaq" / "GOOG_1d.parquet",
}


@pytest.fixture(autouse=True, scope="session")
def secrets_store(tmp_path_factory):
    """Every test keeps its secrets (the journal signing key among them) in a throwaway
    encrypted file, never in the keyring of the machine running the tests; scripts run
    as subprocesses inherit it. Session-wide, so module fixtures see it too; a test may
    still change these variables with its own ``monkeypatch``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMATS_SECRETS_FILE",
                     str(tmp_path_factory.getbasetemp() / "secrets" / "secrets.enc"))
        patch.setenv("MMATS_SECRETS_PASSPHRASE", "the tests' own passphrase")
        yield


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def eth_btc() -> pd.DataFrame:
    return pd.read_parquet(SAMPLES["crypto_5m"])


@pytest.fixture(params=sorted(SAMPLES), scope="session")
def sample_candles(request) -> pd.DataFrame:
    return pd.read_parquet(SAMPLES[request.param])


@pytest.fixture
def write_strategy(tmp_path):
    """Write a strategy module into tmp_path and return its path."""

    def write(name: str, source: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return path

    return write
