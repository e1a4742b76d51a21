"""Every Kafka and Redis client of the project is built here, from the settings.

Building them in one place is what makes the security settings reach all of them:
``tests/test_security.py`` fails if an aiokafka or redis-py client is constructed anywhere
else in ``streamrec/`` or ``benchmarks/``. For the embedded runtime, pass
``EmbeddedRuntime.settings()``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streamrec.config import Settings
from streamrec.security import kafka_options, redis_options


def _bootstrap(s: Settings) -> str:
    if not s.kafka:
        raise ValueError("no broker: set STREAMREC_KAFKA")
    return s.kafka


def kafka_producer(s: Settings, **kwargs: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=_bootstrap(s), **kafka_options(s), **kwargs)


def kafka_consumer(s: Settings, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, bootstrap_servers=_bootstrap(s), **kafka_options(s),
                            **kwargs)


def kafka_admin(s: Settings, **kwargs: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=_bootstrap(s), **kafka_options(s), **kwargs)


def redis_client(s: Settings, **kwargs: Any) -> aioredis.Redis:
    """A client of ``s.redis`` with the settings' ACL user, password and TLS files."""
    if not s.redis:
        raise ValueError("no Redis: set STREAMREC_REDIS")
    return aioredis.from_url(s.redis, **redis_options(s), **kwargs)
