"""Cutouts: every object of a work unit cut out of every band onto one common pixel grid.

``resample`` holds the geometry (local affine maps from each tile's WCS, a box filter that
matches pixel scales); ``actor`` is the Ray Data actor that reads only the needed pixels of
each tile, calibrates them to nanomaggies, normalises and flags edges, NaNs and missing bands.
"""
