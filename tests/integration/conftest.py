from collections.abc import Iterator

import pytest
import requests
from google.cloud import firestore

from tally_dev import emulator


@pytest.fixture(autouse=True)
def _clean_emulators() -> Iterator[None]:
    """Start every test from an empty database and no Auth users; let its triggers finish."""
    emulator.wipe()
    yield
    emulator.wait_for_finalizations()


@pytest.fixture
def db() -> firestore.Client:
    client: firestore.Client = emulator.db()
    return client


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
