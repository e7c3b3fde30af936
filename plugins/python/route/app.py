"""Example plugin (`route`) in Python: reroutes a JSON message to a
sub-topic named after one of its fields, such as `orders` to `orders.eu`.

Configuration (JSON, all keys optional):

    {"field": "region", "prefix": "orders", "print": false}

* `field`: the top-level payload field to read (default `region`). A string
  is used as is, an integer in decimal.
* `prefix`: the topic to append the value to (default: the message's own
  topic). The message goes to `<prefix>.<value>`.
* `print`: write each decision to stdout, which lands in the binding's log.

A payload that is not a JSON object, a missing field, or a value that is
not a valid topic token (ASCII letters, digits, `-`, `_`) delivers the
message on its own topic.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

MAX_TOPIC_LEN = 255
TOKEN = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")

config = {"field": "region", "prefix": None, "print": False}


def segment(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and value and set(value) <= TOKEN:
        return value
    return None


class Lifecycle(exports.Lifecycle):
    def init(self, cfg: str) -> None:
        if not cfg.strip():
            return
        try:
            c = json.loads(cfg)
        except ValueError as e:
            raise Err(f"the configuration is not JSON: {e}")
        if not isinstance(c, dict):
            raise Err("the configuration must be a JSON object")
        unknown = set(c) - set(config)
        if unknown:
            raise Err(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        if not isinstance(c.get("field", "region"), str):
            raise Err("`field` must be a string")
        config.update(c)


class Route(exports.Route):
    def route(self, msg: types.Message) -> types.RouteDecision:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            doc = None
        seg = segment(doc.get(config["field"])) if isinstance(doc, dict) else None
        if seg is None:
            return types.RouteDecision_Deliver()
        topic = f"{config['prefix'] or msg.topic}.{seg}"
        if len(topic) > MAX_TOPIC_LEN:
            return types.RouteDecision_Deliver()
        if config["print"]:
            print(f"route: {msg.topic} -> {topic}")
        return types.RouteDecision_Reroute([topic])
