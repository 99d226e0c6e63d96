"""raycat: photometric-redshift catalogs from multi-survey images, on Ray.

Rooms by concern, in data-flow order; imports run one way, from each line to the ones above:

- contracts and plumbing: ``errors``, ``schema`` (every column, flag and on-disk name),
  ``fsutil``, ``healpix``, ``stats`` (robust scatter), ``section``, ``runtime``
- ``surveys``: bands, tile stores, FITS conventions, tilings
- ``config``: the YAML config, composed of each room's section
- ``sky``: the mock sky
- ``plan``: object lists and the manifest of work units
- ``cutouts``: tiles to cutouts
- ``photoz``: model, training, inference, attributions
- ``catalog``: the HATS catalog, written and read
- ``quality``: evaluation, report, baseline, cross-survey checks
- ``pipeline``, ``cli``, ``demo``: the only modules that know the order of the stages
"""

__version__ = "0.1.0"
