"""Forecasts: a month's projected cost with an 80% interval, and a day's anomalous cost (pure).

Money is integer nano-USD; days are UTC days; tally_dev.backtest measures both rules.

The month-end forecast is what is spent plus the expected cost of each day left. Told the share
of today elapsed (`day_fraction`, f), today's cost / f joins the fit as a day once f >=
`FIT_FRACTION`, and the rest of today is (1 - f) x (its pace so far, weighted f, + today's
expected cost, weighted 1 - f): never below what is spent. Not told, today's cost is a lower
bound on the day's: it joins the fit only once it reaches today's expected cost. A user without
previous months is fitted from the day after their first day with a cost (that day is likely
partial), so a user who started mid-month is not diluted by the days before.
The completed days are fitted as level x weekday factor x trend, on the log scale:
- noise: the robust sd (1.4826 MAD) of the changes between days a week apart, shrunk toward
  `SIGMA_PRIOR` while they are few;
- trend (log growth a day): the median slope over pairs of days a whole number of weeks apart
  (weekly cycles make no trend), from `MIN_TREND_DAYS` days on, combined by precision with a
  prior: the growth between the previous months' totals, else 0 +- `SLOPE_PRIOR_SD`; then
  shrunk toward 0 unless it stands `SLOPE_SHRINK` standard errors clear (James-Stein, positive
  part), bounded by `MAX_SLOPE`, and the projected growth capped at `GROWTH_CAP` (or its inverse);
- weekday factors (from 3 pairs of days a week apart): each weekday's mean, its days clipped
  `CLIP` noise sd above its median (the days' median before 3 weeks: a burst is not a
  weekday's), kept in the share tau^2 / (tau^2 + noise^2 / days), tau^2 being the spread between
  weekdays beyond the noise (empirical Bayes: no weekly cycle, no factors);
- level: the mean of the costs grown to today by the trend, winsorized at e^(3 noise sd) above
  their median (bursts do not make the level; they widen the interval), weekday-balanced (a
  mean of the weekdays' means) in the measure the weekly cycle is trusted, mildly
  recency-weighted (half-life `HALF_LIFE` days).
The previous months' totals (up to `HISTORY_MONTHS`, weighted `HISTORY_WEIGHTS`, each grown to
today by the trend) give a second level. The two are blended by precision: the run's variance
noise^2 / n_eff against `HISTORY_SD`^2, the history discounted when it disagrees (|z| > 2) from
`MIN_DISAGREEMENT_DAYS` days on. So a user's first days lean on their history; with neither
history nor a completed day, today's cost so far is taken as the daily rate.
The 80% interval is log-normal around the remaining cost: the level's variance + the relative
day-to-day variance (bursts included) / days left + the trend's variance over half the days
left + the months' excess volatility (their log totals' second difference); its log sd is at
most `MAX_SPREAD`, and it never goes below what is spent.
`exceeds_on` is the first day the cumulative cost, actual then projected, reaches the limit.

An anomaly is a completed day whose cost exceeds `expected` (the larger of the median of the
last `ANOMALY_WEEKS` same weekdays and the last 7 days' median times that weekday's factor) by
all of: a ratio `ANOMALY_RATIO`, `ANOMALY_Z` robust standard deviations on the log scale
(1.4826 MAD of the history's residuals from its weekday medians) and an absolute
`ANOMALY_FLOOR_NANOS`; at least `ANOMALY_MIN_HISTORY` days of history are needed. Weekly cycles
are in `expected`, so they do not fire.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from statistics import median

from tally.timeutil import months_back, parse_month

Z80 = 1.2815515655446004  # the standard normal's 90th percentile: an 80% two-sided interval
MIN_TREND_DAYS = 10
SLOPE_SHRINK = 1.5
MAX_SLOPE = 0.08
GROWTH_CAP = 2.0
HALF_LIFE = 40.0
SIGMA_PRIOR = 0.3
PRIOR_DAYS = 3.0
CV_PRIOR = 0.5
HISTORY_MONTHS = 3
HISTORY_WEIGHTS = (1.0, 0.5, 0.25)
HISTORY_SD = 0.2  # a month's level against the months before (log sd)
HISTORY_PRIOR_DOF = 0.5
VOLATILITY = 2.0
MAX_SPREAD = 2.0  # log sd: the high end at most 13 times the remaining cost
SLOPE_PRIOR_SD = 0.01
SLOPE_DRIFT_SD = 0.003  # how much the trend may change from the previous months' to this one's
CLIP = 2.5
MIN_DISAGREEMENT_DAYS = 3
FIT_FRACTION = 0.5  # the share of today that lets its pace join the fit
ANOMALY_MIN_HISTORY = 7
ANOMALY_WEEKS = 4
ANOMALY_RATIO = 2.5
ANOMALY_Z = 4.0
ANOMALY_FLOOR_NANOS = 100_000_000  # $0.10


@dataclass(frozen=True)
class Forecast:
    """A month's projected cost, its 80% interval and the day the monthly limit is crossed."""

    month_end_nanos: int
    low_nanos: int
    high_nanos: int
    exceeds_on: date | None
    basis: str


