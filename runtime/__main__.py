"""`python -m runtime CONFIG.yml`: the same as `regent CONFIG.yml`."""

import sys

from runtime.cli import main

sys.exit(main())
