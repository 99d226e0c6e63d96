"""Planning: which objects go into which work unit, and which tiles each needs.

Object lists are read and checked (``objects``), grouped into HEALPix work units and assigned
the tiles that hold them in every band (``manifest``); small plans made in the driver enter Ray
Data through a lazy source (``frame_source``). The manifest is the only thing the cutout stage
is given.
"""
