"""Checkpoint and restore: everything that saves a job and brings it back.

- ``pipeline``: the generic runner: named phases, each with an undo, run in
  order; on a failure or an interruption the undos of what ran are called in
  reverse order.
- ``engine``: ``GpuEngine``, what the pipeline needs from a GPU checkpoint
  mechanism, and ``InterceptEngine``, the interposer's controller reached over
  its control socket.
- ``dump`` / ``restore``: the CLI's dump and restore as lists of phases.
- ``gpu_state``: the controller's side of the intercept engine (its GPU state
  to and from a checkpoint directory).
- ``criu``: locating and running CRIU.

Importing this package imports none of its modules: the controller must be
able to use ``gpu_state`` without loading the CLI's side.
"""
