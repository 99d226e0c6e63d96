"""Id hashes: integer ids keep the values every existing catalog's done markers and splits were
made with; text ids hash by their UTF-8 bytes, the same in every process and run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from raycat.photoz.train import is_validation
from raycat.plan.idhash import format_hash, id_hashes, id_keys, id_set_hash

INT_IDS = np.array([1, 42, 2**62, -7, 1237648720693755918], dtype=np.int64)
TEXT_IDS = ["Gaia DR3 4295806720", "1237648720693755918", "a/b c", "Ünïcødé ✓"]


def test_integer_ids_keep_their_hashes_splits_and_seeds():
    # literal values computed with raycat before text ids were taken (commit 0084a58)
    assert id_hashes(INT_IDS).tolist() == [
        6238072747940578789,
        12058926934050108962,
        1360429390938723525,
        15824578273388328691,
        12387251699171935704,
    ]
    assert format_hash(id_set_hash(INT_IDS)) == "9851c57acb910d97"
    for ids in (np.array([5, 6], np.uint64), [5, 6], np.array([5, 6], dtype=object)):
        assert format_hash(id_set_hash(ids)) == "883668d52f337948"
    first20 = np.arange(1, 21)
    assert np.flatnonzero(is_validation(first20, 0.3, 0)).tolist() == [1, 4, 9, 12, 14, 17]
    assert np.flatnonzero(is_validation(first20, 0.3, 7)).tolist() == [2, 5, 7, 10, 15, 18]
    # the Predictor's per-batch seed: the ids' sum as uint64, modulo 2^63
    assert int(np.sum(id_keys(INT_IDS), dtype=np.uint64) % np.uint64(2**63)) == (
        5849334739121143858
    )


TEXT_VALUES = """
import json, sys
import numpy as np
from raycat.photoz.train import is_validation
from raycat.plan.idhash import format_hash, id_hashes, id_keys, id_set_hash

ids = json.loads(sys.argv[1])
print(json.dumps({
    "hashes": id_hashes(np.array(ids, dtype=object)).tolist(),
    "keys": id_keys(np.array(ids)).tolist(),  # a NumPy unicode array: the same text
    "set": format_hash(id_set_hash(ids)),
    "held_out": is_validation(np.array(ids, dtype=object), 0.5, 3).tolist(),
}))
"""


def _text_values(ids: list[str], hash_seed: str) -> dict:
    """The hashes, keys, set hash and split of ``ids``, computed in a fresh interpreter."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}  # Python's str hash() differs by it
    run = subprocess.run(
        [sys.executable, "-c", TEXT_VALUES, json.dumps(ids)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(run.stdout)


def test_text_ids_hash_the_same_in_another_process():
    here = _text_values(TEXT_IDS, "1")
    assert _text_values(TEXT_IDS, "12345") == here
    assert id_hashes(np.array(TEXT_IDS, dtype=object)).tolist() == here["hashes"]
    # and the same values on every run (pinned: a library default must not move them)
    assert here["hashes"] == [
        6771213219278083818,
        6941661721752677195,
        9842827516246689232,
        7510622784463862573,
    ]
    assert here["keys"] == here["hashes"] and here["set"] == "af21c235febe0332"


def test_text_ids_split_and_hash_as_text_not_as_numbers():
    ids = np.array([f"Gaia DR3 {i}" for i in range(4000)], dtype=object)
    held = is_validation(ids, 0.2, 0)
    assert 0.17 < held.mean() < 0.23  # the split's fraction holds for text ids
    assert (held == is_validation(ids[::-1], 0.2, 0)[::-1]).all()  # per id, not per row
    # "123" the text and 123 the integer are different ids: different hashes
    assert id_hashes(np.array(["123"], dtype=object))[0] != id_hashes(np.array([123]))[0]
    assert id_set_hash(["00123"]) != id_set_hash(["123"])
