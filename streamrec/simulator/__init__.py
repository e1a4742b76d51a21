"""Synthetic worlds, log files and MovieLens-100K as event sources; publishing them; tail."""
