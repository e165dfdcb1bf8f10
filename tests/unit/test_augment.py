import torch

from ablab.data import augment


def images(n=64, size=12):
    torch.manual_seed(0)
    return torch.rand(n, 1, size, size) + 1.0  # no pixel equals the fill value 0


def test_shift_moves_each_image_by_whole_pixels_and_fills_the_border():
    x = images()
    out = augment.affine(x, shift=2, fill=0.0)
    moved = 0
    for i in range(len(x)):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy) : 12 - max(0, dy), max(0, -dx) : 12 - max(0, dx)]
                shifted[:, max(0, dy) : 12 - max(0, -dy), max(0, dx) : 12 - max(0, -dx)] = src
                if torch.allclose(out[i], shifted, atol=1e-5):
                    matches.append((dy, dx))
        assert len(matches) == 1, i  # exactly one integer shift explains the output
        moved += matches[0] != (0, 0)
    assert moved > len(x) * 0.8  # 24 of 25 shifts move the image


def test_hflip_mirrors_about_half_the_images():
    x = images(400)
    out = augment.affine(x, hflip=True)
    flipped = torch.tensor(
        [torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x, strict=True)]
    )
    same = torch.tensor([torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x, strict=True)])
    assert bool((flipped | same).all())
    assert 0.4 < flipped.float().mean().item() < 0.6


def test_rotation_keeps_the_centre_and_varies_per_image():
    x = torch.zeros(8, 1, 15, 15)
    x[:, :, 7, :] = 1.0  # a horizontal bar through the centre
    out = augment.affine(x, rotation=45)
    assert torch.allclose(out[:, 0, 7, 7], torch.ones(8), atol=1e-5)
    distinct = {tuple(o.flatten().round(decimals=3).tolist()) for o in out}
    assert len(distinct) == 8  # each image its own angle
    assert not torch.allclose(out[0], x[0], atol=1e-3)


def test_erasing_blanks_one_rectangle_in_chosen_images():
    x = images(300, 16)
    out = augment.erase(x, probability=0.5, value=0.0)
    erased = (out == 0).flatten(1)
    hit = erased.any(1)
    assert 0.4 < hit.float().mean().item() < 0.6
    for o in out[hit]:
        rows, cols = torch.nonzero(o[0] == 0, as_tuple=True)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box.item() == len(rows)  # the blanked pixels form one full rectangle
    untouched = out[~hit]
    assert torch.equal(untouched, x[~hit])


def test_nothing_enabled_is_the_identity():
    x = images()
    assert torch.equal(augment.augment(x), x)


def test_brightness_and_contrast_scale_each_image_by_its_own_factor_within_pixel_range():
    torch.manual_seed(0)
    pixels = torch.rand(200, 1, 8, 8) * 0.5 + 0.25  # in [0.25, 0.75]: no clipping at 0.2
    mean, std = 0.4, 0.3
    x = (pixels - mean) / std
    bright = augment.jitter(x, brightness=0.2, contrast=0.0, mean=mean, std=std) * std + mean
    ratio = bright / pixels  # one factor per image, in [0.8, 1.2], not all alike
    per_image = ratio.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-5)
    assert per_image.min() >= 0.8 - 1e-5 and per_image.max() <= 1.2 + 1e-5
    assert per_image[:, 0].std() > 0.05
    contrasted = augment.jitter(x, 0.0, 0.5, mean, std) * std + mean
    centre = pixels.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(contrasted.mean((1, 2, 3), keepdim=True), centre, atol=1e-5)
    spread = (contrasted - centre).flatten(1).norm(dim=1) / (pixels - centre).flatten(1).norm(dim=1)
    assert spread.min() >= 0.5 - 1e-4 and spread.max() <= 1.5 + 1e-4 and spread.std() > 0.1
    strong = augment.jitter(x, 1.0, 1.0, mean, std) * std + mean
    assert strong.min() >= -1e-6 and strong.max() <= 1 + 1e-6  # clipped to real pixels
