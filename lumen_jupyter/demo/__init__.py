"""The demo models: a local OpenAI-compatible upstream that can be told to misbehave.

Lumen needs an upstream that works with no account, no network and no cost.  The
embedded default configuration points the gateway at this one (the Jupyter server
runs it in its own event loop on a loopback port), and tests and benchmarks run it
in-process or as a subprocess (``python -m lumen_jupyter.demo.backend --port 0``).
It can be told to misbehave - slow, failing, hanging, cut-short or garbled answers
(:mod:`.faults`) - so the gateway's error handling is tested against a real socket.

It is not part of the gateway: it stands where a provider would, imports nothing
of :mod:`lumen_jupyter.gateway` or :mod:`lumen_jupyter.server`, and only the
server's embedded default, the tests and the benchmarks import it.
"""
