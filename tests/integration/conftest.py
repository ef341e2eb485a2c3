from collections.abc import Iterator

import pytest
import requests
from google.cloud import firestore

import support


@pytest.fixture(autouse=True)
def _clean_emulators() -> Iterator[None]:
    """Start every test from an empty database and no Auth users; let its triggers finish."""
    support.wipe()
    yield
    support.wait_for_finalizations()


@pytest.fixture
def db() -> firestore.Client:
    client: firestore.Client = support.db()
    return client


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
