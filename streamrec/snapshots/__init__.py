"""Versioned, checksummed model snapshots in Redis (or a shared folder), and the hot swap that
takes a published student into service."""
