"""The default Firebase Admin app of the instance."""

from __future__ import annotations

import functools

import firebase_admin


@functools.cache
def admin_app() -> firebase_admin.App:
    """Return the default Admin SDK app, initializing it on first use."""
    try:
        return firebase_admin.get_app()
    except ValueError:
        return firebase_admin.initialize_app()