@dataclass(frozen=True)
class Anomaly:
    """A day's cost far above its usual level (`day`: its weekday as given, 0 = Monday)."""

    day: int
    cost_nanos: int
    expected_nanos: int
    threshold_nanos: int


@dataclass(frozen=True)
class _Fit:
    level: float  # today's expected cost before its weekday factor
    factors: tuple[float, ...]  # by weekday, mean 1
    slope: float  # log growth per day
    slope_var: float
    sigma: float  # robust sd of the log residuals
    cv: float  # sd of the relative residuals (bursts included)
    n_eff: float  # effective number of days behind the level
    days: int  # days fitted


@dataclass(frozen=True)
class _History:
    rates: tuple[float, ...]  # each previous month's cost per day, most recent first
    centers: tuple[float, ...]  # each month's middle in this month's day numbers (0: the eve of the 1st)
    slope: float  # log growth per day between the months (the trend's prior)
    slope_var: float
    noise_var: float  # a month's log deviation from the months' trend


def _days_in(month: str) -> int:
    """Return the number of days of a `YYYY-MM` month."""
    year, number = (int(part) for part in month.split("-"))
    return calendar.monthrange(year, number)[1]


def _seasonal_sen(days: Sequence[int], logs: Sequence[float]) -> tuple[float, float]:
    """Return the median slope over pairs of the same weekday, and the sum of their squared lags."""
    pairs = [
        (days[j] - days[i], logs[j] - logs[i]) for i in range(len(days)) for j in range(i + 1, len(days))
    ]
    pairs = [(lag, rise) for lag, rise in pairs if lag % 7 == 0]
    if not pairs:
        return 0.0, 0.0
    return median(rise / lag for lag, rise in pairs), float(sum(lag * lag for lag, _ in pairs))


def _mad_sigma(values: Sequence[float]) -> float:
    """Return the normal-consistent median absolute deviation."""
    center = median(values)
    return 1.4826 * median(abs(v - center) for v in values)


def _weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    """Return the weighted mean."""
    return sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)


def _weekly(
    days: Sequence[int], residuals: Sequence[float], weekdays: Sequence[int]
) -> tuple[list[float], list[float], float]:
    """Return each weekday's mean log residual, the share of it to keep (empirical Bayes) and the noise sd."""
    n = len(residuals)
    if n < 3:
        return [0.0] * 7, [0.0] * 7, SIGMA_PRIOR
    # The noise from the changes a week apart: free of the weekly cycle and of level.
    weekly_changes = [
        residuals[j] - residuals[i] for i in range(n) for j in range(i + 1, n) if days[j] - days[i] == 7
    ]
    if len(weekly_changes) < 3:
        return [0.0] * 7, [0.0] * 7, _shrunk(max(0.02, _mad_sigma(residuals)), SIGMA_PRIOR, n)
    noise = max(0.02, _mad_sigma(weekly_changes) / math.sqrt(2))
    variance = _shrunk(noise, SIGMA_PRIOR, len(weekly_changes)) ** 2
    groups = [[r for r, d in zip(residuals, weekdays, strict=True) if d == w] for w in range(7)]
    # A burst is not a weekday's: clipped above the weekday's median (the days' median, before 3 weeks).
    overall = median(residuals)
    caps = [(median(g) if len(g) > 2 else overall) + CLIP * noise for g in groups]
    means = [sum(min(r, cap) for r in g) / len(g) if g else 0.0 for g, cap in zip(groups, caps, strict=True)]
    present = [(m, len(g)) for g, m in zip(groups, means, strict=True) if g]
    center = sum(m for m, _ in present) / len(present)
    spread = max(0.0, sum((m - center) ** 2 - variance / count for m, count in present) / len(present))
    keep = [spread / (spread + variance / len(g)) if g else 0.0 for g in groups]
    return [m - center for m in means], keep, math.sqrt(variance)


