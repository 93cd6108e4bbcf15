"""``python -m lumen_jupyter.service``: the standalone lumen service (``jupyter lumen serve``)."""

from .app import main

raise SystemExit(main())
