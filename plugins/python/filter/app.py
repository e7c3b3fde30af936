"""Example plugin (`filter`) in Python: keeps the messages whose JSON
payload has a field equal to a configured value, and skips the others.

Configuration (JSON):

    {"field": "level", "value": "error"}

* `field` (required): the top-level payload field to compare.
* `value` (required): the value to keep (any JSON value; compared as JSON).

A payload that is not a JSON object, or that lacks the field, is skipped.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

config = {}


class Lifecycle(exports.Lifecycle):
    def init(self, cfg: str) -> None:
        try:
            c = json.loads(cfg)
        except ValueError as e:
            raise Err(f"the configuration is not JSON: {e}")
        if not isinstance(c, dict) or not isinstance(c.get("field"), str) or "value" not in c:
            raise Err('the configuration must be {"field": "<name>", "value": <JSON value>}')
        config.clear()
        config.update(c)


class Filter(exports.Filter):
    def filter(self, msg: types.Message) -> types.FilterDecision:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return types.FilterDecision_Skip()
        if isinstance(doc, dict) and config["field"] in doc and doc[config["field"]] == config["value"]:
            return types.FilterDecision_Keep()
        return types.FilterDecision_Skip()