def _fit(
    days: Sequence[int], values: Sequence[int], weekdays: Sequence[int], now: int, prior: tuple[float, float]
) -> _Fit:
    """Fit trend (a prior's mean and variance), weekday factors and today's level to completed days."""
    n = len(values)
    eps = max(1.0, 0.01 * sum(values) / n)
    logs = [math.log(v + eps) for v in values]
    raw_slope, leverage = _seasonal_sen(days, logs)
    season, keep, sigma = _weekly(
        days, [z - raw_slope * t for z, t in zip(logs, days, strict=True)], weekdays
    )
    slope, slope_var = prior
    if leverage and n >= MIN_TREND_DAYS:
        se2 = math.pi / 2 * 2 * _shrunk(sigma, SIGMA_PRIOR, n) ** 2 / leverage
        slope_var = 1 / (1 / se2 + 1 / prior[1])
        slope = slope_var * (raw_slope / se2 + prior[0] / prior[1])
    slope = _significant(slope, slope_var)
    grown = [v * _growth(slope, now - t) for v, t in zip(values, days, strict=True)]
    weights = [0.5 ** ((now - t) / HALF_LIFE) for t in days]
    shape = [math.exp(k * s) for k, s in zip(keep, season, strict=True)]
    center = median(g / shape[w] for g, w in zip(grown, weekdays, strict=True))
    caps = [center * f * math.exp(3 * sigma) if center > 0 else math.inf for f in shape]
    groups = [[i for i in range(n) if weekdays[i] == w] for w in range(7)]
    means = [  # winsorized: bursts do not make the level
        _weighted_mean([min(grown[i], caps[weekdays[i]]) for i in group], [weights[i] for i in group])
        if group
        else 0.0
        for group in [list(range(n)), *groups]
    ]
    trust = sum(keep) / 7
    balanced = sum(means[1:]) / 7 if all(groups) else means[0]
    level = trust * balanced + (1 - trust) * means[0]
    factors = [
        1 + k * (m / balanced - 1) if balanced > 0 else 1.0 for k, m in zip(keep, means[1:], strict=True)
    ]
    factors = [f * 7 / sum(factors) for f in factors]
    fitted = [level * factors[w] for w in weekdays]
    cv = (
        math.sqrt(sum((g / f - 1) ** 2 for g, f in zip(grown, fitted, strict=True)) / n)
        if level > 0
        else CV_PRIOR
    )
    n_eff = sum(weights) ** 2 / sum(w * w for w in weights)
    return _Fit(level, tuple(factors), slope, slope_var, sigma, cv, n_eff, n)


def _history(month: str, previous: Sequence[int]) -> _History | None:
    """Return the previous months' daily rates and the trend they show."""
    if not previous:
        return None
    months = months_back(month, min(len(previous), HISTORY_MONTHS) + 1)[-2::-1]
    rates, centers, end = [], [], 0
    for total, key in zip(previous, months, strict=False):
        length = _days_in(key)
        rates.append(total / length)
        centers.append(end - (length - 1) / 2)
        end -= length
    logs = [math.log(r) for r in rates if r > 0]
    noise = HISTORY_SD**2
    if len(logs) == len(rates) >= 3:  # the second difference of 3 months: 6 times a month's variance
        noise = ((logs[0] - 2 * logs[1] + logs[2]) ** 2 / 6 + HISTORY_PRIOR_DOF * noise) / (
            1 + HISTORY_PRIOR_DOF
        )
    slopes = [
        math.log(rates[i] / rates[i + 1]) / (centers[i] - centers[i + 1])
        for i in range(len(rates) - 1)
        if rates[i] > 0 and rates[i + 1] > 0
    ]
    if not slopes:
        return _History(tuple(rates), tuple(centers), 0.0, SLOPE_PRIOR_SD**2, noise)
    variance = 2 * noise / 30.4**2 / len(slopes) + SLOPE_DRIFT_SD**2
    return _History(tuple(rates), tuple(centers), sum(slopes) / len(slopes), variance, noise)


def _significant(slope: float, variance: float) -> float:
    """Return a slope shrunk toward 0 by its variance (James-Stein, positive part) and bounded."""
    if slope == 0.0:
        return 0.0
    slope *= max(0.0, 1 - SLOPE_SHRINK**2 * variance / slope**2)
    return min(MAX_SLOPE, max(-MAX_SLOPE, slope))


def _series(
    days: Sequence[int], daily: Sequence[int], weekday: Sequence[int], new: bool
) -> tuple[list[int], list[int], list[int]]:
    """Return the days to fit, their costs and weekdays (a new user's first day, likely partial, left out)."""
    used = list(days[1:] if new and len(days) > 1 else days)
    return used, [daily[d - 1] for d in used], [weekday[d - 1] for d in used]


