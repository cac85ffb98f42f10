import logging
from pathlib import Path

import pytest

from pipeline.shared_data import shared_data_dir

logging.getLogger("trafilatura").setLevel(logging.CRITICAL)


@pytest.fixture(scope="session")
def data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def sample_warcs(data) -> list[str]:
    return sorted(str(p) for p in (data / "warc" / "sample-crawl").glob("*.warc.gz"))
