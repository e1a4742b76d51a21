"""Prequential evaluation of every model over a log, in process."""