def _growth(slope: float, ahead: float) -> float:
    """Return the projected growth `ahead` days on, capped."""
    return min(GROWTH_CAP, max(1 / GROWTH_CAP, math.exp(slope * ahead)))


def forecast(
    *,
    month: str,
    daily_nanos: Sequence[int],
    today: int,
    previous_months_nanos: Sequence[int] = (),
    limit_nanos: int | None = None,
    day_fraction: float | None = None,
) -> Forecast:
    """Project `month`'s ("YYYY-MM") cost from its days 1..today (today's partial day last).

    daily_nanos[i] is the cost of day i+1, len == today; previous_months_nanos are the totals
    of the earlier months, most recent first (may be empty); day_fraction is the share of today
    elapsed (0..1; None: unknown, today's cost is then only a lower bound on the day's).
    """
    parse_month(month)
    length = _days_in(month)
    if not 1 <= today <= length or len(daily_nanos) != today:
        raise ValueError("daily_nanos must hold days 1..today of the month")
    if any(v < 0 for v in daily_nanos) or any(v < 0 for v in previous_months_nanos):
        raise ValueError("costs must not be negative")
    if day_fraction is not None and not 0.0 <= day_fraction <= 1.0:
        raise ValueError("day_fraction must be within 0..1")
    year, number = (int(part) for part in month.split("-"))
    weekday = [date(year, number, d).weekday() for d in range(1, length + 1)]
    history = _history(month, previous_months_nanos)
    prior = (history.slope, history.slope_var) if history else (0.0, SLOPE_PRIOR_SD**2)
    start = 1
    if history is None:  # a new user: from their first day with a cost
        start = next((d for d, v in enumerate(daily_nanos, 1) if v > 0), today)
    done = list(range(start, today))
    partial = daily_nanos[today - 1]
    seen = list(daily_nanos)
    if day_fraction is not None and day_fraction >= FIT_FRACTION and start <= today:
        seen[-1] = round(partial / day_fraction)  # enough of today seen: its pace joins the fit
        done.append(today)
    if done:
        fit = _fit(*_series(done, seen, weekday, history is None), today, prior)
        if day_fraction is None and partial >= fit.level * fit.factors[weekday[today - 1]]:
            done.append(today)  # today already counts as a full day
            fit = _fit(*_series(done, daily_nanos, weekday, history is None), today, prior)
            done.pop()
    else:  # no completed day: history, else today's cost so far as the daily rate
        fit = _Fit(float(partial), (1.0,) * 7, _significant(*prior), prior[1], SIGMA_PRIOR, CV_PRIOR, 0.0, 0)
    level, variance, basis = _blend(fit, history, today)
    basis = (_describe(fit) if done else "today's cost so far as the daily rate") + basis
    expected = [
        level * fit.factors[weekday[d - 1]] * _growth(fit.slope, d - today) for d in range(today, length + 1)
    ]
    remaining = [max(0.0, expected[0] - partial), *expected[1:]]
    if day_fraction is not None:  # the rest of today at its pace so far, weighted by the share seen
        remaining[0] = (1 - day_fraction) * (partial + (1 - day_fraction) * expected[0])
    rest = sum(remaining)
    spent = sum(daily_nanos)
    cv = _shrunk(fit.cv, CV_PRIOR, fit.days)
    left = length - today + 0.5
    variance += cv**2 / left + fit.slope_var * (left / 2) ** 2
    if history is not None:  # months more volatile than usual: bursts to come
        variance += VOLATILITY * max(0.0, history.noise_var - HISTORY_SD**2) * length / left
    spread = min(math.sqrt(variance), MAX_SPREAD)
    cumulative = list(_cumulative(daily_nanos[:-1], [partial + remaining[0], *remaining[1:]]))
    return Forecast(
        month_end_nanos=cumulative[-1],
        low_nanos=spent + round(rest * math.exp(-Z80 * spread)),
        high_nanos=spent + round(rest * math.exp(Z80 * spread)),
        exceeds_on=_crossing(cumulative, limit_nanos, year, number),
        basis=basis,
    )


def _shrunk(value: float, prior: float, days: float) -> float:
    """Return a standard deviation shrunk toward its prior while days are few."""
    return math.sqrt((days * value**2 + PRIOR_DAYS * prior**2) / (days + PRIOR_DAYS))


