"""Broker adapters behind one protocol (``base``); ``registry`` picks one per account."""
