"""Ray job: ``ray job submit --working-dir . -- python jobs/train.py --data D --output M --num-workers 4 --use-gpu``."""

import sys

from plantray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
