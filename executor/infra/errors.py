"""The error of a configuration that cannot be run, in a module of its own: the settings
(config.py) and the readers of the secrets they name (secrets.py, a broker's account
settings) both raise it, and neither may import the other for it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that is missing, malformed or contradicts another: the message names it
    (and where its secret was looked for), never a secret's value."""
