"""A policy package as a new built-in one would look (used by test_config_sections.py): the
handler here, its config beside it in config.py."""


def build(route_cfg, services):
    return None
