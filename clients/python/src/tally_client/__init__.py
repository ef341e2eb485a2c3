"""Tally client: record the cost of paid API and AI calls per user, from Python.

from tally_client import Tally, wrap_openai

tally = Tally(functions_url, id_token=get_id_token)
client = wrap_openai(OpenAI(), tally=tally, feature="chat")
client.chat.completions.create(model="gpt-4o", messages=[...])  # recorded
"""

from tally_client.admin import recorder_token
from tally_client.client import (
    OnRefused,
    Refusal,
    Reservation,
    Session,
    Tally,
    current_reservation,
    current_session,
)
from tally_client.errors import (
    BudgetExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QueueFull,
    TallyError,
    Unauthenticated,
    Unavailable,
)
from tally_client.wrappers import wrap_anthropic, wrap_openai

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "OnRefused",
    "PermissionDenied",
    "QueueFull",
    "Refusal",
    "Reservation",
    "Session",
    "Tally",
    "TallyError",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "current_reservation",
    "current_session",
    "recorder_token",
    "wrap_anthropic",
    "wrap_openai",
]
