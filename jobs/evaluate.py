"""Ray job: ``ray job submit --working-dir . -- python jobs/evaluate.py --model M --test NAME=DATA --output R``."""

import sys

from plantray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
