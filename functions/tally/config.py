"""Settings read from the environment (functions/.env when deployed), validated once per call site."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tally.money import usd_to_nanos
from tally.names import NameLimits


class ConfigError(ValueError):
    """An environment setting with an unusable value."""


@dataclass(frozen=True)
class Settings:
    """Tally's tunables."""

    default_monthly_cost_limit_nanos: int = 5 * 10**9
    default_monthly_free_runs: int = 100
    aggregate_shards: int = 8
    session_idle_minutes: int = 30
    max_names: int = 500
    max_new_names_per_user: int = 20

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