def _describe(fit: _Fit) -> str:
    """Return the basis of a run rate."""
    days = fit.days
    weekly = "weekday-aware " if any(f != 1.0 for f in fit.factors) else ""
    trend = f", trend {math.expm1(fit.slope):+.1%}/day" if abs(fit.slope) >= 0.001 else ""
    return f"{weekly}run rate over {days} day{'s' if days != 1 else ''}{trend}"


def _blend(fit: _Fit, history: _History | None, today: int) -> tuple[float, float, str]:
    """Return today's level blended with the history's, its log variance and the basis' tail."""
    run_var = _shrunk(fit.sigma, SIGMA_PRIOR, fit.n_eff) ** 2 / max(fit.n_eff, 0.5)
    if history is None:
        return fit.level, run_var, " (no previous months)"
    weights = HISTORY_WEIGHTS[: len(history.rates)]
    grown = [r * _growth(fit.slope, today - c) for r, c in zip(history.rates, history.centers, strict=False)]
    past = _weighted_mean(grown, weights)
    hist_var = HISTORY_SD**2 + (fit.slope_var * (today - history.centers[0]) ** 2 if fit.slope else 0.0)
    count = len(history.rates)
    months = f"{count} previous month{'s' if count > 1 else ''}"
    if fit.n_eff == 0:
        return past, hist_var, f" (no completed day yet: the totals of {months})"
    eps = 1.0 + 0.01 * (fit.level + past)
    z = math.log((fit.level + eps) / (past + eps)) / math.sqrt(run_var + hist_var)
    if abs(z) > 2 and fit.days >= MIN_DISAGREEMENT_DAYS:  # the history may be stale
        hist_var *= (abs(z) / 2) ** 2
    weight = hist_var / (run_var + hist_var)
    blended = weight * fit.level + (1 - weight) * past
    return blended, 1 / (1 / run_var + 1 / hist_var), f", blended with {months} ({1 - weight:.0%})"


def _cumulative(done: Sequence[int], ahead: Sequence[float]) -> list[int]:
    """Return the cumulative cost of each day, actual then projected (rounded to the nano)."""
    total, out = 0.0, []
    for value in [*map(float, done), *ahead]:
        total += value
        out.append(round(total))
    return out


def _crossing(cumulative: Sequence[int], limit: int | None, year: int, number: int) -> date | None:
    """Return the first day whose cumulative cost reaches the limit."""
    if limit is None:
        return None
    day = next((d for d, total in enumerate(cumulative, 1) if total >= limit), None)
    return date(year, number, day) if day is not None else None


def actual(
    *, daily_nanos: Sequence[int], limit_nanos: int | None = None, month: str | None = None
) -> Forecast:
    """Return a past month's forecast: its actual total (`month` is needed for `exceeds_on`)."""
    total = sum(daily_nanos)
    crossed = None
    if limit_nanos is not None:
        if month is None:
            raise ValueError("a limit needs the month to date its crossing")
        year, number = (int(part) for part in parse_month(month).split("-"))
        crossed = _crossing(_cumulative(daily_nanos, ()), limit_nanos, year, number)
    days = len(daily_nanos)
    return Forecast(total, total, total, crossed, f"actual total of {days} day{'s' if days != 1 else ''}")


def anomaly(*, history_nanos: Sequence[int], today_nanos: int, weekday: int) -> Anomaly | None:
    """Return an Anomaly when today's completed cost is far above its usual level, else None.

    history_nanos: the previous days' costs, most recent last; day i has weekday
    (weekday - len(history_nanos) + i) % 7.
    """
    n = len(history_nanos)
    if n < ANOMALY_MIN_HISTORY:
        return None
    days = [(weekday - n + i) % 7 for i in range(n)]
    by_day: list[list[int]] = [[] for _ in range(7)]
    for w, v in zip(days, history_nanos, strict=True):
        by_day[w].append(v)
    typical = [median(values) if values else 0.0 for values in by_day]
    overall = median(history_nanos)
    eps = 1.0 + 0.05 * overall
    same = by_day[weekday][-ANOMALY_WEEKS:]
    factor = (median(by_day[weekday]) + eps) / (overall + eps)
    expected = max(median(same), median(history_nanos[-7:]) * factor)
    residuals = [math.log((v + eps) / (typical[w] + eps)) for w, v in zip(days, history_nanos, strict=True)]
    sigma = max(0.05, _mad_sigma(residuals))
    threshold = max(
        expected * ANOMALY_RATIO,
        (expected + eps) * math.exp(ANOMALY_Z * sigma) - eps,
        expected + ANOMALY_FLOOR_NANOS,
    )
    if today_nanos <= threshold:
        return None
    return Anomaly(weekday, today_nanos, round(expected), math.ceil(threshold))
