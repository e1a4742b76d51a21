"""The worker's garbage-collector settings (streamrec/heap.py)."""

import gc

from prometheus_client import CollectorRegistry, Histogram

from streamrec.heap import freeze_startup_objects, observe_pauses


def test_frozen_objects_leave_full_collections_and_pauses_are_recorded():
    registry = CollectorRegistry()
    pauses = Histogram("pauses", "gc pauses", ["generation"], registry=registry)
    callback = observe_pauses(pauses)
    try:
        before = len(gc.get_objects())
        frozen = freeze_startup_objects()
        assert frozen >= before // 2  # everything alive at that point, give or take the young
        assert len(gc.get_objects()) < before // 10
        gc.collect()
        assert registry.get_sample_value("pauses_count", {"generation": "2"}) >= 2
        assert registry.get_sample_value("pauses_sum", {"generation": "2"}) > 0
    finally:
        gc.callbacks.remove(callback)
        gc.unfreeze()
    assert len(gc.get_objects()) >= before // 2
