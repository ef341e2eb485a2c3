"""The I/O objects of a deployed instance, made once each: the Admin app, Firestore, settings, directory."""

from __future__ import annotations

import functools
import os

from google.cloud import firestore

from adapters.directory import AuthDirectory
from adapters.firestore import FirestoreStore
from tally.config import Settings


@functools.cache
def firestore_client() -> firestore.Client:
    """Create the Firestore client on first use (never at import time)."""
    project = os.environ.get("GCLOUD_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    return firestore.Client(project=project)


@functools.cache
def settings() -> Settings:
    """Read Tally's settings from the environment once per instance."""
    return Settings.from_env()


@functools.cache
def store() -> FirestoreStore:
    """Return the Firestore store with the configured shard count (one per instance: caches key on it)."""
    return FirestoreStore(firestore_client(), shards=settings().aggregate_shards)


def directory() -> AuthDirectory:
    """Return the user directory (Firebase Auth)."""
    return AuthDirectory()
