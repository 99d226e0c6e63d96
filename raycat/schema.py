"""Every column name, flag bit, metadata key and on-disk name raycat uses, in one place."""

from __future__ import annotations

import posixpath
import re
from enum import IntFlag

from raycat.errors import StorePathError

# --- mock sky / tile store layout -------------------------------------------------------
TRUTH_FILE = "truth.parquet"  # the target galaxies (the object list, with spectroscopic z)
SOURCES_FILE = "sources.parquet"  # every source drawn: targets, stars, faint neighbours
TILE_INDEX_FILE = "tiles.parquet"
TILES_DIR = "tiles"


def tile_relpath(survey: str, tile: str, band: str) -> str:
    """Path of one band of one tile, relative to the store root."""
    return f"{TILES_DIR}/{survey}/{tile}/{tile}.{band}.fits"


_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def relative_tile_uri(uri: str) -> str:
    """The normalised form of a tile URI from an index; raises StorePathError unless it stays
    inside its store: non-empty, relative, no scheme, no backslash or ``~``, no '..' escape.

    The one rule for every index row and every read, so a manifest cannot make a store read
    elsewhere.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise StorePathError(f"tile uri must be a non-empty relative path, got {uri!r}")
    if uri.startswith(("/", "~")) or "\\" in uri or _URL_SCHEME.match(uri):
        raise StorePathError(f"tile uri {uri!r} escapes its store: index URIs must be relative")
    normal = posixpath.normpath(uri)
    if normal in (".", "..") or normal.startswith("../"):
        raise StorePathError(f"tile uri {uri!r} escapes its store root")
    return normal


# Computed real tilings (raycat/surveys/tiling.py): default URI templates, relative to a store that
# mirrors the archive layout. Fields: {tile} (tile name), {filter} (band name without the
# survey prefix: "w1", "g"), and per tiling {projcell} {skycell} (PS1).
UNWISE_URI_TEMPLATE = "{tile:.3}/{tile}/unwise-{tile}-{filter}-img-m.fits"
PS1_URI_TEMPLATE = (
    "rings.v3.skycell/{projcell:04d}/{skycell:03d}/"
    "rings.v3.skycell.{projcell:04d}.{skycell:03d}.stk.{filter}.unconv.fits"
)
INDEX_FILE_PATTERN = "*.fits*"  # what `raycat index` lists by default (.fits, .fits.gz, .fits.fz)
# Endings of a FITS file name, compression included: stripped (repeatedly) to name a tile.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".gz", ".bz2")


# --- object table -------------------------------------------------------------------------
ID = "id"
RA = "ra"
DEC = "dec"
Z_SPEC = "z_spec"
HEALPIX_29 = "_healpix_29"  # HATS spatial index column (nested, order raycat.healpix.ORDER)

# --- truth table (mock sky) ---------------------------------------------------------------
TRUTH_Z = "z"
TRUTH_SED = "sed"  # SED type of the galaxy (E, Sbc, Scd, Im) or "star"
TRUTH_KIND = "kind"  # "galaxy", "star" or "neighbour"
TRUTH_HLR = "hlr_arcsec"  # half-light radius
# mock-sky extras (raycat/sky/population.py documents the model behind them)
TRUTH_POPULATION = "population"  # "bright", "lrg", "elg", "neighbour" or "star"
TRUTH_ABS_MAG_R = "abs_mag_r"  # rest-frame PS1 r absolute AB magnitude
TRUTH_BULGE_FRAC = "bulge_frac"  # bulge share of the rest-frame r light
TRUTH_HLR_BULGE = "hlr_bulge_arcsec"
TRUTH_HLR_DISK = "hlr_disk_arcsec"
TRUTH_Q_BULGE = "q_bulge"  # axis ratios b/a
TRUTH_Q_DISK = "q_disk"
TRUTH_PA = "pa_deg"  # position angle of the major axis, degrees east of north
TRUTH_TEFF = "teff_k"  # stars: blackbody temperature
MOCK_SKY_META_FILE = "mock_sky.json"  # the parameters a mock sky was made with


def truth_mag(band: str) -> str:
    """Truth column with the AB magnitude of the object in ``band``."""
    return f"mag_{band}"


# --- tile index ---------------------------------------------------------------------------
TILE_SURVEY = "survey"
TILE_BAND = "band"
TILE_NAME = "tile"
TILE_URI = "uri"  # relative to the store root (never absolute, never escaping it)
TILE_NAXIS1 = "naxis1"
TILE_NAXIS2 = "naxis2"
TILE_RA = "ra_center"
TILE_DEC = "dec_center"
TILE_RADIUS = "radius_deg"  # circle enclosing the tile
TILE_CORNERS_RA = "corners_ra"  # 4 corners, pixel order (0,0) (nx,0) (nx,ny) (0,ny)
TILE_CORNERS_DEC = "corners_dec"
TILE_ROTATION = "rotation_deg"  # position angle of the tile's +y axis east of north
TILE_WCS = "wcs"  # the tile's WCS as a FITS header string, so planning needs no tile reads

# --- cutout rows --------------------------------------------------------------------------
CUBE = "cube"  # float32 [n_bands, S, S]
FLAGS = "flags"
WORK_UNIT = "work_unit"


def tile_column(band: str) -> str:
    """Manifest column with the tile URI an object is cut from in ``band`` ("" if none)."""
    return f"tile_{band}"


class Flag(IntFlag):
    """Per-object quality bits, OR-ed together in the ``flags`` column."""

    EDGE = 1  # cutout overlaps a tile edge in some band; outside pixels are filled
    NAN_PIXELS = 2  # masked (NaN) pixels inside the cutout in some band; filled
    MISSING_BAND = 4  # no tile holds the object in some band; that band is zero
    READ_ERROR = 8  # a tile could not be read (corrupt, truncated, unreachable)
    OFF_FOOTPRINT = 16  # no tile holds the object in any band; no cutout
    NO_PREDICTION = 32  # no usable pixels, so no PDF (null) in the catalog
    DUPLICATE_ID = 64  # id seen before in the input; kept once by config


# --- catalog ------------------------------------------------------------------------------
PDF = "pdf"
Z_MEAN, Z_MODE, Z_MEDIAN, Z_STD = "z_mean", "z_mode", "z_median", "z_std"
Z_LO68, Z_HI68 = "z_lo68", "z_hi68"
Z_STD_EPISTEMIC = "z_std_epistemic"
ATTR_BASELINE = "attr_baseline"
POINT_ESTIMATES = (Z_MEAN, Z_MODE, Z_MEDIAN, Z_STD, Z_LO68, Z_HI68)


def attr_column(player: str) -> str:
    """Catalog column with the Shapley attribution of one band or survey."""
    return f"attr_{player}"


# --- columns handed between stages (cutouts -> predictor -> sink -> catalog) --------------
# An object's own columns ride through the cutout actor and the predictor unchanged, beside
# the columns each one makes (cutouts: flags, cube; predictor: flags, pdf and its extras).
PASS_THROUGH = (ID, RA, DEC, Z_SPEC, WORK_UNIT, HEALPIX_29)
# Catalog columns the writer derives from id, ra, dec, flags and pdf. The sink copies every
# other column of the catalog schema (z_spec, z_std_epistemic, attr_*) from the predictor.
CATALOG_DERIVED = (ID, RA, DEC, HEALPIX_29, *POINT_ESTIMATES, PDF, FLAGS)


# Parquet schema metadata keys (bytes, as Arrow stores them)
META_BIN_EDGES = b"raycat.bin_edges"
META_BANDS = b"raycat.bands"
META_MODEL_ID = b"raycat.model_id"
META_CONFIG_HASH = b"raycat.config_hash"
META_VERSION = b"raycat.version"

# Catalog layout (HATS). Paths are relative to the catalog root; the writer makes them, the
# readers and a resumed writer find them again, so each name and pattern is written once here.
CATALOG_DATASET_DIR = "dataset"
DONE_DIR = "_raycat_done"  # one small JSON marker (rows, model_id) per finished partition
PARTITION_INFO_FILE = "partition_info.csv"
PROPERTIES_FILES = ("hats.properties", "properties")  # hats' name, and its older one
METADATA_RELPATH = f"{CATALOG_DATASET_DIR}/_metadata"
COMMON_METADATA_RELPATH = f"{CATALOG_DATASET_DIR}/_common_metadata"
# What makes a catalog root "existing", and every entry overwrite removes (never the root
# itself: a mistyped root must not delete a user's directory).
CATALOG_MARKS = (CATALOG_DATASET_DIR, DONE_DIR, *PROPERTIES_FILES)
CATALOG_ENTRIES = (
    *CATALOG_MARKS,
    PARTITION_INFO_FILE,
    "point_map.fits",
    "skymap.fits",
    "data_thumbnail.parquet",
)
PARTITION_GLOB = f"{CATALOG_DATASET_DIR}/Norder=*/Dir=*/Npix=*.parquet"
PARTITION_RE = re.compile(r"Norder=(\d+)/Dir=(\d+)/Npix=(\d+)\.parquet$")
DONE_MARKER_RE = re.compile(r"Norder=(\d+)_Npix=(\d+)\.done$")
TEMP_SUFFIX = ".tmp"  # a partition being written: ".<name>.<random><TEMP_SUFFIX>", beside it
PARTITION_TEMP_GLOB = f"{CATALOG_DATASET_DIR}/Norder=*/Dir=*/.*{TEMP_SUFFIX}"


def partition_relpath(order: int, pixel: int) -> str:
    """HATS partition path, relative to the catalog root."""
    directory = (pixel // 10_000) * 10_000
    return f"{CATALOG_DATASET_DIR}/Norder={order}/Dir={directory}/Npix={pixel}.parquet"


def partition_of(path: str) -> tuple[int, int] | None:
    """(order, pixel) of a partition path (absolute or relative), None if it is not one:
    the inverse of :func:`partition_relpath`, so listing a catalog needs no other rule."""
    match = PARTITION_RE.search(path)
    return (int(match.group(1)), int(match.group(3))) if match else None


def done_marker_relpath(order: int, pixel: int) -> str:
    """Path of a partition's done marker, relative to the catalog root."""
    return f"{DONE_DIR}/Norder={order}_Npix={pixel}.done"


def done_marker_of(path: str) -> tuple[int, int] | None:
    """(order, pixel) of a done marker path, None if it is not one: the inverse of
    :func:`done_marker_relpath`, so a resumed writer finds exactly what it marked."""
    match = DONE_MARKER_RE.search(path)
    return (int(match.group(1)), int(match.group(2))) if match else None


# Model artifact
MODEL_WEIGHTS_FILE = "model.pt"
MODEL_META_FILE = "model.json"
