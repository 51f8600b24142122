"""The account's balance from the platform's applications list: the Flux figures first, others briefly.

The list's items are documented only as carrying `remaining_amount` and `used_amount`; the service an
item belongs to is read from whichever of its usual fields is there (`service.title`, `service.alias`,
...). Items that say nothing usable are skipped, never guessed at.
"""

from __future__ import annotations

from typing import Any

from flux_mcp.domain.results import ApplicationCredits, BudgetStatus, CreditsResult
from flux_mcp.domain.tasks import finite_number
from flux_mcp.domain.team import credits as credits_amount

TOP_UP_URL = "https://platform.acedata.cloud"


def summarize_credits(applications: list[dict[str, Any]]) -> CreditsResult:
    """The Flux application(s) and the others, from the platform's application items."""
    flux: list[ApplicationCredits] = []
    others: list[ApplicationCredits] = []
    for item in applications:
        credits = _application(item)
        if credits is None:
            continue
        (flux if _is_flux(item, credits) else others).append(credits)
    return CreditsResult(flux=flux, others=others, top_up_url=TOP_UP_URL)


def credits_text(credits: CreditsResult) -> str:
    """A short reading of the balance, with where to top up when the Flux balance is spent."""
    if not credits.flux:
        lines = [
            "No Flux application was found on this AceDataCloud account: apply for Flux at " + TOP_UP_URL
        ]
    else:
        lines = [f"Flux: {_figures(app)}" for app in credits.flux]
        if all((app.remaining_amount or 0) <= 0 for app in credits.flux):
            lines.append(f"The Flux balance is used up: add credits at {TOP_UP_URL}.")
    if credits.others:
        lines.append(
            "Other applications: " + "; ".join(f"{app.service} {_figures(app)}" for app in credits.others)
        )
    if credits.budget is not None:
        lines += budget_lines(credits.budget)
    return "\n".join(lines)


def budget_lines(budget: BudgetStatus) -> list[str]:
    """This server's budgets, as a person reads them: "Your budget here: 12 of 50 credits left today…"."""
    lines = []
    for whose, left in (("Your budget here", budget.yours), ("This server's budget", budget.server)):
        if left is not None:
            this = "today" if left.period == "day" else "this month"
            lines.append(
                f"{whose}: {credits_amount(left.left)} of {credits_amount(left.limit)} credits left {this} "
                f"({credits_amount(left.spent)} spent); it resets at {left.resets_at}."
            )
    return lines


def _application(item: dict[str, Any]) -> ApplicationCredits | None:
    remaining, used = finite_number(item.get("remaining_amount")), finite_number(item.get("used_amount"))
    if remaining is None and used is None:
        return None
    service = _service(item)
    name = _text(service.get("title")) or _text(service.get("alias")) or _text(service.get("name"))
    name = name or _text(item.get("service")) or _text(item.get("title")) or _text(item.get("name"))
    name = name or _text(item.get("service_id")) or "?"
    return ApplicationCredits(
        service=name,
        remaining_amount=remaining,
        used_amount=used,
        unit=_text(service.get("unit")) or _text(item.get("unit")),
        application_id=_text(item.get("id")),
    )


def _is_flux(item: dict[str, Any], credits: ApplicationCredits) -> bool:
    service = _service(item)
    names = [credits.service, service.get("alias"), service.get("name"), item.get("alias")]
    return any(isinstance(name, str) and "flux" in name.lower() for name in names)


def _service(item: dict[str, Any]) -> dict[str, Any]:
    service = item.get("service")
    return service if isinstance(service, dict) else {}


def _figures(app: ApplicationCredits) -> str:
    unit = f" {app.unit}" if app.unit else ""
    remaining = (
        f"{app.remaining_amount:g}{unit} left" if app.remaining_amount is not None else "balance unknown"
    )
    used = f", {app.used_amount:g}{unit} used" if app.used_amount is not None else ""
    return remaining + used


def _text(value: Any) -> str | None:
    return value.strip()[:80] or None if isinstance(value, str) else None
