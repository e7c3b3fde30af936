import unittest
from types import SimpleNamespace

import logic


def member(id, zone, inflight):
    return SimpleNamespace(
        id=id, inflight=inflight, weight=1, labels=[SimpleNamespace(name="zone", value=zone)]
    )


class PickTest(unittest.TestCase):
    def test_prefers_the_least_loaded_member_of_the_zone(self):
        zone = logic.parse_config("eu-1")
        members = [member("a", "us-1", 0), member("b", "eu-1", 5), member("c", "eu-1", 2)]
        self.assertEqual(logic.choose(zone, members), 2)
        self.assertIsNone(logic.choose(zone, members[:1]))
        self.assertIsNone(logic.choose(zone, []))

    def test_refuses_an_empty_zone(self):
        with self.assertRaisesRegex(ValueError, "must name a zone"):
            logic.parse_config(" ")


if __name__ == "__main__":
    unittest.main()
