"""``python -m ovseg_ros.tools.bench ...``: ovseg-bench."""
import sys

from . import main

sys.exit(main())
