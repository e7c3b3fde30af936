"""A `filter` plugin: writes to the subscriber only the messages whose
payload contains the configured word (empty: every message).

Configuration: the word, such as `urgent`. A subscriber may give its own
with `filter_config`.
Counters: `kept`, `skipped`.

This module is the component: it defines one class per interface of the
world `filter-plugin` (wit/plugin.wit), subclassing the bindings that
componentize-py generates at build time (`wit_world`), and uses the host's
`metrics`. The decisions are in logic.py, which the tests run without the
component runtime.
"""

from wit_world import exports
from wit_world.imports import metrics, types

import logic

# Module globals live as long as the instance.
state = {"word": ""}


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        state["word"] = logic.parse_config(config)


class Filter(exports.Filter):
    def filter(self, msg: types.Message) -> types.FilterDecision:
        if logic.keep(state["word"], msg):
            metrics.add("kept", 1)
            return types.FilterDecision_Keep()
        metrics.add("skipped", 1)
        return types.FilterDecision_Skip()
