"""The limits objects of `set_limits` and `set_plan` (plans, a user's overrides)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from tally.fields import EdgeModel, Identifier, Name, UserId, _cost_limit, _free_runs
from tally.limits import MAX_FEATURES, FeatureLimits, LimitSet

CostLimit = Annotated[int, BeforeValidator(_cost_limit)]
Runs = Annotated[int, BeforeValidator(_free_runs)]


class FeatureLimitsIn(EdgeModel):
    """One feature's limits in a limits object (runs: every step of the feature)."""

    monthly_cost_nanos: CostLimit | None = Field(default=None, alias="monthlyCostLimit")
    daily_cost_nanos: CostLimit | None = Field(default=None, alias="dailyCostLimit")
    monthly_runs: Runs | None = Field(default=None, alias="monthlyRuns")
    daily_runs: Runs | None = Field(default=None, alias="dailyRuns")

    def given(self) -> dict[str, int | None]:
        """Return the fields given, null ones included, by attribute."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class LimitsIn(EdgeModel):
    """A limits object: every field optional, USD as in `cost`, at most 50 features."""

    monthly_cost_nanos: CostLimit | None = Field(default=None, alias="monthlyCostLimit")
    monthly_free_runs: Runs | None = Field(default=None, alias="monthlyFreeRuns")
    daily_cost_nanos: CostLimit | None = Field(default=None, alias="dailyCostLimit")
    daily_free_runs: Runs | None = Field(default=None, alias="dailyFreeRuns")
    features: dict[Name, FeatureLimitsIn | None] | None = Field(default=None, max_length=MAX_FEATURES)

    def overrides(self) -> dict[str, int | None]:
        """Return the top-level fields given, null ones included, by attribute."""
        return {name: getattr(self, name) for name in self.model_fields_set if name != "features"}

    def limit_set(self) -> LimitSet:
        """Return the limits object given (null fields unset)."""
        return LimitSet(
            **{name: value for name, value in self.overrides().items() if name != "plan"},
            features={
                name: FeatureLimits(**own.given())
                for name, own in (self.features or {}).items()
                if own is not None
            },
        )


class SetLimitsIn(LimitsIn):
    """`set_limits` data: the user's plan and team and own overrides (null removes one)."""

    user_id: UserId = Field(alias="userId")
    plan: Name | None = None
    team_id: Identifier | None = Field(default=None, alias="teamId")

    def overrides(self) -> dict[str, int | None]:
        """Return the override fields given, null ones included, by attribute."""
        return {k: v for k, v in super().overrides().items() if k not in ("user_id", "plan", "team_id")}


class TeamLimitsIn(EdgeModel):
    """A team's limits: month and day, cost and billable runs (no features)."""

    monthly_cost_nanos: CostLimit | None = Field(default=None, alias="monthlyCostLimit")
    monthly_runs: Runs | None = Field(default=None, alias="monthlyFreeRuns")
    daily_cost_nanos: CostLimit | None = Field(default=None, alias="dailyCostLimit")
    daily_runs: Runs | None = Field(default=None, alias="dailyFreeRuns")


class SetTeamIn(EdgeModel):
    """`set_team` data: a team's id and its whole limits."""

    team_id: Identifier = Field(alias="teamId")
    limits: TeamLimitsIn


class SetPlanIn(EdgeModel):
    """`set_plan` data: a plan's name and its whole limits object."""

    plan: Name
    limits: LimitsIn


class ListPlansIn(EdgeModel):
    """`list_plans` data (none)."""
