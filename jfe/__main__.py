import sys

from jfe.cli import main

sys.exit(main())
