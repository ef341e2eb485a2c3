"""The earlier systems' records: their ids, steps, CSV rows and sessions, read as Tally values."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tally import layout
from tally.documents import sessions as session_doc
from tally.errors import InvalidArgument
from tally.fields import is_user_id
from tally.requests import parse_step
from tally.values import Document, Step, UsageType

LEGACY_KINDS = {"ApiUsage": UsageType.API, "AIUsage": UsageType.AI}


CSV_REQUIRED = ("id", "user_id", "timestamp", "service", "cost")


CSV_OPTIONAL = ("endpoint", "input_tokens", "output_tokens", "usage_type", "billable")


_ID_RE = re.compile(r"[A-Za-z0-9_\-.]{1,128}")


_RESERVED_RE = re.compile(r"__.*__")


_TRUE = {"true", "t", "1", "yes", "y"}


_FALSE = {"false", "f", "0", "no", "n", ""}


def legacy_operation_id(raw: object) -> str:
    """Return the Tally operationId of a legacy id (stable: the same legacy id, the same step)."""
    candidate = f"legacy-{raw}"
    if _ID_RE.fullmatch(candidate):
        return candidate
    return f"legacy-{layout.digest(str(raw))[:40]}"


def own_operation_id(raw: object) -> str | None:
    """Return the id an app gave a legacy call, if Tally could have recorded the call under it (else None)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    text = str(raw)
    if not _ID_RE.fullmatch(text) or text in {".", ".."} or _RESERVED_RE.fullmatch(text):
        return None
    return text


def _plain(value: object) -> object:
    """Return a legacy value in the form the edge validation reads (Timestamps as ISO strings)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed.astimezone(UTC) if parsed.tzinfo else None
    return None


def legacy_step(
    raw: object, *, operation: object, field: str, now: datetime, usage_type: str | None = None
) -> Step:
    """Validate one legacy step as `record_steps` would (any age); raise InvalidArgument naming the field."""
    if not isinstance(raw, Mapping):
        raise InvalidArgument.field(field, "must be an object")
    data = {
        "operationId": legacy_operation_id(raw.get("operationId") or operation),
        "usageType": raw.get("usageType") or usage_type,
        "feature": raw.get("feature"),
        "provider": raw.get("provider"),
        "cost": raw.get("cost"),
        "isBillableRun": raw.get("isBillableRun", False),
        "timestamp": _plain(raw.get("timestamp")),
        "metadata": raw.get("metadata") or {},
    }
    return parse_step({k: v for k, v in data.items() if v is not None}, now=now, field=field, any_age=True)


def csv_step(row: Mapping[str, str], *, line: int, now: datetime) -> tuple[str, Step]:
    """Return the user and the step of one `api_usage_log` row; raise InvalidArgument naming the column."""
    field = f"line {line}"
    tokens = {name: (row.get(f"{name}_tokens") or "").strip() for name in ("input", "output")}
    for name, text in tokens.items():
        if text and not text.isdigit():
            raise InvalidArgument.field(f"{field}.{name}_tokens", "must be a whole number")
    billable = (row.get("billable") or "").strip().lower()
    if billable not in _TRUE | _FALSE:
        raise InvalidArgument.field(f"{field}.billable", "must be true or false")
    when = (row.get("timestamp") or "").strip()
    try:  # Postgres exports `2025-10-14 10:04:09.794+00`; a time without a zone is UTC
        instant = datetime.fromisoformat(when)
    except ValueError:
        raise InvalidArgument.field(f"{field}.timestamp", "must be an ISO-8601 date and time") from None
    instant = instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
    usage_type = (row.get("usage_type") or "").strip() or ("AI" if any(tokens.values()) else "API")
    service = (row.get("service") or "").strip()
    metadata: dict[str, Any] = {"legacyId": row.get("id")}
    metadata.update({f"{name}Tokens": int(text) for name, text in tokens.items() if text})
    data = {
        "operationId": legacy_operation_id(f"pg-{(row.get('id') or '').strip()}"),
        "usageType": usage_type,
        "feature": (row.get("endpoint") or "").strip() or service,
        "provider": service,
        "cost": (row.get("cost") or "").strip(),
        "isBillableRun": billable in _TRUE,
        "timestamp": instant.isoformat(),
        "metadata": metadata,
    }
    user = (row.get("user_id") or "").strip()
    if not is_user_id(user):
        raise InvalidArgument.field(
            f"{field}.user_id", "must be a user id (1-128 characters, no / or spaces)"
        )
    return user, parse_step(data, now=now, field=field, any_age=True)


def check_csv_header(columns: Sequence[str] | None) -> None:
    """Refuse a CSV without the required columns (naming them)."""
    missing = [name for name in CSV_REQUIRED if name not in (columns or ())]
    if missing:
        raise InvalidArgument.field("csv", f"missing required column(s): {', '.join(missing)}")


def legacy_parts(path: str, leaf: str) -> tuple[UsageType, str, str] | None:
    parts = path.split("/")
    if len(parts) == 4 and parts[0] in LEGACY_KINDS and parts[2] == leaf:
        return LEGACY_KINDS[parts[0]], parts[1], parts[3]
    return None


def is_legacy_session(doc: Document) -> bool:
    """Return whether a document at a session path is an earlier system's (with its steps inside)."""
    return (
        layout.session_ids(doc.path) is not None
        and not session_doc.is_tally_session(doc.fields)
        and isinstance(doc.fields.get("steps"), list)
    )
