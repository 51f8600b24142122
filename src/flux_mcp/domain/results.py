"""The structured results of list_tasks and get_credits: the history listing and the account's balance."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from flux_mcp.domain.tasks import Cost, ImageInfo, VideoInfo


class HistoryItem(BaseModel):
    task_id: str | None = Field(description="Upstream task id; null if the submission never got one.")
    status: str = Field(
        description="succeeded, pending, failed, submitting, unknown (may have been billed), rejected."
    )
    prompt: str | None
    model: str | None
    size: str | None
    created_at: str = Field(description="When it was submitted (UTC).")
    images: list[ImageInfo] = Field(default_factory=list)
    error: str | None = None
    cost: Cost | None = Field(None, description="What the upstream charged, when it said.")
    variation_of: str | None = Field(None, description="The task this one is a variation of, if any.")
    kind: Literal["image", "video"] = Field("image", description="What the task makes.")
    videos: list[VideoInfo] = Field(default_factory=list, description="With kind video: the videos.")


class HistoryList(BaseModel):
    tasks: list[HistoryItem] = Field(description="Newest first.")


class ApplicationCredits(BaseModel):
    """One application of the AceDataCloud account: a service and its balance."""

    service: str = Field(description="The service the application is for, e.g. Flux.")
    remaining_amount: float | None = Field(None, description="Balance left, in `unit`.")
    used_amount: float | None = Field(None, description="Spent so far, in `unit`.")
    unit: str | None = Field(None, description="Unit of the amounts, when the platform names it.")
    application_id: str | None = Field(None, description="The application's id in the AceDataCloud console.")


class BudgetLeft(BaseModel):
    """One budget this server keeps (FLUX_MCP_BUDGET_PER_PERSON or FLUX_MCP_BUDGET_TOTAL), as of now."""

    limit: float = Field(description="Credits it allows in each period.")
    period: Literal["day", "month"] = Field(description="UTC day or calendar month (UTC).")
    spent: float = Field(description="Credits spent (or set aside for jobs running) this period.")
    left: float = Field(description="Credits left this period.")
    resets_at: str = Field(description="When the next period begins (UTC).")


class BudgetStatus(BaseModel):
    """The caller's budget on this server, and the server's own, when the operator set them."""

    person: str = Field(description="Who the budget counts the caller as (a configured name, never a token).")
    yours: BudgetLeft | None = Field(None, description="The caller's own budget, if one is set.")
    server: BudgetLeft | None = Field(None, description="The whole server's budget, if one is set.")


class CreditsResult(BaseModel):
    """Structured content of get_credits."""

    flux: list[ApplicationCredits] = Field(description="The account's Flux application(s).")
    others: list[ApplicationCredits] = Field(
        default_factory=list, description="The account's other applications, briefly."
    )
    top_up_url: str = Field(description="Where to add credits.")
    budget: BudgetStatus | None = Field(
        None, description="This server's budgets for the caller and what is left, when any is set."
    )
