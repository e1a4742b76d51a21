"""Settings, read from ``STREAMREC_*`` environment variables with sane defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

#: The worker consumer's fetch wait unless ``STREAMREC_FETCH_MAX_WAIT_MS`` says otherwise.
DEFAULT_FETCH_MAX_WAIT_MS = 10
#: The space of the built-in encoders' fused item vectors (``FixedFusion().version``; a test
#: keeps the two equal): a worker's content space unless ``STREAMREC_EMBEDDING_MODEL`` says
#: otherwise.
BUILTIN_EMBEDDING_MODEL = "minilm-l6-v2+effnet-lite0+tags:fixed-v1:128"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"STREAMREC_{name}", default)


@dataclass
class Settings:
    """Everything a worker needs to know; each field has an environment variable.

    ``kafka`` and ``redis`` left empty mean "start the embedded ones" where a command allows it.
    """

    kafka: str = field(default_factory=lambda: _env("KAFKA", ""))
    redis: str = field(default_factory=lambda: _env("REDIS", ""))
    app_id: str = field(default_factory=lambda: _env("APP_ID", "streamrec"))
    partitions: int = field(default_factory=lambda: int(_env("PARTITIONS", "4")))
    replication: int = field(default_factory=lambda: int(_env("REPLICATION", "1")))
    #: The most events in one micro-batch (streams/batching.py).
    batch_size: int = field(default_factory=lambda: int(_env("BATCH_SIZE", "500")))
    #: How long a micro-batch that has taken every queued event waits for more (0: not at all).
    batch_within_s: float = field(default_factory=lambda: float(_env("BATCH_WITHIN_S", "0")))
    #: The same for uploads: waiting lets the encoder take several per model call.
    upload_within_s: float = field(default_factory=lambda: float(_env("UPLOAD_WITHIN_S", "0")))
    #: How long the broker may hold a worker's fetch (streams/transport.py): the embedded
    #: Tansu sleeps it out, so short; a Kafka broker answers when records come, so any works.
    fetch_max_wait_ms: int = field(default_factory=lambda: int(
        _env("FETCH_MAX_WAIT_MS", str(DEFAULT_FETCH_MAX_WAIT_MS))))
    top_k: int = field(default_factory=lambda: int(_env("TOP_K", "10")))
    #: Seconds between pulls of other workers' item-side updates from Redis.
    refresh_s: float = field(default_factory=lambda: float(_env("REFRESH_S", "5")))
    web_host: str = field(default_factory=lambda: _env("WEB_HOST", "127.0.0.1"))
    web_port: int = field(default_factory=lambda: int(_env("WEB_PORT", "0")))
    data_dir: str = field(default_factory=lambda: _env("DATA_DIR", "runs"))
    #: ``pipeline`` (the real one), ``naive`` or ``passthrough`` (benchmark baselines).
    engine: str = field(default_factory=lambda: _env("ENGINE", "pipeline"))
    #: Folder that upload images given by reference (``file:NAME``) are read
    #: from; references outside it are refused.
    image_root: str = field(default_factory=lambda: _env("IMAGE_ROOT", "images"))
    #: Run the engine (models, ranking, write-back) in a child process, so the worker takes
    #: in the next batch while one is ranked (``0``: in the worker's own event loop).
    model_process: bool = field(default_factory=lambda: _env("MODEL_PROCESS", "1")
                                not in ("0", "false"))
    #: Encode upload text and images (``0`` registers items with metadata only).
    content: bool = field(default_factory=lambda: _env("CONTENT", "1") not in ("0", "false"))
    #: The space of the item vectors this worker serves: uploads that supply an
    #: ``embedding`` must name it in ``embedding_model``. The built-in encoders run only in
    #: their own space; in another, uploads without an embedding are registered without one.
    embedding_model: str = field(default_factory=lambda: _env("EMBEDDING_MODEL",
                                                              BUILTIN_EMBEDDING_MODEL))
    #: What a worker does when a partition's log is behind the offsets it already applied
    #: (the topic was recreated, the broker lost its data): ``relearn`` its events from
    #: there on, or ``stop`` the worker. Either way it is logged and counted in /metrics.
    on_offset_reset: str = field(default_factory=lambda: _env("ON_OFFSET_RESET", "relearn"))
    #: Folder for snapshots too large for Redis (shared by the trainer and the workers).
    snapshot_dir: str = field(default_factory=lambda: _env("SNAPSHOT_DIR", "runs/snapshots"))
    #: Key the trainer signs snapshots with and workers verify them with (snapshots/signing.py);
    #: every process of a deployment needs the same one. Kept out of the repr, so out of logs.
    snapshot_key: str = field(default_factory=lambda: _env("SNAPSHOT_KEY", ""), repr=False)
    #: A file holding that key instead (e.g. a mounted secret). With neither, a key generated
    #: once in ``snapshot_dir``, which serves the processes that share that folder.
    snapshot_key_file: str = field(default_factory=lambda: _env("SNAPSHOT_KEY_FILE", ""))
    #: This worker's stable name in its consumer group (Kafka static membership): a worker
    #: restarted under the same name takes its partitions back at once, without waiting for
    #: the group to give up on its old self. Unique per worker of a group (a pod name, or
    #: ``host-1``, ``host-2``); empty: dynamic membership.
    instance_id: str = field(default_factory=lambda: _env("INSTANCE_ID", ""))
    #: How long the group waits for a silent worker before giving its partitions away, and
    #: how often a worker says it is alive (a third of the timeout, as Kafka advises).
    session_timeout_s: float = field(default_factory=lambda: float(
        _env("SESSION_TIMEOUT_S", "10")))
    #: Users whose state a worker keeps in memory; the least recently active beyond it are
    #: dropped and read back from Redis when they return.
    max_users: int = field(default_factory=lambda: int(_env("MAX_USERS", "100000")))
    #: Seconds a user's state stays in Redis after their last event (0: forever).
    user_ttl_s: float = field(default_factory=lambda: float(_env("USER_TTL_S", "2592000")))
    #: Items first met in a view or click rather than an upload that a worker takes in; views
    #: and clicks of further ones are dead-lettered (``unknown item``). 0: only uploaded items.
    max_unknown_items: int = field(default_factory=lambda: int(
        _env("MAX_UNKNOWN_ITEMS", "100000")))
    #: Catalogue size from which the candidate sources propose through indexes (an inverted
    #: file, neighbour lists, maintained heads) instead of scoring every item for every user.
    exact_below: int = field(default_factory=lambda: int(_env("EXACT_BELOW", "50000")))
    #: A/B buckets: ``NAME[=POLICY]:WEIGHT,...``; users split by a hash of their id
    #: (engine/buckets.py), each bucket's lists made by its policy.
    buckets: str = field(default_factory=lambda: _env("BUCKETS", "blend:100"))
    # Security (streamrec/security.py checks these and turns them into client options).
    #: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
    kafka_security_protocol: str = field(
        default_factory=lambda: _env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"))
    #: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``; empty means ``PLAIN`` under SASL.
    kafka_sasl_mechanism: str = field(default_factory=lambda: _env("KAFKA_SASL_MECHANISM", ""))
    kafka_username: str = field(default_factory=lambda: _env("KAFKA_USERNAME", ""))
    kafka_password: str = field(default_factory=lambda: _env("KAFKA_PASSWORD", ""), repr=False)
    #: CA bundle the broker's certificate is checked against (empty: the system's CAs).
    kafka_ssl_cafile: str = field(default_factory=lambda: _env("KAFKA_SSL_CAFILE", ""))
    #: A client certificate and its key, for brokers that require mutual TLS.
    kafka_ssl_certfile: str = field(default_factory=lambda: _env("KAFKA_SSL_CERTFILE", ""))
    kafka_ssl_keyfile: str = field(default_factory=lambda: _env("KAFKA_SSL_KEYFILE", ""))
    kafka_ssl_key_password: str = field(default_factory=lambda: _env("KAFKA_SSL_KEY_PASSWORD", ""),
                                        repr=False)
    #: A Redis ACL user (Redis 6+); the password alone authenticates as ``default``.
    redis_username: str = field(default_factory=lambda: _env("REDIS_USERNAME", ""))
    redis_password: str = field(default_factory=lambda: _env("REDIS_PASSWORD", ""), repr=False)
    #: TLS files for a ``rediss://`` URL: the CA, and a client certificate and key.
    redis_ssl_ca: str = field(default_factory=lambda: _env("REDIS_SSL_CA", ""))
    redis_ssl_certfile: str = field(default_factory=lambda: _env("REDIS_SSL_CERTFILE", ""))
    redis_ssl_keyfile: str = field(default_factory=lambda: _env("REDIS_SSL_KEYFILE", ""))
    #: Bearer token every request to the worker's web server must carry.
    web_token: str = field(default_factory=lambda: _env("WEB_TOKEN", ""), repr=False)
    #: Serve the web server on a non-loopback address without a token, knowingly.
    web_public: bool = field(default_factory=lambda: _env("WEB_PUBLIC", "0")
                             in ("1", "true", "yes"))
