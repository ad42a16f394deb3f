"""A local test server that forwards to the real node and injects faults into the protocol.

``OpenSearchProxy`` listens on 127.0.0.1 only (a port the OS picks), forwards every request to a real
OpenSearch node with ``http.client`` and relays the answer, so a client under test talks real OpenSearch
through it. Standard library only, plus ``cryptography`` (a locked dependency of Airflow) for the
certificates of ``tls=True``.

Faults, settable at any time from the test thread:

* ``corrupt_vectors``: in ``_bulk`` bodies, the named field of each source document (and of an update's
  partial ``doc``), when it is a list of numbers, is replaced by a random vector of the same length. The
  generator is seeded from the field name and the original vector, so the same document always gets the
  same wrong vector, whatever the order or number of attempts.
* ``fail_bulk_after_docs``: once ``bulk_docs`` documents have been forwarded and that is at least this
  many, every later ``_bulk`` request gets HTTP 500 with an OpenSearch-style error body, unforwarded.
* ``throttle_bulk``: the next N ``_bulk`` requests get HTTP 429 (``es_rejected_execution_exception``),
  unforwarded; it counts down.
* ``basic_auth`` (constructor): requests without that ``Authorization: Basic`` header get 401 with
  ``WWW-Authenticate``; the header is then not forwarded (the node itself has no security plugin).

Request bodies may come chunked and/or gzip-encoded (opensearch-py's ``http_compress``); they are decoded
before inspection and forwarded plain. Each request gets its own upstream connection, so a stale
keep-alive connection never leaves it unclear whether a non-idempotent ``_bulk`` reached the node.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import hmac
import http.client
import ipaddress
import json
import random
import socket
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import Any
from urllib.parse import urlsplit

# Connection-level headers (RFC 9110 §7.6.1) and the length, which is recomputed from the relayed body.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_FORWARDED_HEADERS = ("Content-Type", "Accept", "User-Agent", "X-Opaque-Id")
_INDEXING_ACTIONS = ("index", "create")
_UPSTREAM_TIMEOUT_S = 60.0


def error_body(status: int, kind: str, reason: str) -> bytes:
    """An error answer shaped like OpenSearch's own (opensearch-py reads ``error.type`` and ``error.reason``)."""
    error = {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}
    return json.dumps({"error": error, "status": status}).encode()


