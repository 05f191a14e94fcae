"""`python -m sdbake` is the `sdbake` command."""
import sys

from sdbake.runner.cli import main

sys.exit(main())
