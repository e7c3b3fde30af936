"""The decisions of the `pick` plugin, in plain Python: no component
bindings, so that the tests run them.

A candidate is what the host passes (`id`, `inflight`, `weight`, `labels`),
with `labels` a list of headers (`name`, `value`).
"""

from typing import Optional


def parse_config(config: str) -> str:
    """The zone the configuration names; ValueError when there is none."""
    zone = config.strip()
    if not zone:
        raise ValueError("the configuration must name a zone")
    return zone


def choose(zone: str, candidates) -> Optional[int]:
    """The index of the least loaded candidate in `zone` (the first of
    equals), or None to let the node choose."""
    best = None
    for i, c in enumerate(candidates):
        in_zone = any(label.name == "zone" and label.value == zone for label in c.labels)
        if in_zone and (best is None or c.inflight < candidates[best].inflight):
            best = i
    return best
