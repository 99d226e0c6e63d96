"""raycat: photometric-redshift catalogs from multi-survey images, on Ray."""

__version__ = "0.1.0"
