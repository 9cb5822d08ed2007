"""``python -m ovseg_ros.eval ...`` (and ``torchrun ... -m ovseg_ros.eval ...``): the ovseg-eval
CLI."""
import sys

from .cli import main

sys.exit(main())
