"""The AceDataCloud platform's client: file uploads (an edit's local image) and the applications list
(balances), with the Flux client's token and retry rules (`upstream.call`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2

from flux_mcp.domain.errors import (
    AuthenticationError,
    MalformedResponseError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
    TransportError,
    UpstreamError,
)
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.telemetry import NO_OBSERVER, Observer
from flux_mcp.upstream.call import (
    ErrorAnswer,
    RetryPolicy,
    Upstream,
    json_object,
    json_value,
    token_and_retry,
)

# --- The AceDataCloud platform: file uploads and balances ------------------------------------------


class PlatformClient:
    """The platform beside the Flux API, with the same token and the same retry rules.

    An upload makes an edit's local or inline image fetchable by the Flux API; the applications list
    carries the account's balances. Neither costs anything, but an upload is still not repeated
    blindly after it may have arrived: the caller is told what happened instead.
    """

    # A 2xx that is not JSON is not retried here, even for the free applications list.
    RETRIED = (TransportError, RateLimitedError, ServerError)

    def __init__(
        self,
        http: httpx2.AsyncClient,
        base_url: str,
        token: str | None,
        *,
        retry: RetryPolicy | None = None,
        gate: anyio.CapacityLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._http = http
        self._upstream = Upstream(
            "AceDataCloud platform",
            base_url.rstrip("/"),
            token,
            retry or RetryPolicy(),
            sleep,
            detail_key="detail",
            reads_trace=False,
            observer=observer,
        )
        self._gate = gate or anyio.CapacityLimiter(32)

    @classmethod
    def from_settings(
        cls,
        http: httpx2.AsyncClient,
        settings: Settings,
        *,
        gate: anyio.CapacityLimiter,
        token: str | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> PlatformClient:
        """A platform client for these settings, with the same token and retry rules as the API's."""
        token, retry = token_and_retry(settings, token)
        return cls(http, settings.platform_base_url, token, retry=retry, gate=gate, observer=observer)

    async def upload(self, data: bytes, filename: str, mime_type: str) -> str:
        """Upload one file; its public `file_url`. Retried only when it provably did not arrive."""
        files = {"file": (filename, data, mime_type)}
        answer = await self._upstream.with_retries(
            lambda: self._send("POST", "/api/v1/files/", files=files),
            retry_ambiguous=False,
            retried=self.RETRIED,
        )
        file_url = answer.get("file_url")
        if not isinstance(file_url, str) or not file_url.startswith(("http://", "https://")):
            raise MalformedResponseError(
                "The AceDataCloud platform took the upload but returned no file_url.", status=200
            )
        if any(secret in file_url for secret in self._upstream.secrets()):  # a URL cannot be scrubbed
            raise MalformedResponseError(
                "The AceDataCloud platform took the upload but returned a file_url holding the API token; "
                "it is not used (it would be sent on, stored and shown).",
                status=200,
            )
        return file_url

    async def applications(self) -> list[dict[str, Any]]:
        """The account's applications (each with its balance), as the platform lists them."""
        answer = await self._upstream.with_retries(
            lambda: self._send("GET", "/api/v1/applications/"), retry_ambiguous=True, retried=self.RETRIED
        )
        items = answer.get("items", answer.get("results"))
        if not isinstance(items, list):
            raise MalformedResponseError(
                "The AceDataCloud platform listed the applications in a shape flux-mcp does not know.",
                status=200,
            )
        # Platform text is upstream text: an application's name may echo the token (as an API answer may).
        return [self._upstream.scrubbed(item) for item in items if isinstance(item, dict)]

    async def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        upstream = self._upstream
        headers, url = upstream.authorization(), upstream.base_url + path
        try:
            async with self._gate:
                response, content = await upstream.exchange(
                    self._http, method, url, headers=headers, **kwargs
                )
        except httpx2.TransportError as exc:
            raise upstream.unreachable(exc) from None
        data = json_object(content)
        if response.is_success and data is None and isinstance(items := json_value(content), list):
            data = {"items": items}  # a bare list of items
        if response.is_success and data is not None:
            return data
        raise self._error(upstream.error_answer(response, data, content))

    def _error(self, answer: ErrorAnswer) -> UpstreamError:
        """The error a platform error answer means (one in a 2xx status is an answer that is not JSON)."""
        status, code, detail, fields = answer.status, answer.code, answer.detail, answer.fields()
        if answer.answered_2xx:
            return MalformedResponseError(
                f"The AceDataCloud platform answered {status} with something that is not JSON: {detail!r}",
                **fields,
            )
        if status in (401, 403) and code != "used_up":
            return AuthenticationError(
                f"The AceDataCloud platform refused the token ({code or status}: {detail}). Check "
                "ACEDATACLOUD_API_TOKEN in this MCP server's environment.",
                **fields,
            )
        if status == 429:
            return self._upstream.rate_limited(answer)
        if status == 413:
            return RequestRejectedError(
                f"The AceDataCloud platform refused the file as too large ({detail}).", **fields
            )
        if 400 <= status < 500:
            return RequestRejectedError(f"The AceDataCloud platform refused the request: {detail}", **fields)
        return self._upstream.failed(answer)
