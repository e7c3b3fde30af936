"""The decisions of the `filter` plugin, in plain Python: no component
bindings, so that the tests run them.

A message is what the host passes (`topic`, `key`, `headers`, `payload`,
`timestamp_ms`): `key` is a string or None, `payload` bytes.
"""


def parse_config(config: str) -> str:
    """The word the configuration names (empty: keep every message)."""
    return config.strip()


def keep(word: str, msg) -> bool:
    """Whether the payload, as UTF-8 text, contains `word`."""
    try:
        text = bytes(msg.payload).decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    return word in text
