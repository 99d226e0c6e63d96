"""`ray job submit --working-dir . -- python jobs/evaluate.py ...` runs `raycat evaluate`.

Under `ray job submit` RAY_ADDRESS is set and raycat joins that cluster; run directly, the
same file starts a local Ray.
"""

from raycat.cli import run_job

run_job("evaluate")
