"""Tally's Cloud Functions: thin entry points that parse, call a service and map errors."""

from __future__ import annotations

import time
from typing import Any

from firebase_functions import firestore_fn, https_fn, logger, options, scheduler_fn
from firebase_functions.core import Change
from flask import Request, Response
from google.cloud.firestore import DocumentReference, DocumentSnapshot

import adapters
from tally.models import parse_record_request
from tally.recording import record_steps as record_steps_service
from tally.sessions import finalize_session as finalize_session_service
from tally.sessions import sweep_idle_sessions
from tally.timeutil import utc_now

options.set_global_options(region="us-central1")


def _record_steps(req: Request) -> dict[str, Any]:
    adapters.require_post(req)
    caller = adapters.verify_bearer(req.headers.get("Authorization"))
    body = adapters.read_json(req)
    now = utc_now()
    request = parse_record_request(body, now=now)
    outcome = record_steps_service(
        store=adapters.store(), caller=caller, request=request, settings=adapters.settings(), now=now
    )
    logger.info(
        "record_steps",
        uid=caller.uid,
        recorded=outcome.body["recorded"],
        duplicates=outcome.body["duplicates"],
        attempts=outcome.attempts,
    )
    return outcome.body


@https_fn.on_request(cors=options.CorsOptions(cors_origins="*", cors_methods=["post"]))
def record_steps(req: Request) -> Response:
    """Record usage steps for a user (HTTPS POST, JSON)."""
    return adapters.http_endpoint("record_steps", _record_steps)(req)


@firestore_fn.on_document_written(document="SessionUsage/{userId}/sessions/{sessionId}")
def finalize_session(event: firestore_fn.Event[Change[DocumentSnapshot[DocumentReference] | None]]) -> None:
    """Summarize and count a session once its status becomes completed."""
    after = event.data.after
    data = (after.to_dict() or {}) if after is not None and after.exists else {}
    if data.get("status") != "completed" or data.get("finalizedAt") is not None:
        return  # not a completion (a new step, a deletion, or the finalizer's own write)
    user_id, session_id = event.params["userId"], event.params["sessionId"]
    outcome = finalize_session_service(
        store=adapters.store(), user_id=user_id, session_id=session_id, now=utc_now(), sleep=time.sleep
    )
    logger.info("finalize_session", uid=user_id, session=session_id, outcome=outcome.value, event=event.id)


@scheduler_fn.on_schedule(schedule="every 15 minutes", timeout_sec=540)
def sweep_sessions(event: scheduler_fn.ScheduledEvent) -> None:
    """Complete sessions idle longer than TALLY_SESSION_IDLE_MINUTES (the trigger finalizes them)."""
    deadline = time.monotonic() + 540
    result = sweep_idle_sessions(
        store=adapters.store(),
        now=utc_now(),
        idle_minutes=adapters.settings().session_idle_minutes,
        seconds_left=lambda: deadline - time.monotonic(),
    )
    logger.info(
        "sweep_sessions",
        completed=result.completed,
        examined=result.examined,
        pages=result.pages,
        finished=result.finished,
    )
