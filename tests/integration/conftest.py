import os
from collections.abc import Iterator

import pytest
import requests
from google.cloud import firestore

from tally_dev import emulator
from tally_dev import webhook as webhook_receiver


def pytest_configure(config: pytest.Config) -> None:
    """Give each pytest-xdist worker (gw0, gw1, ...) a suite of its own: every test wipes its suite."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        emulator.use_suite(int(worker.removeprefix("gw")))


@pytest.fixture(scope="session", autouse=True)
def _warm_functions() -> Iterator[None]:
    """Start every HTTPS function's first worker while the first tests run."""
    warming = emulator.warm_functions()
    yield
    warming.join(timeout=60)


@pytest.fixture(autouse=True)
def _clean_emulators() -> Iterator[None]:
    """Start every test from an empty database and no Auth users; let its triggers finish."""
    emulator.wipe()
    yield
    emulator.wait_for_finalizations()


@pytest.fixture
def this_month() -> str:
    """The UTC month the test runs in, taken before it acts (away from a month's last minutes)."""
    return emulator.settled_month()


@pytest.fixture
def db() -> firestore.Client:
    client: firestore.Client = emulator.db()
    return client


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="session")
def _receiver() -> Iterator[webhook_receiver.Receiver]:
    """The alerts webhook receiver, where scripts/with-emulators told the functions to deliver."""
    receiver = webhook_receiver.from_environment()
    yield receiver
    receiver.close()


@pytest.fixture
def webhook(_receiver: webhook_receiver.Receiver) -> webhook_receiver.Receiver:
    """The receiver, with no deliveries and no scripted failures yet."""
    _receiver.clear()
    return _receiver
