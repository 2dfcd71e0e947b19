"""Bastion: a self-hosted, secure-by-default backend server."""

__version__ = "0.1.0"
