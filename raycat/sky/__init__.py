"""The mock sky: a seeded synthetic multi-survey sky to develop and test against.

A galaxy population with physical SEDs (``sed``, ``population``), each survey's tiles laid out
(``tiles``) and drawn with GalSim (``draw``), written by ``simulate.simulate_sky`` as FITS tiles
with WCS, a truth catalog and a tile index: the same inputs a real survey gives the planner.
Uses the survey definitions; nothing downstream imports it.
"""
