"""The Faust app's broker credentials, from the same settings as every other Kafka client.

Faust turns ``broker_credentials`` into aiokafka options for its consumer, producer and admin
client (``credentials_to_aiokafka_auth``); building them from :func:`security.kafka_options`
keeps the worker's connections identical to ``tail``'s, the trainer's and topic creation's.
"""

from __future__ import annotations

from faust.auth import Credentials, SASLCredentials, SSLCredentials

from streamrec.config import Settings
from streamrec.security import kafka_options


def broker_credentials(settings: Settings) -> Credentials | None:
    """None for PLAINTEXT; SSL or SASL credentials (over TLS with SASL_SSL) otherwise."""
    options = kafka_options(settings)
    protocol = options["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(options["ssl_context"])
    # SASLCredentials says SASL_SSL exactly when it is given a context.
    return SASLCredentials(username=options["sasl_plain_username"],
                           password=options["sasl_plain_password"],
                           mechanism=options["sasl_mechanism"],
                           ssl_context=options.get("ssl_context"))
