import sys

from runtime.ctl.cli import main

sys.exit(main())
