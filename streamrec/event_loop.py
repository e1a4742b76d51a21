"""The event loop: uvloop where it is installed (a faster loop for the worker and its
children), asyncio's own elsewhere."""

from __future__ import annotations


def install_uvloop() -> bool:
    """Make uvloop the loop of every later ``asyncio.run``; False if it is not installed."""
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True
