"""``python -m loopline`` is the same CLI as the ``loopline`` console script."""

from loopline.cli import main

raise SystemExit(main())
