"""`ray job submit -- python /home/ray/raycat/jobs/simulate.py ...` runs `raycat simulate`.

cluster.yaml installs raycat into every node's container and puts jobs/ there, hence no
--working-dir (docs/cluster.md). Under `ray job submit` RAY_ADDRESS is set and raycat joins
that cluster and draws the tiles in Ray tasks on the workers, not on the head; run directly,
the same file simulates in this process.
"""

from raycat.cli import run_job

run_job("simulate")
