"""``python -m hitvideo_bench`` is the ``hitbench`` command (and the form ``torchrun -m`` uses)."""

from .cli import main

raise SystemExit(main())
