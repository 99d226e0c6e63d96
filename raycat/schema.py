"""Every column name, flag bit, metadata key and on-disk name raycat uses, in one place."""

from __future__ import annotations

import hashlib
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
EBV = "ebv"  # Milky Way reddening E(B-V), mag (data.ebv_column): a network input
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
READ_ERROR_TILE = "read_error_tile"  # URI of a tile that gave the object READ_ERROR ("": none)


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
PASS_THROUGH = (ID, RA, DEC, Z_SPEC, EBV, WORK_UNIT, HEALPIX_29, READ_ERROR_TILE)
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
DONE_DIR = "_raycat_done"  # one small JSON marker per finished partition (catalog/markers.py)
LEASE_FILE = "_raycat_lease.json"  # the one writer's lease (catalog/lease.py)
SWAP_JOURNAL = "_raycat_swap.json"  # an overwrite switching versions (catalog/versions.py)
STAGING_DIR = ".raycat-new"  # the version an overwrite writes beside the catalog
RETIRED_PREFIX = ".raycat-old-"  # + job id: the version an overwrite replaced, until deleted
METADATA_TEMP_PREFIX = ".raycat-meta-"  # + random: HATS metadata prepared, then put in place
PARTITION_INFO_FILE = "partition_info.csv"
PROPERTIES_FILES = ("hats.properties", "properties")  # hats' name, and its older one
HATS_COLLECTION_FILE = "collection.properties"  # a collection: a catalog with its margins
SYNTHETIC_OBJECTS_FILE = "objects-{part:05d}.parquet"  # raycat.sky.objects' list files
METADATA_RELPATH = f"{CATALOG_DATASET_DIR}/_metadata"
COMMON_METADATA_RELPATH = f"{CATALOG_DATASET_DIR}/_common_metadata"
# What makes a catalog root "existing", and the entries of one catalog version (an overwrite
# switches these; never the root itself: a mistyped root must not touch a user's directory).
CATALOG_MARKS = (CATALOG_DATASET_DIR, DONE_DIR, *PROPERTIES_FILES)
HATS_EXTRA_FILES = ("point_map.fits", "skymap.fits", "data_thumbnail.parquet")
CATALOG_ENTRIES = (*CATALOG_MARKS, PARTITION_INFO_FILE, *HATS_EXTRA_FILES)
PARTITION_GLOB = f"{CATALOG_DATASET_DIR}/Norder=*/Dir=*/Npix=*.parquet"
PARTITION_RE = re.compile(r"Norder=(\d+)/Dir=(\d+)/Npix=(\d+)\.parquet$")
DONE_MARKER_RE = re.compile(r"Norder=(\d+)_Npix=(\d+)\.done$")
TEMP_SUFFIX = ".tmp"  # a partition being written: ".<name>.<random><TEMP_SUFFIX>", beside it
PARTITION_TEMP_GLOB = f"{CATALOG_DATASET_DIR}/Norder=*/Dir=*/.*{TEMP_SUFFIX}"
# every place a temp file can be left by a crash: partitions, markers, metadata, root files
TEMP_GLOBS = (
    PARTITION_TEMP_GLOB,
    f"{DONE_DIR}/.*{TEMP_SUFFIX}",
    f"{CATALOG_DATASET_DIR}/.*{TEMP_SUFFIX}",
    f".*{TEMP_SUFFIX}",
)


SKYMAP_RE = re.compile(r"^skymap\.\d+\.fits$")  # HATS' skymap at other orders


def is_private_entry(name: str) -> bool:
    """True for an entry of a catalog root that only raycat's machinery names (lease, swap
    journal, staged or retired version, temp files): it proves nothing about whose the
    catalog is, and no reader looks at it."""
    return (
        name in (LEASE_FILE, SWAP_JOURNAL, STAGING_DIR)
        or name.startswith((RETIRED_PREFIX, METADATA_TEMP_PREFIX))
        or (name.startswith(".") and name.endswith(TEMP_SUFFIX))
    )


def is_catalog_file(relpath: str) -> bool:
    """True for a path (relative to a catalog root) that a raycat catalog consists of:
    partitions, done markers, HATS metadata and properties, temp files. Only these are ever
    deleted; anything else under a catalog is left where it is."""
    name = relpath.rsplit("/", 1)[-1]
    top = relpath.split("/", 1)[0]
    return (
        (top == CATALOG_DATASET_DIR and PARTITION_RE.search(relpath) is not None)
        or (top == DONE_DIR and DONE_MARKER_RE.search(relpath) is not None)
        or relpath in (METADATA_RELPATH, COMMON_METADATA_RELPATH, PARTITION_INFO_FILE)
        or relpath in PROPERTIES_FILES
        or relpath in HATS_EXTRA_FILES
        or SKYMAP_RE.match(relpath) is not None
        or (name.startswith(".") and name.endswith(TEMP_SUFFIX))
    )


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

# Training checkpoints (Ray Train writes them as <storage_path>/<run_name>/checkpoint_<time>/,
# beside files of its own that match the glob too): in each, beside the weights, the settings
# the checkpoint is valid for, so a resume can be checked.
RAY_CHECKPOINT_GLOB = "checkpoint_*"
CHECKPOINT_CONFIG_FILE = "raycat_config.json"

# Materialised cutouts (cutouts.output). One directory of Parquet parts per work unit; the
# plan file, written last, holds the plan summary and its fingerprint (a dataset without it
# is unfinished and never read). A rebuild removes these names and nothing else.
CUTOUTS_PLAN_FILE = "_plan.json"
CUTOUT_UNIT_PREFIX = "unit="


def cutout_unit_relpath(pixel: int) -> str:
    """Directory of one work unit's cutout parts, relative to the dataset root."""
    return f"{CUTOUT_UNIT_PREFIX}{pixel}"


