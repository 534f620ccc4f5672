"""The agent's own HTTP/1.1 client against real servers on loopback: one kept-alive connection,
a connection the server closed is replaced, chunked and sized answers, the answer cap, and an
HTTP proxy (absolute URI for http, CONNECT for https)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.http import HttpClient, HttpError
from tests.agent.test_transport import make_pki

ServerFactory = Callable[..., Awaitable[TestServer]]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server on loopback; yields its URL and a list that counts its connections."""
    connections: list[int] = []

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", connections


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = next(
        int(line.split(":")[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length")
    )
    return head, await reader.readexactly(length)


async def test_requests_share_one_kept_alive_connection(aiohttp_server: ServerFactory) -> None:
    peers: list[Any] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response({"got": (await request.read()).decode()})

    app = web.Application()
    app.router.add_post("/v1/echo", echo)
    server = await aiohttp_server(app)
    client = HttpClient(str(server.make_url("")))
    try:
        for n in range(3):
            status, body = await client.post("/v1/echo", f"n{n}".encode(), {})
            assert status == 200 and body == f'{{"got": "n{n}"}}'.encode()
    finally:
        await client.close()
    assert len(set(peers)) == 1


async def test_a_connection_the_server_closed_is_replaced_without_an_error() -> None:
    async def one_answer_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # keep-alive implied...
        await w.drain()
        # ...but the server closes the connection straight after, as an idle timeout would.

    async with raw_server(one_answer_then_close) as (url, connections):
        client = HttpClient(url)
        try:
            assert await client.post("/a", b"1", {}) == (200, b"ok")
            await asyncio.sleep(0.05)
            assert await client.post("/b", b"2", {}) == (200, b"ok")
        finally:
            await client.close()
    assert len(connections) == 2


async def test_chunked_answers_and_answers_read_to_the_close() -> None:
    async def chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n")
        await read_request(r)
        w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
        await w.drain()

    async with raw_server(chunked) as (url, _):
        client = HttpClient(url)
        try:
            assert await client.post("/x", b"{}", {}) == (201, b"abcdefg")
            assert await client.post("/y", b"{}", {}) == (200, b"until the end")
        finally:
            await client.close()


async def test_an_answer_larger_than_the_cap_is_refused() -> None:
    async def huge(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
        await w.drain()

    async with raw_server(huge) as (url, _):
        client = HttpClient(url, max_answer_bytes=1000)
        with pytest.raises(HttpError, match="larger than 1000 bytes"):
            await client.post("/x", b"{}", {})
        await client.close()


async def test_something_that_is_not_http_is_an_error() -> None:
    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await w.drain()

    async with raw_server(garbage) as (url, _):
        client = HttpClient(url)
        with pytest.raises(HttpError, match="not an HTTP answer"):
            await client.post("/x", b"{}", {})
        await client.close()


async def test_plain_http_through_a_proxy_uses_the_absolute_uri() -> None:
    seen: list[str] = []

    async def proxy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head, body = await read_request(r)
        seen.append(head.split("\r\n")[0])
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await w.drain()

    async with raw_server(proxy) as (proxy_url, _):
        client = HttpClient("http://127.0.0.1:9/base", proxy=proxy_url)
        try:
            assert await client.post("/v1/heartbeat", b"beat", {}) == (200, b"beat")
        finally:
            await client.close()
    assert seen == ["POST http://127.0.0.1:9/base/v1/heartbeat HTTP/1.1"]


async def test_https_through_a_proxy_tunnels_with_connect_and_verifies_tls(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    ca_pem, cert_pem, key_pem = make_pki(tmp_path)
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert_pem, key_pem)
    app = web.Application()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="tunnelled")

    app.router.add_post("/v1/x", answer)
    server = await aiohttp_server(app, ssl=server_ssl)
    target_port = server.port
    tunnels: list[str] = []

    async def connect_proxy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = (await r.readuntil(b"\r\n\r\n")).decode()
        tunnels.append(head.split("\r\n")[0])
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", target_port)
        w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await w.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(r, upstream_w), pipe(upstream_r, w))

    async with raw_server(connect_proxy) as (proxy_url, _):
        verified = ssl.create_default_context(cafile=str(ca_pem))
        client = HttpClient(
            f"https://127.0.0.1:{target_port}", ssl_context=verified, proxy=proxy_url
        )
        try:
            assert await client.post("/v1/x", b"{}", {}) == (200, b"tunnelled")
        finally:
            await client.close()
    assert tunnels == [f"CONNECT 127.0.0.1:{target_port} HTTP/1.1"]
