"""Certificates and kubeconfigs for the test control plane.

Everything here is pure apart from writing files into the directory it is given: one CA signs
the API server's serving certificate and one client certificate per component (the user is the
certificate's CN, its groups the O entries, as kube-apiserver's x509 authenticator reads them).
A second CA, shaped the way training-operator's certificate rotator checks it, serves the
operator's validating webhook.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The operator's rotator refuses certificates that expire within 90 days; a long life keeps it
# from trying to rotate them (it cannot write the files it would rotate to).
_LIFETIME = dt.timedelta(days=3650)
# training-operator v1.9.0 checks its CA against this name and its serving cert against
# <webhook service>.<operator namespace>.svc (pkg/cert/cert.go).
WEBHOOK_CA_NAME = "training-operator-ca"
WEBHOOK_DNS_NAME = "training-operator.kubeflow.svc"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM files on disk."""

    cert: Path
    key: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _write_pair(directory: Path, name: str, cert: x509.Certificate, key) -> KeyPair:
    # PKCS#1 ("RSA PRIVATE KEY"): the operator's rotator parses its keys with ParsePKCS1PrivateKey.
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return KeyPair(
        cert=_write(directory / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
        key=_write(directory / f"{name}.key", key_pem),
    )


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _LIFETIME)
    )


def make_ca(directory: Path, name: str, common_name: str, dns_names: tuple[str, ...] = ()) -> KeyPair:
    """Write a self-signed CA as ``<name>.crt``/``<name>.key`` into ``directory``."""
    key = _key()
    subject = _name(common_name)
    builder = _builder(subject, subject, key.public_key()).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=True, key_encipherment=True, key_cert_sign=True,
            content_commitment=False, data_encipherment=False, key_agreement=False,
            crl_sign=True, encipher_only=False, decipher_only=False,
        ),
        critical=True,
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]), critical=False
        )
    return _write_pair(directory, name, builder.sign(key, hashes.SHA256()), key)


def _load_ca(ca: KeyPair):
    cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    return cert, key


def make_cert(
    directory: Path,
    name: str,
    ca: KeyPair,
    common_name: str,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    server: bool = False,
) -> KeyPair:
    """Write a certificate signed by ``ca``: a server one (with SANs) or a client one."""
    ca_cert, ca_key = _load_ca(ca)
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _builder(_name(common_name, organizations), ca_cert.subject, key.public_key())
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _write_pair(directory, name, builder.sign(ca_key, hashes.SHA256()), key)


def make_service_account_key(directory: Path) -> KeyPair:
    """The key that signs service-account tokens (``sa.key``) and its public half (``sa.pub``)."""
    key = _key()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(cert=_write(directory / "sa.pub", public), key=_write(directory / "sa.key", private))


def kubeconfig(server: str, ca: Path, user: str, client: KeyPair | None = None,
               token: str | None = None) -> dict:
    """A one-context kubeconfig for ``user`` at ``server`` (client certificate or bearer token)."""
    if (client is None) == (token is None):
        raise ValueError("kubeconfig needs exactly one of a client certificate or a token")
    credentials = (
        {"client-certificate": str(client.cert), "client-key": str(client.key)}
        if client is not None
        else {"token": token}
    )
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "workbench-test",
                      "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "workbench-test", "user": user}}],
        "current-context": user,
    }


def write_kubeconfig(path: Path, config: dict) -> Path:
    """Write ``config`` to ``path`` readable by its owner only; returns ``path``."""
    return _write(path, yaml.safe_dump(config).encode())
