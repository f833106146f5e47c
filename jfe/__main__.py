import sys

from jfe.cli import run

sys.exit(run())
