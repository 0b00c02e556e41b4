"""Servers for the registry client's tests: pushed images, registries of our own (htpasswd,
token auth with a token issuer, TLS), a server that never answers.

Imported by the test modules that use them (``from registry_fixtures import *`` after
putting this folder on ``sys.path``), so they stay out of the shared ``conftest.py``.
Credential helpers and the secrets scan's tools are in ``credential_fixtures.py``.
Every extra server runs on a free loopback port and is stopped by its fixture.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import parse_qs, urlparse

import pytest

__all__ = [
    "HangingServer",
    "PushedImage",
    "RegistryProcess",
    "TokenIssuer",
    "ephemeral_registry",
    "hanging_server",
    "htpasswd_registry",
    "push_image_to",
    "registry_workdir",
    "tls_registry",
    "token_issuer",
    "token_registry",
]


@dataclass(frozen=True)
class PushedImage:
    """An image the test pushed: ``ref`` (registry/name:tag) and the digest ``docker push`` reported."""

    ref: str
    digest: str


def push_image_to(host: str, name: str, tag: str, source: str, credentials=None) -> PushedImage:
    """Tag ``source`` as ``host/name:tag`` and push it through the daemon."""
    from prefect_flyimage.engine import Engine

    ref = f"{host}/{name}:{tag}"
    with Engine() as engine:
        engine.tag(source, ref)
        digest = engine.push(ref, credentials)
    return PushedImage(ref, digest)


# ---- a server that accepts and never answers -------------------------------------------------


class HangingServer:
    """A TCP server on a free loopback port that accepts connections and never answers."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        self.accepted = 0
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            self._clients.append(conn)  # held open, never read from or written to

    def close(self) -> None:
        self._server.close()
        for conn in self._clients:
            conn.close()
        self._thread.join(timeout=5)


@pytest.fixture
def hanging_server() -> Iterator[HangingServer]:
    server = HangingServer()
    try:
        yield server
    finally:
        server.close()


