"""The daemon's API: ``daemon.proto`` and the stubs generated from it (committed).

Regenerate with ``python -m cedana_gpu.daemon.proto.generate`` after editing
the ``.proto``; tests/test_daemon_proto.py fails while the committed stubs
differ from what it generates.
"""
