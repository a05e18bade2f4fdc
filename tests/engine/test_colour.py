"""vera.colour: the pinned config or $OCIO, plate space <-> model space (sRGB - Texture), clamping, bad names."""

import numpy as np
import pytest

from vera import colour
from vera.errors import BadInput


def _srgb_encode(linear):
    """The sRGB transfer function (IEC 61966-2-1), written out to check that OCIO's result is the one we mean."""
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


@pytest.fixture(autouse=True)
def _no_ocio_env(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)
    monkeypatch.delenv("VERA_MODEL_COLORSPACE", raising=False)


def test_pinned_config_exists_in_this_ocio():
    import PyOpenColorIO as ocio

    assert colour.config_source() == colour.PINNED_CONFIG
    assert colour.PINNED_CONFIG.removeprefix("ocio://") in list(ocio.BuiltinConfigRegistry())
    assert colour.model_colorspace() == "sRGB - Texture"


def test_linear_rec709_goes_to_srgb_encoding_and_back():
    linear = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8, 1).repeat(3, 2)
    model = colour.to_model(linear, "Linear Rec.709 (sRGB)")
    np.testing.assert_allclose(model, _srgb_encode(linear), atol=2e-5)
    np.testing.assert_allclose(colour.from_model(model, "lin_rec709"), linear, atol=5e-5)  # an alias works too


def test_srgb_plate_passes_through_unchanged():
    img = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(colour.to_model(img, "sRGB - Texture"), img)
    np.testing.assert_array_equal(colour.from_model(img, "srgb_tx"), img)


def test_acescg_round_trip_in_range_and_superwhites_clamp():
    # In-gamut, in-range scene values survive the round trip.
    acescg = np.array([[[0.18, 0.18, 0.18], [0.05, 0.1, 0.2], [0.5, 0.4, 0.3]]], np.float32)
    model = colour.to_model(acescg, "ACEScg")
    assert model.min() >= 0 and model.max() <= 1
    np.testing.assert_allclose(colour.from_model(model, "ACEScg"), acescg, rtol=1e-3, atol=1e-4)
    # Mid grey lands where the sRGB curve puts 0.18 (ACEScg grey is Rec.709 grey).
    np.testing.assert_allclose(model[0, 0], _srgb_encode(0.18), atol=1e-4)
    # Superwhites, negatives and non-finite values reach the model clamped into [0, 1].
    extreme = np.array([[[16.0, 4.0, 2.0], [-1.0, 0.2, 0.2], [np.nan, np.inf, -np.inf]]], np.float32)
    seen = colour.to_model(extreme, "ACEScg")
    assert np.isfinite(seen).all() and seen.min() >= 0 and seen.max() <= 1
    assert (seen[0, 0] == 1).all()
    # What comes back from display white is the plate space's value for it: finite, no blow-up.
    white = colour.from_model(np.ones((1, 1, 3), np.float32), "ACEScg")
    np.testing.assert_allclose(white, 1.0, atol=1e-3)


def test_unknown_colour_space_lists_close_names():
    with pytest.raises(BadInput) as err:
        colour.to_model(np.zeros((1, 1, 3), np.float32), "ACEScgg")
    text = str(err.value)
    assert "\n" not in text and "ACEScgg" in text and "ACEScg" in text.split("close names:")[1]


def test_ocio_environment_variable_is_honoured(monkeypatch):
    other = "ocio://studio-config-v2.1.0_aces-v1.3_ocio-v2.3"
    monkeypatch.setenv("OCIO", other)
    assert colour.config_source() == other
    assert colour.config().getColorSpace("ARRI LogC3 (EI800)") is not None  # only the studio config has cameras
    img = np.full((1, 1, 3), 0.18, np.float32)
    assert colour.to_model(img, "ARRI LogC3 (EI800)").shape == (1, 1, 3)
    monkeypatch.setenv("OCIO", "/nonexistent/config.ocio")
    with pytest.raises(BadInput, match="/nonexistent/config.ocio"):
        colour.to_model(img, "ACEScg")


def test_model_space_override(monkeypatch):
    monkeypatch.setenv("VERA_MODEL_COLORSPACE", "Gamma 2.2 Rec.709 - Texture")
    out = colour.to_model(np.full((1, 1, 3), 0.25, np.float32), "Linear Rec.709 (sRGB)")
    np.testing.assert_allclose(out, 0.25 ** (1 / 2.2), atol=1e-4)


def test_range_helpers():
    x = np.array([0.0, 0.5, 1.0], np.float32)
    np.testing.assert_array_equal(colour.model_range(x), [-1, 0, 1])
    np.testing.assert_array_equal(colour.unit_range(colour.model_range(x)), x)
