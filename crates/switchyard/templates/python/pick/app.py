"""A `pick` plugin: gives a message to the least loaded member whose `zone`
label is the configured zone, or lets the node choose (the member with the
fewest unacknowledged messages) when none is in that zone.

Configuration: the zone, such as `eu-1`.
Counters: `in_zone`, `elsewhere`.

This module is the component: it defines one class per interface of the
world `pick-plugin` (wit/plugin.wit), subclassing the bindings that
componentize-py generates at build time (`wit_world`), and uses the host's
`metrics`. The decisions are in logic.py, which the tests run without the
component runtime.
"""

from typing import List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import metrics, types

import logic

# Module globals live as long as the instance.
state = {"zone": ""}


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        try:
            state["zone"] = logic.parse_config(config)
        except ValueError as e:
            # The error result: the node refuses the binding.
            raise Err(str(e))


class Pick(exports.Pick):
    def pick(self, msg: types.Message, candidates: List[types.Candidate]) -> Optional[int]:
        index = logic.choose(state["zone"], candidates)
        metrics.add("elsewhere" if index is None else "in_zone", 1)
        return index
