"""`python -m minidt ...` is `minidt ...`."""

import sys

from minidt.cli import main

sys.exit(main())
