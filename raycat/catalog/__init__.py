"""The output catalog: HEALPix-partitioned Parquet in the HATS layout.

``write`` builds each partition's table and writes it with a done marker (so a crashed job
resumes) and the HATS metadata at the end; ``sink`` is the Ray actor that collects a
partition's rows and calls the writer; ``read`` streams partitions back and reads the
catalog's metadata.
"""
