"""Cloud Tasks over gRPC: Google's message types in, the same ``Emulator`` and JSON rules as REST behind.

Each method turns its request message into the REST JSON shape (``json_format``'s, by ``tojson``), calls the same
functions the REST handlers call, and turns their JSON answer back into the response message, so
both transports validate, store and word errors alike.
"""
