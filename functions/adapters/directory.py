"""The user directory: emails and custom claims from Firebase Auth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import firebase_admin
import firebase_admin.exceptions
import google.auth.exceptions
from firebase_admin import auth
from firebase_functions import logger

from adapters.firebase_app import admin_app


class AuthDirectory:
    """Emails (100 a lookup) and custom claims of users from Firebase Auth."""

    def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        """Return the email of each user Auth knows (unknown users and failures are left out)."""
        found: dict[str, str] = {}
        for start in range(0, len(user_ids), 100):
            batch = [auth.UidIdentifier(uid) for uid in user_ids[start : start + 100]]
            try:
                result = auth.get_users(batch, app=admin_app())
            except (auth.UserNotFoundError, ValueError, firebase_admin.exceptions.FirebaseError) as exc:
                logger.warn("email lookup failed", error=repr(exc))
                continue
            found.update({user.uid: user.email for user in result.users if user.email})
        return found

    def claims_of(self, user_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """Return the custom claims of users (100 a lookup; a user Auth does not know has none).

        The users of a lookup that failed are left out (logged): their claims are not known.
        """
        found: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(user_ids), 100):
            batch = user_ids[start : start + 100]
            try:
                result = auth.get_users([auth.UidIdentifier(uid) for uid in batch], app=admin_app())
            except (
                ValueError,
                firebase_admin.exceptions.FirebaseError,
                google.auth.exceptions.GoogleAuthError,
            ) as exc:
                logger.warn("claims lookup failed", users=len(batch), error=repr(exc))
                continue
            found.update({uid: {} for uid in batch})  # not found: no claim, as the functions read it
            found.update({user.uid: user.custom_claims or {} for user in result.users})
        return found

    def custom_claims(self, user_id: str) -> Mapping[str, Any]:
        """Return a user's custom claims (none for an unknown user; a failure is logged and gives none)."""
        try:
            return auth.get_user(user_id, app=admin_app()).custom_claims or {}
        except (auth.UserNotFoundError, ValueError, firebase_admin.exceptions.FirebaseError) as exc:
            logger.warn("claims lookup failed", error=repr(exc))
            return {}
