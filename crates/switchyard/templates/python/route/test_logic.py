import unittest
from types import SimpleNamespace

import logic


def message(topic, key=None):
    return SimpleNamespace(topic=topic, key=key, headers=[], payload=b"", timestamp_ms=0)


class RouteTest(unittest.TestCase):
    def test_refuses_keyless_messages_under_the_prefix(self):
        prefix = logic.parse_config("orders")
        self.assertEqual(
            logic.refusal(prefix, message("orders.eu")), "messages on orders.eu need a key"
        )
        self.assertIsNone(logic.refusal(prefix, message("orders.eu", "customer-7")))
        self.assertIsNone(logic.refusal(prefix, message("audit")))

    def test_an_empty_prefix_covers_every_topic(self):
        self.assertIsNotNone(logic.refusal(logic.parse_config(""), message("audit")))

    def test_refuses_a_prefix_with_whitespace(self):
        with self.assertRaisesRegex(ValueError, "contains whitespace"):
            logic.parse_config("a b")


if __name__ == "__main__":
    unittest.main()
