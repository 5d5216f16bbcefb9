"""`python -m govmail.cli`: the same as the `govmail` command."""

import sys

from . import main

sys.exit(main())
