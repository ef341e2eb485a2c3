"""Tally's Cloud Functions: thin entry points that parse, call a service and map errors."""

from __future__ import annotations

from typing import Any

from firebase_functions import https_fn, logger, options
from flask import Request, Response

import adapters
from tally.models import parse_record_request
from tally.recording import record_steps as record_steps_service
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
