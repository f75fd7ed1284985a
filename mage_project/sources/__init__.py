"""Clients for the external systems the pipelines read from, and local simulators of them."""
