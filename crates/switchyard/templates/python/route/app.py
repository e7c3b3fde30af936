"""A `route` plugin: refuses messages without a key on the topics whose name
starts with the configured prefix (empty: every topic), and delivers the
others unchanged.

Configuration: the topic prefix, such as `orders`.
Counters: `refused`.

This module is the component: it defines one class per interface of the
world `route-plugin` (wit/plugin.wit), subclassing the bindings that
componentize-py generates at build time (`wit_world`), and uses the host's
`log` and `metrics`. The decisions are in logic.py, which the tests run
without the component runtime.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, metrics, types

import logic

# Module globals live as long as the instance.
state = {"prefix": ""}


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        try:
            state["prefix"] = logic.parse_config(config)
        except ValueError as e:
            # The error result: the node refuses the binding.
            raise Err(str(e))
        log.log(log.Level.INFO, f'requiring keys on topics starting with "{state["prefix"]}"')


class Route(exports.Route):
    def route(self, msg: types.Message) -> types.RouteDecision:
        reason = logic.refusal(state["prefix"], msg)
        if reason is None:
            return types.RouteDecision_Deliver()
        metrics.add("refused", 1)
        return types.RouteDecision_Drop(reason)
