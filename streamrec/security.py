"""Security settings checked, and turned into the options every client is built with.

One place translates ``STREAMREC_KAFKA_*`` and ``STREAMREC_REDIS_*`` into aiokafka and
redis-py keyword options, so that no client (the worker's, the trainer's, ``tail``'s, topic
creation's) can drift to plaintext on its own. Inconsistent settings are refused up front with
every problem named, instead of surfacing later as a connection that hangs or silently goes
out unauthenticated.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiokafka.helpers import create_ssl_context

from streamrec.config import Settings

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: The mechanisms taking a username and password (GSSAPI and OAUTHBEARER need more than that).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: A guessable token is no protection; as long as the snapshot key's minimum.
MIN_WEB_TOKEN = 16

#: The settings that secure a connection (what :func:`plaintext` resets).
KAFKA_FIELDS = ("kafka_security_protocol", "kafka_sasl_mechanism", "kafka_username",
                "kafka_password", "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
                "kafka_ssl_key_password")
REDIS_FIELDS = ("redis_username", "redis_password", "redis_ssl_ca", "redis_ssl_certfile",
                "redis_ssl_keyfile")


class SecurityConfigError(ValueError):
    """Security settings that cannot work together; the message names each problem."""


def _var(name: str) -> str:
    return f"STREAMREC_{name.upper()}"


def kafka_protocol(s: Settings) -> str:
    return (s.kafka_security_protocol or "PLAINTEXT").strip().upper()


def sasl_mechanism(s: Settings) -> str:
    """The SASL mechanism in use ("" when the protocol is not SASL)."""
    if not kafka_protocol(s).startswith("SASL_"):
        return ""
    return (s.kafka_sasl_mechanism or "PLAIN").strip().upper()


def _missing_files(s: Settings, names: tuple[str, ...]) -> list[str]:
    return [f"{_var(n)} {getattr(s, n)} is not a file" for n in names
            if getattr(s, n) and not Path(getattr(s, n)).is_file()]


def kafka_problems(s: Settings) -> list[str]:
    protocol = kafka_protocol(s)
    if protocol not in KAFKA_PROTOCOLS:
        return [f"STREAMREC_KAFKA_SECURITY_PROTOCOL {s.kafka_security_protocol!r} is not one of "
                f"{', '.join(KAFKA_PROTOCOLS)}"]
    problems = []
    sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
    if sasl:
        if sasl_mechanism(s) not in SASL_MECHANISMS:
            problems.append(f"STREAMREC_KAFKA_SASL_MECHANISM {s.kafka_sasl_mechanism!r} is not "
                            f"one of {', '.join(SASL_MECHANISMS)}")
        if not s.kafka_username or not s.kafka_password:
            problems.append(f"{protocol} needs STREAMREC_KAFKA_USERNAME and "
                            "STREAMREC_KAFKA_PASSWORD")
    else:
        # Credentials that would silently not be sent are a mistake worth stopping for.
        given = [_var(n) for n in ("kafka_sasl_mechanism", "kafka_username", "kafka_password")
                 if getattr(s, n)]
        if given:
            problems.append(f"{', '.join(given)} set but STREAMREC_KAFKA_SECURITY_PROTOCOL is "
                            f"{protocol}: use SASL_SSL (or SASL_PLAINTEXT)")
    files = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    if not tls:
        given = [_var(n) for n in (*files, "kafka_ssl_key_password") if getattr(s, n)]
        if given:
            problems.append(f"{', '.join(given)} set but STREAMREC_KAFKA_SECURITY_PROTOCOL is "
                            f"{protocol}: use SSL or SASL_SSL")
        return problems
    if s.kafka_ssl_keyfile and not s.kafka_ssl_certfile:
        problems.append("STREAMREC_KAFKA_SSL_KEYFILE needs STREAMREC_KAFKA_SSL_CERTFILE")
    if s.kafka_ssl_key_password and not s.kafka_ssl_certfile:
        problems.append("STREAMREC_KAFKA_SSL_KEY_PASSWORD needs STREAMREC_KAFKA_SSL_CERTFILE")
    missing = _missing_files(s, files)
    problems += missing
    if not problems:
        try:
            _kafka_ssl_context(s)
        except (ssl.SSLError, OSError) as exc:
            problems.append(f"the Kafka TLS files do not load ({_var('kafka_ssl_cafile')}, "
                            f"..._CERTFILE, ..._KEYFILE, ..._KEY_PASSWORD): {exc}")
    return problems


def redis_problems(s: Settings) -> list[str]:
    if not s.redis:
        return []  # the commands that need Redis say so themselves
    scheme = urlsplit(s.redis).scheme
    if scheme not in ("redis", "rediss", "unix"):
        return [f"STREAMREC_REDIS {scheme}:// is not redis://, rediss:// or unix://"]
    problems = []
    files = ("redis_ssl_ca", "redis_ssl_certfile", "redis_ssl_keyfile")
    given = [_var(n) for n in files if getattr(s, n)]
    if given and scheme != "rediss":
        problems.append(f"{', '.join(given)} set but STREAMREC_REDIS is a {scheme}:// URL "
                        "(no TLS): use rediss://")
    if s.redis_ssl_keyfile and not s.redis_ssl_certfile:
        problems.append("STREAMREC_REDIS_SSL_KEYFILE needs STREAMREC_REDIS_SSL_CERTFILE")
    if s.redis_username and not s.redis_password:
        problems.append("STREAMREC_REDIS_USERNAME needs STREAMREC_REDIS_PASSWORD")
    if s.redis_password and urlsplit(s.redis).password:
        # redis-py lets the URL's password win over the setting: one of them would be ignored.
        problems.append("a password in both STREAMREC_REDIS and STREAMREC_REDIS_PASSWORD: "
                        "give it in one place")
    problems += _missing_files(s, files)
    return problems


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name may resolve to anything


def web_problems(s: Settings) -> list[str]:
    if s.web_token and len(s.web_token) < MIN_WEB_TOKEN:
        return [f"STREAMREC_WEB_TOKEN must be at least {MIN_WEB_TOKEN} characters "
                "(e.g. openssl rand -hex 32)"]
    if not is_loopback(s.web_host) and not s.web_token and not s.web_public:
        return [f"STREAMREC_WEB_HOST {s.web_host} is reachable from other machines: set "
                "STREAMREC_WEB_TOKEN (requests then need 'Authorization: Bearer <token>'), "
                "or STREAMREC_WEB_PUBLIC=1 to serve it open"]
    return []


def check(s: Settings, *, kafka: bool = True, redis: bool = True, web: bool = False) -> None:
    """:class:`SecurityConfigError` naming every problem of the parts a command uses."""
    problems = ((kafka_problems(s) if kafka else []) + (redis_problems(s) if redis else [])
                + (web_problems(s) if web else []))
    if problems:
        raise SecurityConfigError("; ".join(problems))


def _kafka_ssl_context(s: Settings) -> ssl.SSLContext:
    return create_ssl_context(cafile=s.kafka_ssl_cafile or None,
                              certfile=s.kafka_ssl_certfile or None,
                              keyfile=s.kafka_ssl_keyfile or None,
                              password=s.kafka_ssl_key_password or None)


def kafka_options(s: Settings) -> dict[str, Any]:
    """aiokafka client keyword options (producer, consumer, admin) from the settings."""
    check(s, redis=False)
    protocol = kafka_protocol(s)
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=sasl_mechanism(s), sasl_plain_username=s.kafka_username,
                       sasl_plain_password=s.kafka_password)
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _kafka_ssl_context(s)
    return options


def redis_options(s: Settings) -> dict[str, Any]:
    """redis-py keyword options for a client of ``settings.redis``: ACL credentials and,
    for a ``rediss://`` URL, the TLS files (the server's certificate is always verified)."""
    check(s, kafka=False)
    options: dict[str, Any] = {}
    if s.redis_password:
        options["password"] = s.redis_password
    if s.redis_username:
        options["username"] = s.redis_username
    if urlsplit(s.redis).scheme == "rediss":
        options["ssl_cert_reqs"] = "required"
        for key, name in (("ssl_ca_certs", "redis_ssl_ca"), ("ssl_certfile", "redis_ssl_certfile"),
                          ("ssl_keyfile", "redis_ssl_keyfile")):
            if getattr(s, name):
                options[key] = getattr(s, name)
    return options


def uses_security(s: Settings) -> bool:
    """Whether any Kafka or Redis security setting asks for more than plain connections."""
    return kafka_protocol(s) != "PLAINTEXT" or any(
        getattr(s, name) for name in KAFKA_FIELDS[1:] + REDIS_FIELDS)


def plaintext(s: Settings, **changes: Any) -> Settings:
    """``s`` with every security setting of Kafka and Redis back to plain: for the embedded
    runtime, which speaks neither SASL nor TLS whatever the environment says."""
    plain = {name: "PLAINTEXT" if name == "kafka_security_protocol" else ""
             for name in KAFKA_FIELDS + REDIS_FIELDS}
    return dataclasses.replace(s, **{**plain, **changes})
