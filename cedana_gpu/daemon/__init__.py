"""The cedana daemon: a gRPC API (``proto/daemon.proto``) over the same library
functions the CLI calls in-process.

    proto/       the service definition and its generated Python stubs
    ops.py       the operations (run, dump, restore, list, ...) on the library
    convert.py   library objects to and from the API's messages
    client.py    the CLI's side: one ``Backend``, in-process (here) or the daemon (remote.py)
    wire.py      metadata keys and the error both ends share
    server.py    ``cedana daemon start``: the service, its socket, its operations
    periodic.py  periodic checkpoints with retention
    health.py    ``cedana check``
"""
