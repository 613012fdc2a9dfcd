"""python -m impnb.golden: see impnb.golden."""
import sys

from . import main

sys.exit(main())
