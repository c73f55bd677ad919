"""Request bodies: size limits enforced before parsing, and gzip decoding.

The client gzips large batches; both the wire size and the decoded size are capped, so neither a
huge upload nor a small zip bomb can exhaust memory: the answer is a 413 naming the limit.
"""

from __future__ import annotations

import json
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _Rejected(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


class RequestBodyMiddleware:
    """Caps the body at ``max_bytes`` (before and after decoding) and decodes gzip bodies."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        declared = headers.get(b"content-length", b"")
        try:
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise _Rejected(413, f"request body exceeds {self.max_bytes} bytes")
            if encoding not in (b"identity", b"gzip"):
                raise _Rejected(415, f"Content-Encoding {encoding.decode()!r} is not supported")
            body = await self._read(receive)
            if encoding == b"gzip":
                body = self._gunzip(body)
        except _Rejected as rejected:
            await _answer(send, rejected.status, rejected.detail)
            return
        scope = dict(scope)
        scope["headers"] = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")
        ] + [(b"content-length", str(len(body)).encode())]
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _Rejected(413, f"request body exceeds {self.max_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _gunzip(self, body: bytes) -> bytes:
        decoder = zlib.decompressobj(wbits=31)
        try:
            decoded = decoder.decompress(body, self.max_bytes + 1)
        except zlib.error as exc:
            raise _Rejected(400, f"body is not valid gzip: {exc}") from exc
        if len(decoded) > self.max_bytes:
            raise _Rejected(413, f"decoded request body exceeds {self.max_bytes} bytes")
        return decoded


async def _answer(send: Send, status: int, detail: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})
