"""The mock sky: a seeded synthetic multi-survey sky to develop and test against.

A galaxy population with physical SEDs (``sed``, ``population``), each survey's tiles laid out
(``tiles``) and drawn with GalSim (``draw``), written by ``simulate.simulate_sky`` as FITS tiles
with WCS, a truth catalog and a tile index: the same inputs a real survey gives the planner.
A domain (``domains``) sets the observing setup (PSFs, depths, SED mix) and the Milky Way
E(B-V) field (``extinction``) that dims every band.
Uses the survey definitions; nothing downstream imports it.
"""
