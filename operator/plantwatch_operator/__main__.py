"""`python -m plantwatch_operator`: the same as `plantwatch operator`."""

import sys

from plantwatch.cli import main

sys.exit(main(["operator", *sys.argv[1:]]))
