"""Process-lifecycle hooks of the rate-limit module (placeholder until it lands)."""


def prefork(shared, config):
    pass


def postfork(services, config):
    pass


def reconfigure(services, config):
    pass


async def close(services):
    pass
