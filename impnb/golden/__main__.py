"""python -m impnb.golden: see impnb/golden/cli.py."""
import sys

from .cli import main

sys.exit(main())
