"""The decisions of the `route` plugin, in plain Python: no component
bindings, so that the tests run them.

A message is what the host passes (`topic`, `key`, `headers`, `payload`,
`timestamp_ms`): `key` is a string or None, `payload` bytes.
"""

from typing import Optional


def parse_config(config: str) -> str:
    """The topic prefix the configuration names; ValueError when unusable."""
    prefix = config.strip()
    if any(c.isspace() for c in prefix):
        raise ValueError(f'prefix "{prefix}" contains whitespace')
    return prefix


def refusal(prefix: str, msg) -> Optional[str]:
    """Why a keyless message whose topic starts with `prefix` is dropped;
    None for a message to deliver."""
    if msg.key is None and msg.topic.startswith(prefix):
        return f"messages on {msg.topic} need a key"
    return None
