"""The output catalog: HEALPix-partitioned Parquet in the HATS layout, a contract with its plan.

``write`` builds each partition's table and writes it whole with its done marker
(``markers``: objects, id hash, model, config); ``sink`` is the Ray actor that collects a
partition's rows and calls the writer; ``metadata`` writes the HATS metadata atomically;
``read`` streams partitions back. A job's hold on a catalog is ``job``: its ``lease`` (one
writer at a time), the comparison of plan and markers a resume makes (``resume``, ``region``)
and the versions an overwrite switches (``versions``); ``atomic`` removes only what raycat wrote.
Partitions are of mixed HEALPix orders, each known by its NUNIQ key (``keys``).
"""