def cutout_part_relpath(pixel: int, first_healpix_29: int, first_id: int | str) -> str:
    """One part of a work unit's cutouts, named by the unit and the part's first object: the
    same rows give the same name, and ids are unique, so two parts never share one.

    An integer id is written as it is; a text id, which can hold anything ('/', '..',
    spaces, any Unicode), by the BLAKE2b hash of its UTF-8 bytes (64 bits, hex), so no id
    can put a part elsewhere or make a name a store refuses."""
    if isinstance(first_id, str):
        digest = hashlib.blake2b(first_id.encode("utf-8"), digest_size=8).hexdigest()
        token = f"h{digest}"
    else:
        token = str(int(first_id))
    return f"{cutout_unit_relpath(pixel)}/part-{first_healpix_29:019d}-{token}.parquet"


# `raycat demo` workdir: the marker says the demo made (or claimed) the directory, so a rerun
# may clean it; a rerun removes the entries below and nothing else.
DEMO_MARKER_FILE = ".raycat-demo"
DEMO_SKY_DIR = "sky"
DEMO_CUTOUTS_DIR = "cutouts"
DEMO_RUNS_DIR = "runs"
DEMO_MODEL_DIR = "model"
DEMO_CATALOG_DIR = "catalog"
DEMO_REPORT_DIR = "report"
DEMO_CONFIG_FILE = "config.yaml"
DEMO_HELD_OUT_FILE = "heldout_truth.parquet"
DEMO_ENTRIES = (
    DEMO_SKY_DIR,
    DEMO_CUTOUTS_DIR,
    DEMO_RUNS_DIR,
    DEMO_MODEL_DIR,
    DEMO_CATALOG_DIR,
    DEMO_REPORT_DIR,
    DEMO_CONFIG_FILE,
    DEMO_HELD_OUT_FILE,
)


# --- partitioned tile index (raycat/surveys/tile_index.py) --------------------------------
# <index>/_tile_index.json (written last: names the builds that make the index) and
# <index>/build-<hex>/npix=<pixel>/part-<chunk>.parquet, one directory per HEALPix pixel
# (nested, order in the metadata) holding every tile row whose footprint may overlap it.
TILE_INDEX_DIR = "tile_index"  # the partitioned index under a store (preferred to tiles.parquet)
TILE_INDEX_META_FILE = "_tile_index.json"
TILE_INDEX_BUILD_PREFIX = "build-"  # + 32 hex digits: one writer run (a survey, a store)
TILE_INDEX_BUILD_RE = re.compile(r"^build-[0-9a-f]{32}$")
TILE_INDEX_PIXEL_KEY = "npix"  # hive-style partition key of the pixel directories
TILE_INDEX_PART_RE = re.compile(r"part-(\d+)\.parquet$")
# The WCS as numbers beside TILE_WCS, so a plain TAN tile needs no header parse: FITS CRVAL
# (deg), CRPIX (1-based px), CD = PC x CDELT (deg/px), and whether the projection is plain
# TAN (RA---TAN/DEC--TAN, LONPOLE 180, no SIP or distortion tables) that these numbers
# describe exactly; other projections are evaluated with astropy from TILE_WCS.
TILE_CRVAL1, TILE_CRVAL2 = "wcs_crval1", "wcs_crval2"
TILE_CRPIX1, TILE_CRPIX2 = "wcs_crpix1", "wcs_crpix2"
TILE_CD11, TILE_CD12, TILE_CD21, TILE_CD22 = "wcs_cd1_1", "wcs_cd1_2", "wcs_cd2_1", "wcs_cd2_2"
TILE_PLAIN_TAN = "wcs_plain_tan"
TILE_WCS_NUMBERS = (
    TILE_CRVAL1,
    TILE_CRVAL2,
    TILE_CRPIX1,
    TILE_CRPIX2,
    TILE_CD11,
    TILE_CD12,
    TILE_CD21,
    TILE_CD22,
)


def tile_index_part_relpath(build: str, pixel: int, chunk: int) -> str:
    """One part of a pixel's rows, relative to the index root: a writer's chunk ``chunk``
    writes one part into each pixel it touches, so parts never collide."""
    return f"{build}/{TILE_INDEX_PIXEL_KEY}={pixel}/part-{chunk:06d}.parquet"


def tile_index_pixel_relpath(build: str, pixel: int) -> str:
    """The directory of one pixel's parts in one build, relative to the index root."""
    return f"{build}/{TILE_INDEX_PIXEL_KEY}={pixel}"


# --- HATS name, default columns and margin of a catalog (catalog/metadata.py, margin.py) ---
# The catalog's HATS name (hats.properties obs_collection): lsdb names a collection's
# directories after it, so it is one safe path component.
CATALOG_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
CATALOG_NAME_HELP = "letters, digits, '_', '.' or '-' (not first), at most 100"
# The margin catalog (infer.margin_arcsec) lives under the catalog root, named in the root's
# collection.properties beside the catalog itself, so lsdb opens both from that one file.
MARGIN_DIR = "margin"
COLLECTION_SELF = "."  # collection.properties' primary table on a local disk: the root itself


def default_catalog_name(url: str) -> str:
    """The catalog's HATS name when the config gives none: the last component of its path."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def is_heavy_column(name: str) -> bool:
    """Columns left out of a catalog's HATS default columns: the PDF and the attributions,
    most of the bytes, which lsdb then reads only when asked (``columns="all"`` or by name)."""
    return name == PDF or name.startswith(attr_column(""))


def margin_catalog_name(catalog_name: str, arcsec: float) -> str:
    """The margin catalog's HATS name, as lsdb names the margins it writes."""
    return f"{catalog_name}_{arcsec:g}arcs"
