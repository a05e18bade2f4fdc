"""vera.rebuild: Fit (aspect, padding, round trip), the edge-aware matte, thresholds, garbage matte, premultiply."""

import numpy as np
import pytest

from vera import rebuild
from vera.rebuild import Fit, rebuild_layer


def test_fit_letterbox_and_pillarbox():
    wide = Fit.compute(4096, 2160, 832, 480)   # 1.896:1 into 1.733:1 -> bars top and bottom
    assert (wide.content_w, wide.content_h) == (832, 439)
    assert (wide.pad_left, wide.pad_right) == (0, 0)
    assert wide.pad_top + wide.content_h + wide.pad_bottom == 480 and abs(wide.pad_top - wide.pad_bottom) <= 1
    square = Fit.compute(1000, 1000, 832, 480)  # bars left and right
    assert (square.content_w, square.content_h, square.pad_left, square.pad_top) == (480, 480, 176, 0)
    same = Fit.compute(1664, 960, 832, 480)     # same aspect: no padding
    assert (same.pad_left, same.pad_top, same.content_w, same.content_h) == (0, 0, 832, 480)
    assert Fit.from_dict(wide.to_dict()) == wide


def test_to_model_pads_and_crop_undoes_it():
    fit = Fit.compute(200, 100, 64, 48)
    plate = np.random.default_rng(0).random((100, 200, 3)).astype(np.float32)
    small = fit.to_model(plate, pad_value=-1.0)
    assert small.shape == (48, 64, 3)
    assert (small[:fit.pad_top] == -1).all() and (small[fit.pad_top + fit.content_h:] == -1).all()
    content = fit.crop(small)
    assert content.shape == (fit.content_h, fit.content_w, 3) and (content >= 0).all()
    # The content is the plate, shrunk: its mean survives, and to_plate brings it back to plate size.
    assert abs(content.mean() - plate.mean()) < 0.01
    back = fit.to_plate(small)
    assert back.shape == (100, 200, 3)
    assert abs(back.mean() - plate.mean()) < 0.01
    mask = fit.to_model(np.ones((100, 200), np.float32))  # 2-D images too (masks)
    assert mask.shape == (48, 64) and mask[fit.pad_top + 2, 5] == pytest.approx(1.0)


def _disc_scene(H=240, W=400, model=(100, 64)):
    """A plate with a hard-edged disc, and the model's view of its matte: the disc at model resolution."""
    y, x = np.mgrid[0:H, 0:W]
    disc = ((x - 190.3) ** 2 + (y - 117.7) ** 2 < 61.0 ** 2).astype(np.float32)  # the true matte
    plate = np.where(disc[..., None] > 0, [0.9, 0.5, 0.1], [0.1, 0.2, 0.6]).astype(np.float32)
    plate += np.random.default_rng(1).normal(0, 0.01, plate.shape).astype(np.float32)
    fit = Fit.compute(W, H, *model)
    alpha_model = fit.to_model(disc)  # a soft, low-resolution matte, as a model produces
    return plate, disc, fit, alpha_model


def test_matte_edges_follow_the_plate_better_than_plain_upsampling():
    plate, disc, fit, alpha_model = _disc_scene()
    guided = rebuild.upsample_matte(fit.crop(alpha_model), plate)
    plain = fit.to_plate(alpha_model, mode="bilinear")
    edge = np.abs(np.gradient(disc)[0]) + np.abs(np.gradient(disc)[1]) > 0
    band = rebuild.box_mean(edge.astype(np.float32), 4).numpy() > 0  # pixels near the true edge
    err_guided = np.abs(np.clip(guided, 0, 1) - disc)[band].mean()
    err_plain = np.abs(plain - disc)[band].mean()
    assert err_guided < 0.3 * err_plain, (err_guided, err_plain)
    # Far from the edge both agree with the truth.
    assert np.abs(np.clip(guided, 0, 1) - disc)[~band].max() < 0.05


def test_rebuild_layer_untouched_means_exactly_zero():
    plate, disc, fit, alpha_model = _disc_scene()
    edit_rgb = np.full((fit.model_h, fit.model_w, 3), 0.7, np.float32)
    edit_rgb[0, 0] = np.nan  # garbage from a model must not leak
    rgba = rebuild_layer(edit_rgb, alpha_model, plate, fit, threshold=0.05)
    assert rgba.shape == (240, 400, 4) and rgba.dtype == np.float32
    alpha = rgba[..., 3]
    assert alpha.min() == 0 and alpha.max() <= 1
    assert not ((alpha > 0) & (alpha < 0.05)).any()  # below the threshold: exactly 0
    zero = alpha == 0
    assert zero.mean() > 0.5
    assert (rgba[zero, :3] == 0).all() and not np.signbit(rgba[zero, :3]).any()  # +0, not -0
    np.testing.assert_allclose(rgba[~zero, :3], np.repeat(0.7 * alpha[~zero, None], 3, 1), rtol=1e-4, atol=1e-5)
    assert np.isfinite(rgba).all()


