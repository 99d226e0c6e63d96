"""Checks on what raycat produced and on what it was given.

``evaluate`` scores a catalog against truth redshifts; ``report`` writes the HTML report;
``baseline`` is the catalog-photometry model the CNN is compared with; ``crosscheck`` (with
``detect``) checks that two surveys agree on a field's astrometry and fluxes; ``plots`` writes
the figures of ``evaluate`` and ``report``.
"""
