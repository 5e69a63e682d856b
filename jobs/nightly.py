"""Ray job: ``ray job submit --working-dir . -- python jobs/nightly.py --model M --input I --table T``.

Schedule it nightly (cron, Airflow, ...): the default run id is ``nightly-<UTC date>``, so a retried
submission after a crash continues after the last committed chunk (``--commit-every`` rows each) and
finishes that night's work exactly once; a submission after the run completed classifies only the rows no
run committed for this model (new images, a new model), as the day's next run ``nightly-<UTC date>.2``, ...
"""

import sys

from plantray.cli import main

if __name__ == "__main__":
    sys.exit(main(["nightly", *sys.argv[1:]]))