def test_garbage_matte_limits_the_edit():
    plate, disc, fit, alpha_model = _disc_scene()
    garbage = np.zeros(disc.shape, np.float32)
    garbage[:, :190] = 1.0  # only the left half of the frame may change
    edit_rgb = np.full((fit.model_h, fit.model_w, 3), 0.3, np.float32)
    rgba = rebuild_layer(edit_rgb, alpha_model, plate, fit, garbage=garbage)
    assert (rgba[:, 190:] == 0).all()
    assert rgba[:, :190, 3].max() > 0.9
    half = np.full(disc.shape, 0.5, np.float32)
    soft = rebuild_layer(edit_rgb, alpha_model, plate, fit, garbage=half)
    full = rebuild_layer(edit_rgb, alpha_model, plate, fit)
    inside = full[..., 3] > 0.5
    np.testing.assert_allclose(soft[inside, 3], 0.5 * full[inside, 3], rtol=1e-6)


def test_padding_of_the_model_frame_is_ignored():
    plate, disc, fit, alpha_model = _disc_scene()
    assert fit.pad_top > 0 or fit.pad_left > 0
    noisy = alpha_model.copy()
    noisy[:fit.pad_top] = 1.0  # the model put matte in the letterbox bars
    noisy[fit.pad_top + fit.content_h:] = 1.0
    edit_rgb = np.full((fit.model_h, fit.model_w, 3), 0.5, np.float32)
    np.testing.assert_array_equal(rebuild_layer(edit_rgb, noisy, plate, fit),
                                  rebuild_layer(edit_rgb, alpha_model, plate, fit))


def test_plate_size_must_match_the_fit():
    fit = Fit.compute(400, 240, 100, 60)
    with pytest.raises(ValueError):
        rebuild_layer(np.zeros((60, 100, 3), np.float32), np.zeros((60, 100), np.float32),
                      np.zeros((100, 100, 3), np.float32), fit)


def test_work_limited_to_the_matte_region_changes_nothing():
    """rebuild only evaluates the region where the guided filter's coefficients can be non-zero; a plain
    whole-frame evaluation (interpolate over the full frame) must agree, and be exactly 0 outside it."""
    import torch

    plate, disc, fit, alpha_model = _disc_scene()
    small_alpha = np.zeros_like(alpha_model)
    small_alpha[20:26, 30:40] = alpha_model[20:26, 30:40] + 0.5  # a small blob: a small region of work
    content = fit.crop(small_alpha)
    ours = rebuild.upsample_matte(content, plate)
    h, w = content.shape
    small = torch.nn.functional.interpolate(torch.from_numpy(plate).permute(2, 0, 1)[None], size=(h, w),
                                            mode="bilinear", align_corners=False, antialias=True)[0]
    a, b = rebuild.guided_coefficients(rebuild.guide_image(small.permute(1, 2, 0)), torch.from_numpy(content))
    coeffs = torch.nn.functional.interpolate(torch.cat([a, b[None]])[None], size=plate.shape[:2],
                                             mode="bilinear", align_corners=False)[0]
    whole = (coeffs[3] + (coeffs[:3] * rebuild.guide_image(plate)).sum(0)).numpy()
    assert (ours == 0).mean() > 0.5
    assert (whole[ours == 0] == 0).all()
    np.testing.assert_allclose(ours, whole, atol=1e-4)


def test_empty_matte_gives_an_empty_layer():
    plate, disc, fit, alpha_model = _disc_scene()
    edit_rgb = np.full((fit.model_h, fit.model_w, 3), 0.5, np.float32)
    rgba = rebuild_layer(edit_rgb, np.zeros_like(alpha_model), plate, fit)
    assert rgba.shape == (240, 400, 4) and not rgba.any()
    tiny = np.full_like(alpha_model, 0.5 / 255)  # everywhere below the default threshold
    assert not rebuild_layer(edit_rgb, tiny, plate, fit).any()


def test_premultiply_zeroes_nonfinite_colour_where_alpha_is_zero():
    rgb = np.array([[[np.nan, np.inf, -2.0], [0.5, -0.25, 1.0]]], np.float32)
    alpha = np.array([[0.0, 0.5]], np.float32)
    out = rebuild.premultiply(rgb, alpha)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0, 0])
    assert not np.signbit(out[0, 0]).any()
    np.testing.assert_array_equal(out[0, 1], [0.25, -0.125, 0.5, 0.5])
