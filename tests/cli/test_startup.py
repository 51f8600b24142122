"""Cold start (issue 16 §5): what a stdio server loads before it lists its tools, and TLS loaded late.

A desktop host starts `flux-mcp` for every session and waits for `tools/list`. Pillow, PyAV, PyJWT,
psycopg, the emulator, the HTTP surface and the doctor are not needed for that, nor is the CA bundle
(loading it takes 30-40 ms per client): each is loaded when first used. These tests run the server
as hosts do, in a fresh interpreter, and look at what it loaded; none measures a time.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import child_env, initialize_request, stdio_exchange

pytestmark = pytest.mark.subprocess  # each test starts flux-mcp

EXIT_BOUND_SECONDS = 60.0  # only there so a broken build fails instead of hanging the suite
# Optional or per-command modules a stdio server has no use for until a call needs them.
NOT_AT_START = (
    "PIL",
    "av",
    "jwt",
    "psycopg",
    "psycopg_pool",
    "flux_mcp.emulator",
    "flux_mcp.cli.sandbox",
    "flux_mcp.web.app",
    "flux_mcp.web.oauth",
    "flux_mcp.cli.doctor",
    "flux_mcp.history.postgres",
)

REPORTING_SERVER = """
import atexit, json, sys
def report():
    from flux_mcp.net.tls import shared_context
    loaded = sorted(name for name in sys.argv[1].split(",") if name in sys.modules)
    print("REPORT " + json.dumps({"loaded": loaded, "trust_loaded": shared_context().trust_loaded}),
          file=sys.stderr)
atexit.register(report)
from flux_mcp.cli.main import main
sys.exit(main([]))
"""


def test_a_stdio_server_lists_its_tools_without_optional_modules_or_the_ca_bundle(tmp_path: Path) -> None:
    env = child_env(
        tmp_path, ACEDATACLOUD_API_TOKEN="sk-test", ACEDATACLOUD_API_BASE_URL="https://127.0.0.1:9"
    )
    messages = [
        initialize_request(1),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    argv = [sys.executable, "-c", REPORTING_SERVER, ",".join(NOT_AT_START)]
    answers, log = stdio_exchange(argv, env, messages, 2, tmp_path=tmp_path, exit_within=EXIT_BOUND_SECONDS)
    assert "generate_image" in {tool["name"] for tool in answers[1]["result"]["tools"]}, log[-2000:]
    report = json.loads(log.rsplit("REPORT ", 1)[1].splitlines()[0])
    assert report == {"loaded": [], "trust_loaded": False}


# --- TLS, loaded at the first connection ------------------------------------------------------


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        addresses = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(addresses), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(path: Path, *items: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    chunks = []
    for item in items:
        if isinstance(item, x509.Certificate):
            chunks.append(item.public_bytes(serialization.Encoding.PEM))
        else:
            chunks.append(
                item.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    path.write_bytes(b"".join(chunks))
    return path


def _server_files(folder: Path, name: str) -> tuple[Path, Path]:
    """A CA certificate and, signed by it, a server certificate + key for 127.0.0.1 (PEM files)."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(f"{name} test CA", ca_key, ca=True)
    leaf = _certificate("127.0.0.1", leaf_key, ca, ca_key, ca=False)
    return _pem(folder / f"{name}-ca.pem", ca), _pem(folder / f"{name}-server.pem", leaf, leaf_key)


CLIENTS_OVER_TLS = """
import json, ssl, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import anyio, httpx2
from flux_mcp.net.clients import build_download_client, build_http_client
from flux_mcp.domain.settings import Settings
from flux_mcp.net.tls import shared_context

class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "image/png")
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"hello")
    def log_message(self, *args):
        pass

def serve(certificate):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{server.server_address[1]}"

async def main():
    trusted, untrusted = serve(sys.argv[1]), serve(sys.argv[2])
    settings = Settings(api_token="sk-test", api_base_url=trusted)
    out = {}
    async with build_http_client(settings) as http, build_download_client(settings) as downloads:
        out["before"] = shared_context().trust_loaded
        out["api"] = (await http.get(trusted + "/")).status_code
        out["after"] = shared_context().trust_loaded
        out["download"] = (await downloads.get(trusted + "/x.png")).status_code
        try:
            await http.get(untrusted + "/")
            out["untrusted"] = "accepted"
        except httpx2.ConnectError as exc:
            out["untrusted"] = "refused: " + str(exc)
    print(json.dumps(out))

anyio.run(main)
"""


def test_tls_trust_is_loaded_at_the_first_https_connection_and_still_verifies(tmp_path: Path) -> None:
    trusted_ca, trusted_server = _server_files(tmp_path, "trusted")
    _, other_server = _server_files(tmp_path, "other")
    env = child_env(tmp_path, SSL_CERT_FILE=str(trusted_ca))  # httpx2's rule: this file is the trust store
    done = subprocess.run(
        [sys.executable, "-c", CLIENTS_OVER_TLS, str(trusted_server), str(other_server)],
        capture_output=True,
        text=True,
        env=env,
        timeout=EXIT_BOUND_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"] is False and out["after"] is True
    assert out["api"] == 200 and out["download"] == 200
    assert out["untrusted"].startswith("refused") and "CERTIFICATE_VERIFY_FAILED" in out["untrusted"]
