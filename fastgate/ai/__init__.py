"""The AI gateway: one OpenAI-compatible endpoint over every provider (SPEC "AI gateway").

    providers/     one adapter per provider type: the OpenAI request translated to the
                   provider's wire format and its answers (plain and streamed) back to
                   OpenAI's, with the provider's own usage counts (pure code, no I/O)
    sse.py         incremental server-sent-events parser
    client.py      a provider HTTP call over the upstream pools (keep-alive, TLS, timeouts)
    target.py      the ``ai:`` route target: chat, embeddings, models, prompt routes,
                   fallbacks, streaming relay, usage settlement (registered in targets/)
"""
