"""HTTP to the ingest API with the standard library only (the client depends on numpy alone)."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ratiowatch.records import RunInfo

API_PREFIX = "/api/v1"
COMPRESS_ABOVE_BYTES = 4096


class TransportError(Exception):
    """The request did not reach a verdict (network error, timeout, 5xx, 429): retry later."""


class RejectedError(Exception):
    """The server refused the records themselves (4xx other than 404/429): resending cannot help."""


class UnknownRunError(Exception):
    """The server does not know the run (404): register it, then resend."""


@dataclass(frozen=True)
class StepsAccepted:
    accepted: int
    duplicate: int
    alerts: list[dict[str, Any]]


class HttpTransport:
    """One request per call; the worker owns retries, backoff and spooling."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.base = url.rstrip("/") + API_PREFIX
        self.token = token
        self.timeout = timeout

    def put_run(self, info: RunInfo) -> None:
        self._request("PUT", f"/runs/{info.run_id}", json.dumps(info.to_json()).encode())

    def post_steps(
        self, run_id: str, encoded: Sequence[bytes], losses: dict[str, int]
    ) -> StepsAccepted:
        """Post records already encoded by :meth:`StepRecord.encode`, in order."""
        body = b'{"steps":[' + b",".join(encoded) + b"]"
        if losses:
            body += b',"client_losses":' + json.dumps(losses).encode()
        answer = self._request("POST", f"/runs/{run_id}/steps", body + b"}")
        return StepsAccepted(
            accepted=int(answer.get("accepted", 0)),
            duplicate=int(answer.get("duplicate", 0)),
            alerts=list(answer.get("alerts", [])),
        )

    def _request(self, method: str, path: str, data: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "User-Agent": "ratiowatch-client"}
        if len(data) > COMPRESS_ABOVE_BYTES:
            data = gzip.compress(data, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload: dict[str, Any] = json.loads(response.read() or b"{}")
                return payload
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            if exc.code == 404:
                raise UnknownRunError(detail) from exc
            if exc.code == 429 or exc.code >= 500:
                raise TransportError(f"HTTP {exc.code}: {detail}") from exc
            raise RejectedError(f"HTTP {exc.code}: {detail}") from exc
        except (OSError, ValueError) as exc:
            raise TransportError(str(exc)) from exc
