"""A local broker that demands TLS, for the security tests and `olp up --secure` (spec section 6).

The embedded Tansu build cannot serve TLS itself (`--cert` with `--key` is refused, `--cert` alone
still serves plaintext), so it listens in plaintext on a private loopback port and advertises the
port of a TLS-terminating proxy, stunnel (Debian package `stunnel4`), in front of it. The proxy
presents a server certificate signed by a throwaway CA made here with `cryptography` and, unless
told otherwise, demands a client certificate signed by the same CA (mTLS). Clients then connect
exactly as to a real cluster: `security_protocol=SSL`, the CA, the client certificate and key.

SASL cannot be demanded here. Tansu's `--authentication` checks SCRAM users against its storage
engine, and the only engines in this build (`memory://` and `s3://`, both its object-store
engine, and `null://`) store no credentials: AlterUserScramCredentials on a broker without
`--authentication` answers success and stores nothing (DescribeUserScramCredentials returns no
user), one with `--authentication` answers no request before a successful login, and every
login fails with "unknown-user". The engines that keep users (postgres, sqlite, turso, slatedb)
are not compiled in. The other registry broker, noida-db 0.2.3, answers AlterUserScramCredentials
with UNSUPPORTED_FEATURE and breaks off the SCRAM exchange. SASL is covered by the clients'
configuration mapping and the failure path of a login the broker refuses.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.embedded import ChildProcess, free_port, port_open, start_broker
from olp.errors import OlpError

STUNNEL_NAMES = ("stunnel4", "stunnel")
KEY_PASSWORD_FILE = "client.key.password"


def stunnel_binary() -> Path:
    """The TLS proxy's executable, or an OlpError saying how to install it."""
    for name in STUNNEL_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise OlpError(
        "the secure broker needs stunnel: install Debian's `stunnel4` (apt-get install -y stunnel4)"
    )


@dataclass(frozen=True)
class Certificates:
    """PEM files of a throwaway CA, the proxy's server certificate and one client certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_password: str = field(repr=False)


def make_certificates(
    directory: Path,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    key_password: str | None = None,
    valid_days: int = 7,
) -> Certificates:
    """A CA, a server certificate for `hosts`, and a client certificate whose key is encrypted
    with `key_password` (random when not given). Files are written 0600."""
    import secrets

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    password = key_password or secrets.token_urlsafe(16)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("olp test CA", ca_key, ca_key, None, valid_days, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate("olp test broker", server_key, ca_key, ca_cert, valid_days, hosts=hosts)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _certificate("olp test client", client_key, ca_key, ca_cert, valid_days, client=True)

    def key_pem(key: ec.EllipticCurvePrivateKey, secret: str | None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(secret.encode()) if secret else serialization.NoEncryption()
        )
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    files = {
        "ca.crt": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server.crt": server_cert.public_bytes(serialization.Encoding.PEM),
        "server.key": key_pem(server_key, None),
        "client.crt": client_cert.public_bytes(serialization.Encoding.PEM),
        "client.key": key_pem(client_key, password),
        KEY_PASSWORD_FILE: password.encode(),
    }
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
    return Certificates(
        directory / "ca.crt",
        directory / "server.crt",
        directory / "server.key",
        directory / "client.crt",
        directory / "client.key",
        password,
    )


def _certificate(
    name: str,
    key: Any,
    issuer_key: Any,
    issuer: Any,
    valid_days: int,
    *,
    ca: bool = False,
    hosts: tuple[str, ...] = (),
    client: bool = False,
) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def stunnel_config(
    certificates: Certificates, accept_port: int, connect_port: int, require_client_cert: bool
) -> str:
    """stunnel's configuration: TLS on `accept_port`, plaintext to the broker on `connect_port`."""
    lines = [
        "foreground = yes",
        "pid =",
        "debug = notice",
        "[kafka]",
        f"accept = 127.0.0.1:{accept_port}",
        f"connect = 127.0.0.1:{connect_port}",
        f"cert = {certificates.server_cert}",
        f"key = {certificates.server_key}",
        "sslVersionMin = TLSv1.2",
        "socket = l:TCP_NODELAY=1",
        "socket = r:TCP_NODELAY=1",
    ]
    if require_client_cert:
        lines += [f"CAfile = {certificates.ca_cert}", "verifyChain = yes"]
    return "\n".join(lines) + "\n"


@dataclass
class SecureBroker:
    """A running Tansu behind its TLS proxy. `bootstrap` is the TLS address clients use."""

    broker: ChildProcess
    proxy: ChildProcess
    bootstrap: str
    certificates: Certificates
    client_certificates: bool

    def kafka_settings(self) -> dict[str, Any]:
        """`KafkaSettings` fields of a client of this broker (with the Tansu values applied by the
        caller: `KafkaSettings.embedded_broker(**broker.kafka_settings())`)."""
        fields: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SSL",
            "ssl_cafile": self.certificates.ca_cert,
        }
        if self.client_certificates:
            fields["ssl_certfile"] = self.certificates.client_cert
            fields["ssl_keyfile"] = self.certificates.client_key
            fields["ssl_key_password"] = self.certificates.client_key_password
        return fields

    def env(self) -> dict[str, str]:
        """The same as OLP_* environment variables, for child services and `olp up --secure`."""
        return {f"OLP_KAFKA__{name.upper()}": str(value) for name, value in self.kafka_settings().items()}

    def client_instructions(self) -> str:
        """What a client outside the stack sets to connect (for `olp up --secure` to print); the
        key's password is named by its file, not shown."""
        lines = [f"export {name}={value}" for name, value in self.env().items() if "PASSWORD" not in name]
        if self.client_certificates:
            password_file = self.certificates.client_key.parent / KEY_PASSWORD_FILE
            lines.append(f'export OLP_KAFKA__SSL_KEY_PASSWORD="$(cat {password_file})"')
        return "\n".join(lines)

    def stop(self) -> None:
        self.proxy.stop()
        self.broker.stop()


def start_secure_broker(
    run_dir: Path,
    *,
    client_certificates: bool = True,
    sasl: bool = False,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
) -> SecureBroker:
    """Tansu on a private port, stunnel in front of it, certificates in `run_dir/certs` (the
    server's naming `hosts`). With `sasl` the broker demands a SCRAM login too, which it refuses
    to every user (see above)."""
    stunnel = stunnel_binary()
    run_dir.mkdir(parents=True, exist_ok=True)
    certificates = make_certificates(run_dir / "certs", hosts=hosts)
    broker_port, tls_port = free_port(), free_port()
    broker, _ = start_broker(
        run_dir, broker_port, advertised_port=tls_port, extra_args=["--authentication"] if sasl else []
    )
    config = run_dir / "stunnel.conf"
    config.write_text(
        stunnel_config(certificates, tls_port, broker_port, client_certificates), encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proxy = ChildProcess("tls-proxy", [str(stunnel), str(config)], env, run_dir / "stunnel.log")
    try:
        proxy.start().wait_until(lambda: port_open("127.0.0.1", tls_port), 30, "TLS proxy")
    except BaseException:
        proxy.stop()
        broker.stop()
        raise
    return SecureBroker(broker, proxy, f"127.0.0.1:{tls_port}", certificates, client_certificates)
