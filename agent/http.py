"""A small HTTP/1.1 client on asyncio streams: the agent's only way to the collector.

The agent posts a JSON body a minute and reads a small JSON answer; a general-purpose HTTP library
costs it about a third of its resident memory for that. This client does exactly what the agent
needs: POST with a body, one kept-alive connection (opened again when the collector closed it),
TLS verified by the caller's `ssl.SSLContext`, an HTTP proxy (CONNECT for https), answers with a
Content-Length, chunked or read to the end of the connection, and a cap on the answer's size.
It never follows redirects. Errors are `HttpError` (with a reason fit for a log line) or
`TimeoutError`; the collector client turns them into its own exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_HEADER_BYTES = 64 * 1024
_MAX_HEADERS = 100


class HttpError(Exception):
    """The request could not be made or the answer could not be read."""


class TlsError(HttpError):
    """The TLS handshake failed, e.g. the collector's certificate did not verify."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"{url!r} is not an http:// or https:// URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class HttpClient:
    """POSTs to one origin over one kept-alive connection; not for concurrent use without
    its lock (which `post` takes)."""

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
        max_answer_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.origin = Origin.of(base_url)
        self._base_path = urlsplit(base_url).path.rstrip("/")
        self._ssl = ssl_context
        if self.origin.scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self._proxy = Origin.of(proxy) if proxy else None
        self._max = max_answer_bytes
        self._connection: _Connection | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """The answer's status and body. A kept-alive connection the collector had closed is
        replaced once, when the answer never started."""
        async with self._lock:
            for attempt in (1, 2):
                reused = self._connection is not None and self._connection.usable()
                if not reused:
                    await self.close()
                    self._connection = await self._open()
                assert self._connection is not None
                try:
                    return await self._exchange(self._connection, path, body, headers)
                except _NoAnswer as exc:
                    await self.close()
                    if reused and attempt == 1:
                        continue
                    raise HttpError(f"the connection closed before an answer: {exc}") from exc
                except BaseException:
                    await self.close()
                    raise
            raise AssertionError("unreachable")

    async def _open(self) -> _Connection:
        target = self.origin
        tls = self._ssl if target.scheme == "https" else None
        try:
            if self._proxy is None:
                reader, writer = await asyncio.open_connection(
                    target.host, target.port, ssl=tls, server_hostname=target.host if tls else None
                )
                return _Connection(reader, writer)
            reader, writer = await asyncio.open_connection(self._proxy.host, self._proxy.port)
            connection = _Connection(reader, writer)
            if tls is None:
                return connection
            await self._tunnel(connection)
            await writer.start_tls(tls, server_hostname=target.host)
            return connection
        except ssl.SSLError as exc:
            raise TlsError(f"TLS failed: {exc}") from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise HttpError(f"cannot connect: {reason}") from exc

    async def _tunnel(self, connection: _Connection) -> None:
        authority = f"{self.origin.host}:{self.origin.port}"
        connection.writer.write(
            f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii")
        )
        await connection.writer.drain()
        status, headers = await _read_head(connection.reader)
        if status != 200:
            raise HttpError(f"the proxy refused to connect to {authority} ({status})")
        length = int(headers.get("content-length", "0") or 0)
        if length:
            await connection.reader.readexactly(length)

    async def _exchange(
        self, connection: _Connection, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        target = self._base_path + path
        if self._proxy is not None and self.origin.scheme == "http":
            target = f"http://{self.origin.authority}{target}"
        lines = [f"POST {target} HTTP/1.1", f"Host: {self.origin.authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}", "", ""]
        head = "\r\n".join(lines).encode("latin-1")
        try:
            connection.writer.write(head + body)
            await connection.writer.drain()
            status, answer_headers = await _read_head(connection.reader)
        except ssl.SSLError as exc:
            raise TlsError(f"TLS failed: {exc}") from exc
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise _NoAnswer(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        try:
            data, keep = await self._read_body(connection.reader, answer_headers)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise HttpError(f"the answer was cut short: {type(exc).__name__}: {exc}") from exc
        if not keep:
            await self.close()
        return status, data

    async def _read_body(
        self, reader: asyncio.StreamReader, headers: dict[str, str]
    ) -> tuple[bytes, bool]:
        keep = headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            size = 0
            while True:
                line = await reader.readuntil(b"\r\n")
                length = int(line.split(b";", 1)[0].strip(), 16)
                if length == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return b"".join(parts), keep
                size += length
                if size > self._max:
                    raise HttpError(f"the answer is larger than {self._max} bytes")
                parts.append(await reader.readexactly(length))
                await reader.readexactly(2)
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length > self._max:
                raise HttpError(f"the answer is larger than {self._max} bytes")
            return await reader.readexactly(length), keep
        data = await reader.read(self._max + 1)
        while len(data) <= self._max and not reader.at_eof():
            more = await reader.read(self._max + 1 - len(data))
            if not more:
                break
            data += more
        if len(data) > self._max:
            raise HttpError(f"the answer is larger than {self._max} bytes")
        return data, False


class _NoAnswer(HttpError):
    """The connection closed before the answer's first byte (a stale kept-alive connection)."""


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise HttpError("the answer's headers are too long") from exc
    if len(raw) > _MAX_HEADER_BYTES:
        raise HttpError("the answer's headers are too long")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1 : _MAX_HEADERS + 1]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if parts[0] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(parts[1]), headers
