"""Warehouse writers: one per target, bulk paths only, idempotent, identifiers quoted by the driver."""
