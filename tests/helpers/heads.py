"""A parser handler that keeps the request heads the gateway's parser makes (policy tests
build their contexts from real RequestHeads)."""


class HeadRecorder:
    def __init__(self):
        self.heads = []

    def on_request(self, head):
        self.heads.append(head)

    def on_body(self, data):
        pass

    def on_request_complete(self):
        pass