# ---- registries of our own ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _v2_status(url: str) -> Optional[int]:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=1) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class RegistryProcess:
    """Debian's ``docker-registry`` on a free loopback port with its own storage, and an
    optional ``auth:`` block or TLS certificate.

    Without auth it is shaped like ``conftest.Registry`` (``host``, ``url``,
    ``username``/``password`` None, ``auth_config()``). ``stop()`` (idempotent) and
    ``start()`` again (same port, same storage) simulate a registry going away and back.
    """

    username = None
    password = None

    def __init__(self, workdir: Path, auth_yaml: str = "", tls: Optional[tuple[Path, Path]] = None) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            pytest.fail("docker-registry is not installed (scripts/services.sh up installs it)")
        self.binary = binary
        self.workdir = workdir
        self.auth_yaml = auth_yaml
        self.tls = tls  # (certificate, key): serve HTTPS only
        self.port = _free_port()
        self.log_path = workdir / "registry.log"
        self._process: Optional[subprocess.Popen[bytes]] = None

    def auth_config(self) -> None:
        return None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start (again, on the same port and storage); no-op when running."""
        if self.running:
            return
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'data'}\n  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: {self.host}\n  secret: {secrets.token_hex(16)}\n"
            + (f"  tls:\n    certificate: {self.tls[0]}\n    key: {self.tls[1]}\n" if self.tls else "")
            + self.auth_yaml
        )
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._up():
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"registry on {self.host} did not come up:\n{self.log_path.read_text()[-2000:]}")

    def _up(self) -> bool:
        if not self.tls:
            return _v2_status(self.url) in (200, 401)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it (idempotent); the port then refuses connections."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def __repr__(self) -> str:
        return f"RegistryProcess(host={self.host!r}, running={self.running})"


@pytest.fixture
def registry_workdir() -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="flyimage-registry-test-"))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _start(make) -> RegistryProcess:
    last: Exception | None = None
    for _ in range(3):  # the probed port may be taken before the registry binds it
        reg = make()
        try:
            reg.start()
            return reg
        except RuntimeError as exc:
            last = exc
    pytest.fail(f"cannot start a registry: {last}")


@dataclass
class HtpasswdRegistry:
    """A registry with htpasswd auth; ``set_password(user, pw)`` rotates a password (read live)."""

    process: RegistryProcess
    htpasswd: Path
    users: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def host(self) -> str:
        return self.process.host

    def set_password(self, user: str, password: str) -> None:
        self.users[user] = password
        lines = []
        for name, pw in self.users.items():
            # -i: the password goes through stdin, never argv (the secrets scan samples argv)
            out = subprocess.run(["htpasswd", "-Bin", name], input=pw, capture_output=True, text=True, check=True)
            lines.append(out.stdout.strip())
        tmp = self.htpasswd.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.htpasswd)


@pytest.fixture
def htpasswd_registry(services, registry_workdir: Path) -> Iterator[HtpasswdRegistry]:
    """A fresh registry with htpasswd auth and one user ``ci`` (password in ``.users['ci']``).

    Distribution re-reads the htpasswd file when it changes, so :meth:`set_password`
    rotates the password of a running registry, as a cloud registry rotates tokens.
    """
    htpasswd = registry_workdir / "htpasswd"
    reg = HtpasswdRegistry(None, htpasswd)  # type: ignore[arg-type]
    reg.set_password("ci", "pw-" + secrets.token_hex(12))
    auth = f"auth:\n  htpasswd:\n    realm: flyimage-test\n    path: {htpasswd}\n"
    reg.process = _start(lambda: RegistryProcess(registry_workdir, auth))
    try:
        yield reg
    finally:
        reg.process.stop()


def self_signed(workdir: Path, name: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate (and key) for the IP ``name``: (cert path, key path)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(name))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "tls.crt", workdir / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ))
    return cert_path, key_path


@pytest.fixture
def tls_registry(services, registry_workdir: Path) -> Iterator[RegistryProcess]:
    """A no-auth registry on loopback that speaks HTTPS only (self-signed certificate)."""
    tls = self_signed(registry_workdir)
    reg = _start(lambda: RegistryProcess(registry_workdir, tls=tls))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def ephemeral_registry(services, registry_workdir: Path) -> Iterator[RegistryProcess]:
    """A fresh no-auth registry for one test; ``.stop()`` simulates it going away."""
    reg = _start(lambda: RegistryProcess(registry_workdir))
    try:
        yield reg
    finally:
        reg.stop()


# ---- token auth: an issuer signing RS256 JWTs, and a registry trusting it ---------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenIssuer:
    """A Distribution token server (docs: "Token Authentication Specification").

    ``GET /token?service=&scope=`` with Basic auth of a known user (or none: anonymous,
    granted nothing) answers ``{"token", "access_token", "expires_in", "issued_at"}``; the
    JWT is RS256-signed and carries its self-signed certificate in the ``x5c`` header, the
    certificate the registry trusts as ``rootcertbundle``. A known user is granted every
    action asked for; a wrong password is answered 401. ``POST /token`` (OAuth2 password
    grant) works the same, and so does the refresh-token grant with an identity token from
    ``refresh_tokens`` (what ``docker login`` stores for OAuth registries). ``issued`` lists every token handed out, ``requests`` counts them.
    """

    service = "flyimage-test-registry"
    issuer = "flyimage-test-issuer"

    def __init__(self, workdir: Path, users: dict[str, str], lifetime: int = 300) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users
        self.refresh_tokens: dict[str, str] = {}  # identity (OAuth refresh) token -> user
        self.lifetime = lifetime
        self.issued: list[str] = []
        self.requests = 0
        self.refused = 0
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = workdir / "token-issuer.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def sign(self, subject: str, access: list[dict]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + self.lifetime, "nbf": now - 1,
            "iat": now, "jti": secrets.token_hex(16), "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _grant(self, user: Optional[str], password: Optional[str], scopes: list[str]) -> Optional[str]:
        """The token for ``scopes``, or ``None`` when the password is wrong."""
        self.requests += 1
        if user is not None and self.users.get(user) != password:
            self.refused += 1
            return None
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name and user is not None:
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        token = self.sign(user or "", access)
        self.issued.append(token)
        return token

    def _handler(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the test output stays readable
                pass

            def _basic(self) -> tuple[Optional[str], Optional[str]]:
                header = self.headers.get("Authorization", "")
                if not header.startswith("Basic "):
                    return None, None
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                return user, password

            def _answer(self, token: Optional[str]) -> None:
                if token is None:
                    body, status = b'{"details":"incorrect username or password"}', 401
                else:
                    body = json.dumps({
                        "token": token, "access_token": token, "expires_in": issuer.lifetime,
                        "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    }).encode()
                    status = 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                user, password = self._basic()
                self._answer(issuer._grant(user, password, query.get("scope", [])))

            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                if form.get("grant_type") == ["password"]:
                    user, password = form.get("username", [None])[0], form.get("password", [None])[0]
                elif form.get("grant_type") == ["refresh_token"]:
                    # An identity token stands for its user; an unknown one is refused.
                    user = issuer.refresh_tokens.get(form.get("refresh_token", [""])[0], "\0unknown")
                    password = issuer.users.get(user, "")  # "" never matches: refused
                else:
                    user, password = self._basic()
                scopes = [s for entry in form.get("scope", []) for s in entry.split(" ")]
                self._answer(issuer._grant(user, password, scopes))

        return Handler

    def close(self) -> None:
        """Stop answering (idempotent): the realm then refuses connections."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)


@pytest.fixture
def token_issuer(registry_workdir: Path) -> Iterator[TokenIssuer]:
    """A token issuer with one user ``ci`` (password in ``.users['ci']``)."""
    issuer = TokenIssuer(registry_workdir, {"ci": "pw-" + secrets.token_hex(12)})
    try:
        yield issuer
    finally:
        issuer.close()


@pytest.fixture
def token_registry(services, registry_workdir: Path, token_issuer: TokenIssuer) -> Iterator[RegistryProcess]:
    """A registry with token auth (``auth: token:``) trusting :func:`token_issuer`'s certificate."""
    auth = (
        "auth:\n  token:\n"
        f"    realm: {token_issuer.realm}\n    service: {token_issuer.service}\n"
        f"    issuer: {token_issuer.issuer}\n    rootcertbundle: {token_issuer.cert_path}\n"
    )
    reg = _start(lambda: RegistryProcess(registry_workdir, auth))
    try:
        yield reg
    finally:
        reg.stop()
