import numpy as np

from raycat import schema
from raycat.infer import Extras, has_pixels


def test_auto_attribution_is_exact_for_surveys_and_sampled_for_bands():
    assert Extras(attributions="surveys").exact(3)
    assert not Extras(attributions="bands").exact(9)
    assert Extras(attribution_method="exact").exact(9)
    assert not Extras(attribution_method="sampled").exact(3)
    assert not Extras().wanted and Extras(mc_dropout_passes=4).wanted


def test_rows_without_pixels_get_no_prediction():
    cube = np.zeros((3, 9, 4, 4), np.float32)
    cube[1, 2, 1, 1] = 1.0
    cube[2, 0, 0, 0] = 1.0
    flags = np.array([0, 0, int(schema.Flag.OFF_FOOTPRINT)])
    assert has_pixels(cube, flags).tolist() == [False, True, False]
