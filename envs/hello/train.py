"""A tiny script for `envbuild run envs/hello envs/hello/train.py`."""

import os
import sys

print(os.environ.get("MESSAGE", "no MESSAGE"), *sys.argv[1:])
