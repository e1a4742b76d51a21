"""Synthetic worlds, log files and MovieLens-100K as event sources; uploads that supply their
embedding; publishing them; tail."""
