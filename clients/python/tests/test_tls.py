"""TLS and mutual TLS between MoEClient and a scripted router, with certificates made by
openssl for the test: a CA, a server certificate for moe-router.test (and 127.0.0.1), and a
client certificate."""

import subprocess

import grpc
import numpy as np
import pytest

from helpers import random_tokens
from moe_client import MoEClient, TLSConfig, UnavailableError
from scripted_router import ScriptedRouter


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=moe test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=DNS:moe-router.test,IP:127.0.0.1\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=moe {name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem", cwd=d)
    return d


def server_credentials(pki, require_client_auth):
    return grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes() if require_client_auth else None,
        require_client_auth=require_client_auth)


def echo_works(client):
    rows = random_tokens((2, 8), seed=1)
    np.testing.assert_array_equal(client.forward(rows).output, 2 * rows)


def test_tls_with_a_ca_bundle(pki):
    with ScriptedRouter(["echo"], server_credentials(pki, False)) as router:
        echo_works(MoEClient(router.target, tls=str(pki / "ca.pem")))


def test_tls_true_trusts_the_system_ca_bundle(pki, monkeypatch):
    # A CA the system trusts (SSL_CERT_FILE, as OpenSSL reads it), not in grpcio's own roots.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.pem"))
    with ScriptedRouter(["echo"], server_credentials(pki, False)) as router:
        with MoEClient(router.target, tls=True) as client:
            echo_works(client)


def test_tls_server_name_override(pki):
    with ScriptedRouter(["echo"], server_credentials(pki, False)) as router:
        target = f"localhost:{router.port}"  # not in the certificate
        echo_works(MoEClient(target, tls=TLSConfig(root_certificates=str(pki / "ca.pem"),
                                                   server_name="moe-router.test")))
        with pytest.raises(UnavailableError):
            MoEClient(target, tls=str(pki / "ca.pem"), retries_unavailable=0).forward(
                random_tokens((1, 8), seed=2))


def test_plaintext_client_cannot_talk_to_a_tls_router(pki):
    with ScriptedRouter(["echo"], server_credentials(pki, False)) as router:
        with pytest.raises(UnavailableError):
            MoEClient(router.target, retries_unavailable=0).forward(random_tokens((1, 8), 3))


def test_mutual_tls(pki):
    with ScriptedRouter(["echo"], server_credentials(pki, True)) as router:
        echo_works(MoEClient(router.target, tls=TLSConfig(
            root_certificates=str(pki / "ca.pem"), certificate_chain=str(pki / "client.pem"),
            private_key=str(pki / "client.key"))))
        with pytest.raises(UnavailableError):  # no client certificate
            MoEClient(router.target, tls=str(pki / "ca.pem"), retries_unavailable=0).forward(
                random_tokens((1, 8), seed=4))


def test_half_a_client_identity_is_refused():
    with pytest.raises(ValueError, match="both"):
        MoEClient("127.0.0.1:1", tls=TLSConfig(certificate_chain="client.pem"))
