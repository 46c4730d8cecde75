"""How a client reaches the secure broker: bootstrap, SASL/SCRAM-SHA-512 over TLS, the
partnership CA; as librdkafka properties (confluent-kafka) or Faust/aiokafka credentials."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bus.exceptions import ConfigurationError
from bus.security.credentials import CredentialStore
from bus.security.pki import ca_path, client_context

MECHANISM = "SCRAM-SHA-512"


#: librdkafka's name for Java's partitioner (murmur2 of the key; a record without one, at random)
JAVA_PARTITIONER = "murmur2_random"


@dataclass(frozen=True)
class KafkaAccess:
    """Everything a Kafka client of one principal needs; the password never appears in repr."""

    bootstrap: str
    username: str
    password: str = field(repr=False)
    ca_file: Path

    def librdkafka(self, **extra: Any) -> dict[str, Any]:
        """librdkafka client properties (confluent-kafka), plus `extra` (dots as in librdkafka)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": str(self.ca_file),
            "ssl.endpoint.identification.algorithm": "https",
        }
        conf.update(extra)
        return conf

    def librdkafka_producer(self, **extra: Any) -> dict[str, Any]:
        """librdkafka producer properties: `librdkafka` with Java's (and aiokafka's) partitioner,
        murmur2, rather than librdkafka's default (CRC32), so a key lands on the partition any
        other client of the bus (Faust's workers, a partner's Java producer) gives it."""
        return self.librdkafka(**{"partitioner": JAVA_PARTITIONER, **extra})

    def ssl_context(self) -> ssl.SSLContext:
        return client_context(self.ca_file)

    def faust_credentials(self) -> Any:
        import faust

        return faust.SASLCredentials(username=self.username, password=self.password,
                                     ssl_context=self.ssl_context(), mechanism=MECHANISM)

    def as_principal(self, home: Path, name: str) -> KafkaAccess:
        """The same broker, as another principal of the local stack."""
        cred = CredentialStore(home).require(name)
        return replace(self, username=cred.username, password=cred.password)


def local_access(home: Path, bootstrap: str, principal: str) -> KafkaAccess:
    """Access to the local stack under `home` as `principal` (credentials from its store)."""
    cred = CredentialStore(home).require(principal)
    ca = ca_path(home)
    if not ca.is_file():
        raise ConfigurationError(f"no partnership CA at {ca}; run `sgbus stack up`")
    return KafkaAccess(bootstrap, cred.username, cred.password, ca)
