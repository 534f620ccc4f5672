"""TLS to the collector: verified against the pinned CA or the system store, never skipped."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.client import CollectorClient, CollectorUnavailable, ssl_context
from agent.config import ConfigError, parse_config
from tests.agent.fake_collector import FakeCollector
from wire.messages import Component, HeartbeatRequest

ServerFactory = Callable[..., Awaitable[TestServer]]
HEARTBEAT = HeartbeatRequest(components=[Component(name="rmm", status="running")])


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("NOC test CA"))
        .issuer_name(_name("NOC test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, cert_pem, key_pem


@pytest.fixture
async def tls_collector(aiohttp_server: ServerFactory, tmp_path: Path) -> tuple[str, Path]:
    ca_pem, cert_pem, key_pem = make_pki(tmp_path)
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert_pem, key_pem)
    server = await aiohttp_server(FakeCollector().app(), ssl=server_ssl)
    return str(server.make_url("")).rstrip("/"), ca_pem


async def test_a_pinned_ca_file_verifies_the_collector(tls_collector: tuple[str, Path]) -> None:
    url, ca_pem = tls_collector
    assert url.startswith("https://127.0.0.1:")
    async with CollectorClient(url, token="rmmag_x", ssl=ssl_context(ca_pem)) as client:
        answer = await client.heartbeat(HEARTBEAT)
    assert answer.next_heartbeat_s == 60


async def test_a_certificate_outside_the_system_store_is_refused(
    tls_collector: tuple[str, Path],
) -> None:
    url, _ = tls_collector
    async with CollectorClient(url, token="rmmag_x", ssl=ssl_context(None)) as client:
        with pytest.raises(CollectorUnavailable, match=r"TLS|certificate|SSL"):
            await client.heartbeat(HEARTBEAT)


async def test_a_different_pinned_ca_is_refused(
    tls_collector: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = tls_collector
    other = tmp_path / "other"
    other.mkdir()
    other_ca, _, _ = make_pki(other)
    async with CollectorClient(url, token="rmmag_x", ssl=ssl_context(other_ca)) as client:
        with pytest.raises(CollectorUnavailable):
            await client.heartbeat(HEARTBEAT)


def test_plain_http_to_another_host_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match="plain http://"):
        parse_config({"collector_url": "http://192.168.1.10:8080"}, source=Path("agent.toml"))
