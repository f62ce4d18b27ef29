"""`python -m softgen ...`: the command line (softgen.cli)."""
import sys

from .cli import main

sys.exit(main())
