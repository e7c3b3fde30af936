import unittest
from types import SimpleNamespace

import logic


def message(payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return SimpleNamespace(topic="alerts", key=None, headers=[], payload=payload, timestamp_ms=0)


class FilterTest(unittest.TestCase):
    def test_keeps_messages_with_the_word(self):
        word = logic.parse_config(" urgent ")
        self.assertTrue(logic.keep(word, message("urgent: disk full")))
        self.assertFalse(logic.keep(word, message("all quiet")))
        self.assertFalse(logic.keep(word, message(b"\xff\xfe")))

    def test_an_empty_word_keeps_every_message(self):
        self.assertTrue(logic.keep(logic.parse_config(""), message("anything")))


if __name__ == "__main__":
    unittest.main()
