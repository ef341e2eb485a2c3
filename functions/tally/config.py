"""Settings read from the environment (functions/.env when deployed), validated once per call site."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from tally.money import usd_to_nanos
from tally.names import NameLimits


class ConfigError(ValueError):
    """An environment setting with an unusable value."""


class InjectedFault(RuntimeError):
    """A failure the test configuration asked for (never set in a real project)."""


@dataclass(frozen=True)
class Faults:
    """Failures to inject, for the emulator tests: stage -> user-id prefixes (TALLY_TEST_FAULTS).

    `TALLY_TEST_FAULTS=after-commit:fault-,finalize:fault-` makes the work after a
    recording commit, and the finalizer trigger, fail for users whose id starts with
    `fault-`. Only `functions/.env.demo-tally` (the emulator's project) sets it.
    """

    stages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Faults:
        """Read `stage:prefix,stage:prefix`."""
        stages: dict[str, tuple[str, ...]] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            stage, sep, prefix = item.partition(":")
            if not sep or not stage or not prefix:
                raise ValueError(f"TALLY_TEST_FAULTS: {item!r} is not stage:prefix")
            stages[stage] = (*stages.get(stage, ()), prefix)
        return cls(stages)

    def check(self, stage: str, key: str) -> None:
        """Raise InjectedFault if a failure is configured for this stage and key."""
        if any(key.startswith(prefix) for prefix in self.stages.get(stage, ())):
            raise InjectedFault(f"injected failure at {stage} for {key}")


@dataclass(frozen=True)
class Settings:
    """Tally's tunables."""

    default_monthly_cost_limit_nanos: int = 5 * 10**9
    default_monthly_free_runs: int = 100
    aggregate_shards: int = 8
    session_idle_minutes: int = 30
    max_names: int = 500
    max_new_names_per_user: int = 20
    faults: Faults = field(default_factory=Faults)
    platform_budget_nanos: int | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_backoff_seconds: float = 2.0  # the first retry's wait; each next one doubles
    webhook_attempts: int = 5  # tries per delivery before the sweep takes over
    plan_claim: str | None = None  # TALLY_PLAN_CLAIM: the custom claim naming a user's plan
    platform_budget_enforced: bool = False  # TALLY_PLATFORM_BUDGET_ENFORCED: the gate checks the budget too
    team_slices: int = 16  # TALLY_TEAM_SLICES: escrow slices of a new team (about 2 x its peak requests/s)

    @property
    def name_limits(self) -> NameLimits:
        """Return the bounds on feature and provider names."""
        return NameLimits(max_names=self.max_names, max_new_per_user=self.max_new_names_per_user)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read TALLY_* variables, falling back to the defaults."""
        env = os.environ if env is None else env
        defaults = cls()
        try:
            limit = env.get("TALLY_DEFAULT_MONTHLY_COST_LIMIT_USD")
            return cls(
                default_monthly_cost_limit_nanos=(
                    usd_to_nanos(limit) if limit else defaults.default_monthly_cost_limit_nanos
                ),
                default_monthly_free_runs=_int(
                    env, "TALLY_DEFAULT_MONTHLY_FREE_RUNS", defaults.default_monthly_free_runs, 0
                ),
                aggregate_shards=_int(env, "TALLY_AGGREGATE_SHARDS", defaults.aggregate_shards, 1),
                session_idle_minutes=_int(
                    env, "TALLY_SESSION_IDLE_MINUTES", defaults.session_idle_minutes, 1
                ),
                max_names=_int(env, "TALLY_MAX_NAMES", defaults.max_names, 1),
                max_new_names_per_user=_int(
                    env, "TALLY_MAX_NEW_NAMES_PER_USER", defaults.max_new_names_per_user, 0
                ),
                faults=Faults.parse(env.get("TALLY_TEST_FAULTS", "")),
                platform_budget_nanos=(
                    usd_to_nanos(budget, maximum=Decimal(10**12))
                    if (budget := env.get("TALLY_PLATFORM_MONTHLY_BUDGET_USD"))
                    else None
                ),
                webhook_url=env.get("TALLY_ALERT_WEBHOOK_URL") or None,
                webhook_secret=env.get("TALLY_ALERT_WEBHOOK_SECRET") or None,
                webhook_backoff_seconds=float(env.get("TALLY_ALERT_WEBHOOK_BACKOFF_SECONDS") or 2.0),
                webhook_attempts=_int(env, "TALLY_ALERT_WEBHOOK_ATTEMPTS", defaults.webhook_attempts, 1),
                plan_claim=env.get("TALLY_PLAN_CLAIM") or None,
                team_slices=_int(env, "TALLY_TEAM_SLICES", defaults.team_slices, 1),
                platform_budget_enforced=(env.get("TALLY_PLATFORM_BUDGET_ENFORCED") or "").lower() == "true",
            )
        except ValueError as exc:
            raise ConfigError(f"bad Tally setting: {exc}") from None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    value = int(raw)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}")
    return value


FUNCTIONS_DIR = Path(__file__).resolve().parents[1]


def deployed_environment(
    project: str | None, *, environ: Mapping[str, str] = os.environ, folder: Path = FUNCTIONS_DIR
) -> dict[str, str]:
    """Return the variables the deployed functions see: `.env`, `.env.<project>`, then `environ`'s.

    For the command line and the tests (the functions get these from the platform).
    """
    from dotenv import dotenv_values

    env: dict[str, str] = {}
    for name in (".env", f".env.{project}" if project else None):
        if name is not None and (folder / name).is_file():
            env.update(
                {key: value for key, value in dotenv_values(folder / name).items() if value is not None}
            )
    env.update(environ)
    return env
