import numpy as np

from phenaki_cli.eval.metrics import psnr, psnr_per_frame, ssim_per_frame


def test_psnr_and_ssim_known_values():
    a = np.full((2, 32, 32, 3), 100, np.uint8)
    b = a.copy()
    b[1] += 10  # mse 100 → 10·log10(255² / 100) = 28.13 dB
    assert np.isinf(psnr_per_frame(a, b)[0]) and abs(psnr_per_frame(a, b)[1] - 28.13) < 0.01
    assert abs(psnr(a, b) - 31.14) < 0.01  # mse 50 over the clip
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, a.shape, dtype=np.uint8)
    ssim = ssim_per_frame(noisy, noisy)
    assert np.allclose(ssim, 1.0) and ssim_per_frame(noisy, 255 - noisy).max() < 0.1
