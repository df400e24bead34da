"""The muxtui engine: config, backends, warm local servers and history, with no UI.

Kept import-light on purpose: importing `engine` pulls in nothing but the standard library.
"""

import sys

# httpx imports its command line (click, pygments, rich) whenever those are installed: that
# triples its import time and loads a UI library the engine never uses. This package runs
# before any of its modules, so whichever of them imports httpx first, httpx finds its
# command line absent and keeps the stub it ships for that case.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
