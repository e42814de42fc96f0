"""``python -m cedana_gpu``: the ``cedana`` command."""

from cedana_gpu.cli import main

raise SystemExit(main())
