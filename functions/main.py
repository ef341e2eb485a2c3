"""Tally's Cloud Functions: thin entry points that parse, call a service and map errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from firebase_functions import firestore_fn, https_fn, logger, options, scheduler_fn
from firebase_functions.core import Change
from flask import Request, Response
from google.cloud.firestore import DocumentReference, DocumentSnapshot

from adapters import auth, firebase_app, webhooks, wiring
from entrypoints import callables, edge
from tally.documents.sessions import is_completion
from tally.requests import parse_record_request, parse_release_request, parse_reserve_request
from tally.services import alerts, plan_claims, reservations, sweep
from tally.services.recording import record_steps as record_steps_service
from tally.services.sessions import finalize_session as finalize_session_service
from tally.timeutil import utc_now
from tally.values import Caller

options.set_global_options(region="us-central1")

# The SDK verifies callable ID tokens with the default Admin app before any init hook runs,
# so it must exist at import. This makes no network call; the Firestore client stays lazy.
firebase_app.admin_app()


def _claimed(caller: Caller | None) -> plan_claims.ClaimedPlan:
    """Return the plan a user's TALLY_PLAN_CLAIM names: the caller's token, else Firebase Auth (cached)."""
    if caller is None:
        return plan_claims.no_claim
    return plan_claims.resolver(caller=caller, settings=wiring.settings(), directory=wiring.directory())


def _record_steps(req: Request) -> dict[str, Any]:
    edge.require_post(req)
    auth.verify_app_check(req.headers.get(auth.APP_CHECK_HEADER))
    caller = auth.verify_bearer(req.headers.get("Authorization"))
    body = edge.read_json(req)
    now = utc_now()
    request = parse_record_request(body, now=now)
    outcome = record_steps_service(
        store=wiring.store(),
        caller=caller,
        request=request,
        settings=wiring.settings(),
        now=now,
        claimed_plan=_claimed(caller),
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
    return edge.http_endpoint("record_steps", _record_steps)(req)


def _reserve_spend(req: Request) -> dict[str, Any]:
    edge.require_post(req)
    auth.verify_app_check(req.headers.get(auth.APP_CHECK_HEADER))
    caller = auth.verify_bearer(req.headers.get("Authorization"))
    request = parse_reserve_request(edge.read_json(req))
    answer = reservations.reserve_spend(
        store=wiring.store(),
        caller=caller,
        request=request,
        settings=wiring.settings(),
        now=utc_now(),
        claimed_plan=_claimed(caller),
    )
    logger.info(
        "reserve_spend", uid=caller.uid, reservation=request.reservation_id, allowed=answer["allowed"]
    )
    return answer


@https_fn.on_request(cors=options.CorsOptions(cors_origins="*", cors_methods=["post"]))
def reserve_spend(req: Request) -> Response:
    """Hold an estimated cost against a user's limits before a paid call (HTTPS POST, JSON)."""
    return edge.http_endpoint("reserve_spend", _reserve_spend)(req)


def _release_spend(req: Request) -> dict[str, Any]:
    edge.require_post(req)
    auth.verify_app_check(req.headers.get(auth.APP_CHECK_HEADER))
    caller = auth.verify_bearer(req.headers.get("Authorization"))
    user_id, reservation_id = parse_release_request(edge.read_json(req))
    return reservations.release_spend(
        store=wiring.store(),
        caller=caller,
        user_id=user_id,
        reservation_id=reservation_id,
        settings=wiring.settings(),
        now=utc_now(),
    )


@https_fn.on_request(cors=options.CorsOptions(cors_origins="*", cors_methods=["post"]))
def release_spend(req: Request) -> Response:
    """Release a hold without recording anything (HTTPS POST, JSON; idempotent)."""
    return edge.http_endpoint("release_spend", _release_spend)(req)


Service = Callable[[Caller | None, Any], Any]


def _callable(name: str, service: Service) -> Callable[[https_fn.CallableRequest[Any]], Any]:
    """Build a callable entry point: the caller from the verified token, data to the service."""

    def handle(req: https_fn.CallableRequest[Any]) -> Any:
        auth.require_callable_app_check(req.app)
        return service(auth.caller_from_auth(req.auth), req.data)

    return edge.callable_endpoint(name, handle)


_usage_analytics = _callable(
    "usage_analytics",
    lambda caller, data: callables.usage_analytics(
        store=wiring.store(),
        directory=wiring.directory(),
        caller=caller,
        data=data,
        settings=wiring.settings(),
        now=utc_now(),
    ),
)
_my_usage = _callable(
    "my_usage",
    lambda caller, data: callables.my_usage(
        store=wiring.store(),
        caller=caller,
        data=data,
        settings=wiring.settings(),
        now=utc_now(),
        claimed_plan=_claimed(caller),
    ),
)
_set_limits = _callable(
    "set_limits",
    lambda caller, data: callables.set_limits(
        store=wiring.store(),
        caller=caller,
        data=data,
        settings=wiring.settings(),
        now=utc_now(),
        claimed_plan=_claimed(caller),
    ),
)
_set_plan = _callable(
    "set_plan",
    lambda caller, data: callables.set_plan(
        store=wiring.store(), caller=caller, data=data, settings=wiring.settings(), now=utc_now()
    ),
)
_set_team = _callable(
    "set_team",
    lambda caller, data: callables.set_team(
        store=wiring.store(), caller=caller, data=data, settings=wiring.settings(), now=utc_now()
    ),
)
_list_plans = _callable(
    "list_plans",
    lambda caller, data: callables.list_plans(
        store=wiring.store(), caller=caller, data=data, settings=wiring.settings()
    ),
)


