"""Bastion: a security layer for ASGI applications."""
