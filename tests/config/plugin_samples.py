"""Plugin classes for the plugin config tests (reached through a test-made entry point)."""


class AddTenant:
    schema = {"type": "object", "required": ["header"], "additionalProperties": False,
              "properties": {"header": {"type": "string"},
                             "weight": {"type": "integer", "minimum": 1},
                             "tags": {"type": "array", "items": {"type": "string"}},
                             "token": {"type": "string", "pattern": "^tok-"}}}

    def __init__(self, config):
        self.header = config["header"]


class NoSchema:
    pass


class BadSchema:
    schema = {"type": "objekt"}


class TextSchema:
    schema = "{\"type\": \"object\"}"


def not_a_class(config):
    return None