_set_price = _callable(
    "set_price",
    lambda caller, data: callables.set_price(
        store=wiring.store(), caller=caller, data=data, settings=wiring.settings(), now=utc_now()
    ),
)
_export_usage = _callable(
    "export_usage",
    lambda caller, data: callables.export_usage(
        store=wiring.store(), directory=wiring.directory(), caller=caller, data=data, now=utc_now()
    ),
)
_list_prices = _callable(
    "list_prices",
    lambda caller, data: callables.list_prices(
        store=wiring.store(), caller=caller, data=data, settings=wiring.settings(), now=utc_now()
    ),
)


@https_fn.on_call()
def usage_analytics(req: https_fn.CallableRequest[Any]) -> Any:
    """Return the platform's usage for a month (admin)."""
    return _usage_analytics(req)


@https_fn.on_call()
def my_usage(req: https_fn.CallableRequest[Any]) -> Any:
    """Return the caller's own usage for a month (an admin may name any user)."""
    return _my_usage(req)


@https_fn.on_call()
def set_limits(req: https_fn.CallableRequest[Any]) -> Any:
    """Set a user's plan and own limits (admin)."""
    return _set_limits(req)


@https_fn.on_call()
def set_plan(req: https_fn.CallableRequest[Any]) -> Any:
    """Store a plan: a named limits object (admin)."""
    return _set_plan(req)


@https_fn.on_call()
def set_team(req: https_fn.CallableRequest[Any]) -> Any:
    """Store a team's limits (admin)."""
    return _set_team(req)


@https_fn.on_call()
def list_plans(req: https_fn.CallableRequest[Any]) -> Any:
    """List the plans, `default` first (admin)."""
    return _list_plans(req)


@https_fn.on_call()
def set_price(req: https_fn.CallableRequest[Any]) -> Any:
    """Set a price for a provider and model from a date (admin)."""
    return _set_price(req)


@https_fn.on_call()
def list_prices(req: https_fn.CallableRequest[Any]) -> Any:
    """List the prices admins set, newest first (admin)."""
    return _list_prices(req)


@https_fn.on_call()
def export_usage(req: https_fn.CallableRequest[Any]) -> Any:
    """Return one page of every user's totals for a month (admin)."""
    return _export_usage(req)


@edge.with_retry
@firestore_fn.on_document_written(document="SessionUsage/{userId}/sessions/{sessionId}")
def finalize_session(event: firestore_fn.Event[Change[DocumentSnapshot[DocumentReference] | None]]) -> None:
    """Summarize and count a session once its status becomes completed (retried if it fails)."""
    after = event.data.after
    data = (after.to_dict() or {}) if after is not None and after.exists else {}
    if not is_completion(data):
        return  # not a completion (a new step, a deletion, the finalizer's own write, or not Tally's)
    user_id, session_id = event.params["userId"], event.params["sessionId"]
    wiring.settings().faults.check("finalize", user_id)
    outcome = finalize_session_service(
        store=wiring.store(), user_id=user_id, session_id=session_id, now=utc_now(), sleep=time.sleep
    )
    logger.info("finalize_session", uid=user_id, session=session_id, outcome=outcome.value, event=event.id)


@edge.with_retry
@firestore_fn.on_document_created(document="TallyAlerts/{alertId}", timeout_sec=300)
def deliver_alert(event: firestore_fn.Event[DocumentSnapshot[DocumentReference] | None]) -> None:
    """POST a new alert to the webhook, signed, retried with backoff (the sweep retries later ones)."""
    alert_id = event.params["alertId"]
    result = alerts.deliver(
        store=wiring.store(),
        alert_id=alert_id,
        settings=wiring.settings(),
        post=webhooks.post_json,
        sleep=time.sleep,
        now=utc_now,
    )
    logger.info(
        "deliver_alert",
        alert=alert_id,
        delivered=result.delivered,
        attempts=result.attempts,
        skipped=result.skipped,
    )


@scheduler_fn.on_schedule(schedule="every 15 minutes", timeout_sec=540)
def sweep_sessions(event: scheduler_fn.ScheduledEvent) -> None:
    """Complete idle sessions, finalize unfinalized ones, end expired holds, raise late alerts, redeliver."""
    deadline = time.monotonic() + 540
    result = sweep.run(
        store=wiring.store(),
        settings=wiring.settings(),
        now=utc_now(),
        idle_minutes=wiring.settings().session_idle_minutes,
        post=webhooks.post_json,
        clock=utc_now,
        seconds_left=lambda: deadline - time.monotonic(),
    )
    logger.info(result.summary(), finished=result.finished)
