"""`python -m muxtui` runs the command line."""

import sys

from muxtui.cli import main

sys.exit(main())
