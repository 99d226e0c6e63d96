"""The instruments and where their pixels live.

Band and survey definitions as data (``bands``: calibration, file layout, depths), surveys
added or overridden in the config (``config``), the tile store with its retries (``store``,
``retry``), FITS formats and pixel conventions (``fits_layout``, ``pixels``), tile footprints
(``footprint``), the TAN projection (``tan``: tilings and cutout grids), computed real tilings
(``tiling``) and the header indexer that writes a tile index for an existing store
(``indexer``). Needs only the top-level contracts.
"""
