"""Prometheus metrics of a worker, served at ``/metrics`` on its web port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry()
EVENTS = Counter("streamrec_events", "Valid events processed", ["type"], registry=REGISTRY)
DEAD_LETTERS = Counter("streamrec_dead_letters", "Events sent to dead-letter", ["reason"],
                       registry=REGISTRY)
RECOMMENDATIONS = Counter("streamrec_recommendations", "Lists published", registry=REGISTRY)
RETIREMENTS = Counter("streamrec_retirements", "Items retired (retire events processed)",
                      registry=REGISTRY)
RETIRED_ITEM_EVENTS = Counter("streamrec_retired_item_events", "Views and clicks of retired "
                              "items, and uploads older than their item's retirement, not "
                              "learned", ["type"], registry=REGISTRY)
BATCH_SECONDS = Histogram("streamrec_batch_seconds", "Time to process one micro-batch",
                          ["agent"], registry=REGISTRY,
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
BATCH_SIZE = Histogram("streamrec_batch_size", "Messages per micro-batch", ["agent"],
                       registry=REGISTRY, buckets=(1, 10, 50, 100, 250, 500, 1000, 2000))
GC_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
GC_PAUSE_SECONDS = Histogram("streamrec_gc_pause_seconds", "Garbage collections, by generation",
                             ["generation"], registry=REGISTRY, buckets=GC_BUCKETS)
MODEL_GC_PAUSE_SECONDS = Histogram(
    "streamrec_model_process_gc_pause_seconds",
    "The model process's garbage collections, by generation (sent with its replies)",
    ["generation"], registry=REGISTRY, buckets=GC_BUCKETS)
STUDENT_SWAPS = Counter("streamrec_student_swaps", "Students taken into service",
                        registry=REGISTRY)
STUDENT_REJECTED = Counter("streamrec_student_rejected", "Student snapshots refused (corrupt, "
                           "truncated, wrong shape, unsigned or badly signed, located outside "
                           "the snapshot folder)", registry=REGISTRY)
ENCODER_RESTARTS = Counter("streamrec_encoder_restarts", "Encoder processes replaced after "
                           "dying (killed, out of memory)", registry=REGISTRY)

OFFSET_RESETS = Counter("streamrec_offset_resets", "Partitions found behind the offsets already "
                        "applied from them (topic recreated, broker data lost)", ["partition"],
                        registry=REGISTRY)
STATE_LOST = Counter("streamrec_state_lost", "Times this worker found the shared state in "
                     "Redis gone (and stopped)", registry=REGISTRY)


def render() -> bytes:
    return generate_latest(REGISTRY)
