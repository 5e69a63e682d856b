"""Ray job: ``ray job submit --working-dir . -- python jobs/classify.py --model M --input I --output O``."""

import sys

from plantray.cli import main

if __name__ == "__main__":
    sys.exit(main(["classify", *sys.argv[1:]]))
