"""Synthetic worlds, log files, MovieLens-100K, publishing, prequential evaluation, tail."""
