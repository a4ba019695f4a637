"""Glue for frameworks whose idioms need more than the ASGI scope."""
