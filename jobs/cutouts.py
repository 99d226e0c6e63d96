"""`ray job submit -- python /home/ray/raycat/jobs/cutouts.py ...` runs `raycat cutouts`.

cluster.yaml installs raycat into every node's container and puts jobs/ there, hence no
--working-dir (docs/cluster.md). Under `ray job submit` RAY_ADDRESS is set and raycat joins
that cluster; run directly, the same file starts a local Ray.
"""

from raycat.cli import run_job

run_job("cutouts")
