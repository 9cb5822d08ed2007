"""``python -m ovseg_ros.eval.cli ...``: the ovseg-eval CLI."""
import sys

from . import main

sys.exit(main())