def bulk_actions(lines: list[bytes]) -> list[tuple[str, int | None]]:
    """Each action of a split ``_bulk`` body: its name and the index of its source line (``None`` for delete)."""
    actions: list[tuple[str, int | None]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            continue  # the node rejects the request; nothing here to count or corrupt
        if not isinstance(parsed, dict) or len(parsed) != 1:
            continue
        (action,) = parsed
        if action == "delete":
            actions.append((action, None))
            continue
        actions.append((action, i if i < len(lines) else None))
        i += 1
    return actions


def random_vector_like(field: str, vector: list[float]) -> list[float]:
    """A random vector of the same length, seeded from the original so the result is reproducible."""
    seed = hashlib.sha256(f"{field}\n{json.dumps(vector)}".encode()).digest()
    rng = random.Random(seed)
    while True:
        candidate = [round(rng.uniform(-1.0, 1.0), 6) for _ in vector]
        if candidate != vector:
            return candidate


def _is_vector(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
    )


def corrupt_bulk(lines: list[bytes], field: str, actions: list[tuple[str, int | None]]) -> list[bytes]:
    """The body lines with ``field`` replaced in each indexed document (and each update's partial ``doc``)."""
    out = list(lines)
    for action, source_at in actions:
        if source_at is None or action not in (*_INDEXING_ACTIONS, "update"):
            continue
        try:
            source = json.loads(lines[source_at])
        except ValueError:
            continue
        target = source.get("doc") if action == "update" and isinstance(source, dict) else source
        if isinstance(target, dict) and _is_vector(target.get(field)):
            target[field] = random_vector_like(field, target[field])
            out[source_at] = json.dumps(source, ensure_ascii=False, separators=(",", ":")).encode()
    return out


def write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate it signed for ``127.0.0.1`` and ``localhost``.

    Returns the paths of the CA certificate, the server certificate and the server's private key (PEM).
    Valid from five minutes ago for one day: long enough for any test session, useless afterwards.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=1)

    def usage(*, cert_sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=not cert_sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=cert_sign,
            crl_sign=cert_sign,
            encipher_only=False,
            decipher_only=False,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "placerec OpenSearchProxy test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


class OpenSearchProxy:
    """The proxy; use as ``with OpenSearchProxy() as proxy: OpenSearch(hosts=[proxy.url]) ...``."""

    def __init__(
        self,
        upstream: str = "http://127.0.0.1:9200",
        *,
        tls: bool = False,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL, got {upstream!r}")
        self.upstream = upstream
        self._upstream_https = parts.scheme == "https"
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or (443 if self._upstream_https else 80)
        self._upstream_prefix = parts.path.rstrip("/")
        self.basic_auth = basic_auth

        self.corrupt_vectors: str | None = None
        self.fail_bulk_after_docs: int | None = None
        self._throttle_bulk = 0
        self._bulk_requests = 0
        self._bulk_docs = 0
        self._throttled = 0
        self._auth_failures = 0
        self._requests: list[str] = []
        self._lock = threading.Lock()

        self.ca_cert: str | None = None
        self._certs: tempfile.TemporaryDirectory[str] | None = None
        context = None
        if tls:
            self._certs = tempfile.TemporaryDirectory(prefix="opensearch-proxy-")
            ca_path, cert_path, key_path = write_certificates(Path(self._certs.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_path, key_path)
            self.ca_cert = str(ca_path)
        self._httpd = _ProxyServer(self, context)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._httpd.server_address[1]}"
        # A short poll interval: __exit__ waits for the serve loop to notice the shutdown.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="opensearch-proxy", daemon=True
        )
        self._stopped = False

    @property
    def throttle_bulk(self) -> int:
        with self._lock:
            return self._throttle_bulk

    @throttle_bulk.setter
    def throttle_bulk(self, value: int) -> None:
        with self._lock:  # the serving threads count it down under the same lock
            self._throttle_bulk = value

    @property
    def bulk_requests(self) -> int:
        return self._bulk_requests

    @property
    def bulk_docs(self) -> int:
        return self._bulk_docs

    @property
    def throttled(self) -> int:
        return self._throttled

    @property
    def auth_failures(self) -> int:
        return self._auth_failures

    @property
    def requests(self) -> list[str]:
        """``"METHOD /path"`` (without the query string) of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    def __enter__(self) -> OpenSearchProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, close the listening socket and every client connection, delete the certificates."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        if self._certs is not None:
            self._certs.cleanup()

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the expected basic credentials (always, without them)."""
        if self.basic_auth is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except ValueError:
            return False
        user, password = self.basic_auth
        return hmac.compare_digest(given, f"{user}:{password}".encode())

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer to one decoded request: a fault, or the node's answer to the (maybe corrupted) request."""
        path = urlsplit(target).path
        is_bulk = path.rstrip("/").rsplit("/", 1)[-1] == "_bulk"
        with self._lock:
            self._requests.append(f"{method} {path}")
            if is_bulk:
                self._bulk_requests += 1
        json_type = [("Content-Type", "application/json; charset=UTF-8")]
        if not self.authorized(headers.get("Authorization")):
            with self._lock:
                self._auth_failures += 1
            reason = "missing or wrong basic authentication credentials"
            challenge = [("WWW-Authenticate", 'Basic realm="test"')]
            return 401, json_type + challenge, error_body(401, "security_exception", reason)
        if is_bulk:
            corrupt_field = self.corrupt_vectors
            lines = body.split(b"\n")
            actions = bulk_actions(lines)
            with self._lock:
                if self._throttle_bulk > 0:
                    self._throttle_bulk -= 1
                    self._throttled += 1
                    reason = "rejected execution of coordinating operation (injected by OpenSearchProxy)"
                    return 429, json_type, error_body(429, "es_rejected_execution_exception", reason)
                limit = self.fail_bulk_after_docs
                if limit is not None and self._bulk_docs >= limit:
                    reason = f"injected by OpenSearchProxy: {self._bulk_docs} documents forwarded, limit {limit}"
                    return 500, json_type, error_body(500, "opensearch_exception", reason)
                self._bulk_docs += sum(1 for action, _ in actions if action in _INDEXING_ACTIONS)
            if corrupt_field:
                body = b"\n".join(corrupt_bulk(lines, corrupt_field, actions))
        forwarded = {name: headers[name] for name in _FORWARDED_HEADERS if headers.get(name)}
        if self.basic_auth is None and headers.get("Authorization"):
            forwarded["Authorization"] = headers["Authorization"]
        return self._forward(method, target, forwarded, body)

    def _forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection: http.client.HTTPConnection
        if self._upstream_https:
            connection = http.client.HTTPSConnection(
                self._upstream_host, self._upstream_port, timeout=_UPSTREAM_TIMEOUT_S
            )
        else:
            connection = http.client.HTTPConnection(
                self._upstream_host, self._upstream_port, timeout=_UPSTREAM_TIMEOUT_S
            )
        try:
            connection.request(method, self._upstream_prefix + target, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.getheaders(), data
        except (OSError, http.client.HTTPException) as exc:
            reason = f"OpenSearchProxy could not reach {self.upstream}: {exc!r}"
            return 502, [("Content-Type", "application/json")], error_body(502, "proxy_upstream_exception", reason)
        finally:
            connection.close()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, proxy: OpenSearchProxy, context: ssl.SSLContext | None) -> None:
        self.proxy = proxy
        self.ssl_context = context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup we neither need nor want.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            # The handshake happens on the connection's own thread (see _ProxyHandler.setup), not in accept().
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections so their threads finish and clients see the proxy gone."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                # The plain socket's shutdown: the TLS layer is left to the connection's own thread.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that refuse the certificate or hang up are part of the tests; anything else is a bug.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end instead of holding a thread forever
    server: _ProxyServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def relay(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            # The stream's framing is lost: answer and close rather than misread the next request.
            self.close_connection = True
            self._send(400, [("Content-Type", "application/json")], error_body(400, "parse_exception", str(exc)))
            return
        status, headers, data = self.server.proxy.handle(self.command, self.path, self.headers, body)
        self._send(status, headers, data)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = relay

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            if len(body) < length:
                raise ValueError(f"connection closed after {len(body)} of {length} body bytes")
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip") and body:
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as exc:
                raise ValueError(f"request body is not valid gzip: {exc}") from exc
        return body

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ValueError("connection closed inside a chunked body")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.read(2) != b"\r\n":
                raise ValueError("malformed chunk in a chunked body")
            chunks.append(chunk)
        while self.rfile.readline(65537).strip():
            pass  # trailer fields: nothing here needs them
        return b"".join(chunks)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if self.command == "HEAD":
            # No body, but the length the GET would have (clients size nothing from it, proxies might).
            length = next((v for k, v in headers if k.lower() == "content-length"), "0")
            body = b""
        else:
            length = str(len(body))
        try:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            if status not in (204, 304):
                self.send_header("Content-Length", length)
            self.end_headers()
            if body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
