"""CT image noise with the texture of filtered back-projection: a noise power spectrum (NPS), not white noise.

Real CT noise is correlated. In-plane, filtered back-projection shapes it by the ramp filter times the
reconstruction kernel's apodization, so its NPS is band-pass: ``NPS(f) ~ f * A(f)^2`` (Hanson 1979; Boone et al.,
AAPM Report 233, 2019). Soft kernels put the peak near 0.2 cycles/mm (a blotchy look), sharp lung and bone kernels
near 0.5-0.7 cycles/mm (a fine grain); measured peaks across scanners and kernels span about 0.15-0.6 cycles/mm
(Solomon et al., Med Phys 39(7):4119, 2012). Along z, noise is correlated by the slice sensitivity profile when
slices overlap (increment < thickness).

Each slice's noise depends only on ``(seed, k)``, so a volume rendered in slabs gets the same noise as one rendered
whole. :func:`radial_nps` measures the NPS of any noise-only image (a phantom's or a real scan's uniform region)
the way CT physicists do (mean periodogram of detrended ROIs), which is how the texture is checked against real
CT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from MedAIExtension.errors import InputError

__all__ = [
    "KERNELS",
    "ReconKernel",
    "ct_noise_slices",
    "nps_peak_frequency",
    "radial_nps",
]

#: Where the peak of ``f * A(f)^2`` lies for a Hann apodization, as a fraction of its cut-off.
_HANN_PEAK_FRACTION = 0.3056


@dataclass(frozen=True)
class ReconKernel:
    """A reconstruction kernel by the frequency (cycles/mm) at which its noise power peaks."""

    name: str
    peak_cycles_per_mm: float

    @property
    def cutoff_cycles_per_mm(self) -> float:
        """The Hann apodization's cut-off that puts the NPS peak at :attr:`peak_cycles_per_mm`."""
        return self.peak_cycles_per_mm / _HANN_PEAK_FRACTION


#: Kernels from soft to sharp (names describe their use; the peaks follow Solomon et al. 2012).
KERNELS: dict[str, ReconKernel] = {
    kernel.name: kernel
    for kernel in (
        ReconKernel("soft", 0.18),
        ReconKernel("standard", 0.28),
        ReconKernel("sharp", 0.42),
        ReconKernel("lung", 0.58),
    )
}


def _amplitude_filter(shape_ji: tuple[int, int], spacing_ji: tuple[float, float], kernel: ReconKernel) -> np.ndarray:
    """``sqrt(NPS)`` on the real-FFT frequency grid of a ``shape_ji`` slice, scaled to unit output variance."""
    fy = np.fft.fftfreq(shape_ji[0], d=spacing_ji[0])[:, None]
    fx = np.fft.rfftfreq(shape_ji[1], d=spacing_ji[1])[None, :]
    f = np.sqrt(fx**2 + fy**2)
    cutoff = kernel.cutoff_cycles_per_mm
    apodization = np.where(f < cutoff, 0.5 * (1.0 + np.cos(np.pi * np.minimum(f, cutoff) / cutoff)), 0.0)
    amplitude = np.sqrt(f) * apodization
    # Parseval for a real FFT: the columns other than 0 (and Nyquist, for even widths) stand for two frequencies.
    weight = np.full(amplitude.shape[1], 2.0)
    weight[0] = 1.0
    if shape_ji[1] % 2 == 0:
        weight[-1] = 1.0
    variance = float((amplitude**2 * weight).sum()) / (shape_ji[0] * shape_ji[1])
    if variance <= 0.0:
        raise InputError(f"Kernel {kernel.name!r} passes no frequency of a {shape_ji} grid; use a sharper kernel.")
    return (amplitude / math.sqrt(variance)).astype(np.float32)


def _z_weights(thickness_mm: float, increment_mm: float) -> np.ndarray:
    """Weights mixing neighbouring slices' independent noise: a triangular slice sensitivity profile.

    Slices closer than the thickness share detector data, so their noise correlates; with ``increment >=
    thickness`` the weights reduce to one slice (independent noise). Normalised to unit output variance.
    """
    if thickness_mm <= 0 or increment_mm <= 0:
        raise InputError("Slice thickness and increment must be positive.")
    reach = int(math.floor(thickness_mm / increment_mm - 1e-9))
    offsets = np.arange(-reach, reach + 1) * increment_mm
    weights = np.clip(1.0 - np.abs(offsets) / thickness_mm, 0.0, None)
    return weights / np.sqrt((weights**2).sum())


def ct_noise_slices(
    seed: int,
    k_range: range,
    shape_ji: tuple[int, int],
    spacing_ji: tuple[float, float],
    sigma_hu: float,
    kernel: ReconKernel = KERNELS["standard"],
    slice_thickness_mm: float | None = None,
    slice_increment_mm: float = 1.0,
) -> np.ndarray:
    """Noise for slices ``k_range`` (float32 ``[k, j, i]``), standard deviation ``sigma_hu``, texture of ``kernel``.

    ``slice_thickness_mm`` defaults to the increment (contiguous slices, no z correlation). The result for slice
    ``k`` depends only on ``seed``, ``k`` and the arguments, not on ``k_range``.
    """
    if sigma_hu < 0:
        raise InputError(f"Noise level must not be negative (got {sigma_hu} HU).")
    thickness = slice_increment_mm if slice_thickness_mm is None else slice_thickness_mm
    weights = _z_weights(thickness, slice_increment_mm)
    reach = (len(weights) - 1) // 2
    amplitude = _amplitude_filter(shape_ji, spacing_ji, kernel)
    white: dict[int, np.ndarray] = {}

    def white_slice(k: int) -> np.ndarray:
        if k not in white:
            white[k] = np.random.default_rng([seed, 7, k + 2**20]).standard_normal(shape_ji, dtype=np.float32)
        return white[k]

    out = np.empty((len(k_range), *shape_ji), dtype=np.float32)
    for n, k in enumerate(k_range):
        mixed = np.zeros(shape_ji, dtype=np.float32)
        for m, w in enumerate(weights):
            mixed += np.float32(w) * white_slice(k + m - reach)
        spectrum = np.fft.rfft2(mixed) * amplitude
        out[n] = np.fft.irfft2(spectrum, s=shape_ji) * np.float32(sigma_hu)
        white.pop(k - reach, None)
    return out


def radial_nps(
    noise: np.ndarray, spacing_ji: tuple[float, float], roi: int = 64, bins: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged NPS (HU² mm²) of noise-only slices ``[k, j, i]``, from non-overlapping ``roi``² squares.

    Each square has its mean (and linear trend) removed before its periodogram; the result is the mean over all
    squares, averaged in ``bins`` rings (default ``roi // 2``, one per frequency step) up to the lower Nyquist
    frequency; the zero frequency (removed with the mean) is left out. Returns ``(frequency, nps)``, one value per
    ring that holds a frequency.
    """
    if noise.ndim != 3 or noise.shape[1] < roi or noise.shape[2] < roi:
        raise InputError(f"NPS needs slices of at least {roi}x{roi} voxels; got {noise.shape}.")
    jj, ii = np.mgrid[0:roi, 0:roi].astype(np.float64)
    design = np.column_stack([np.ones(roi * roi), jj.ravel(), ii.ravel()])
    power = np.zeros((roi, roi))
    count = 0
    for plane in noise:
        for j0 in range(0, plane.shape[0] - roi + 1, roi):
            for i0 in range(0, plane.shape[1] - roi + 1, roi):
                patch = plane[j0 : j0 + roi, i0 : i0 + roi].astype(np.float64)
                coefficients, *_ = np.linalg.lstsq(design, patch.ravel(), rcond=None)
                detrended = patch - (design @ coefficients).reshape(roi, roi)
                power += np.abs(np.fft.fft2(detrended)) ** 2
                count += 1
    power *= spacing_ji[0] * spacing_ji[1] / (roi * roi * count)
    fy = np.fft.fftfreq(roi, d=spacing_ji[0])[:, None]
    fx = np.fft.fftfreq(roi, d=spacing_ji[1])[None, :]
    f = np.sqrt(fx**2 + fy**2)
    nyquist = 0.5 / max(spacing_ji)
    bins = roi // 2 if bins is None else bins
    edges = np.linspace(0.0, nyquist, bins + 1)
    which = np.digitize(f.ravel(), edges) - 1
    inside = (which >= 0) & (which < bins) & (f.ravel() > 0)
    sums = np.bincount(which[inside], weights=power.ravel()[inside], minlength=bins)
    counts = np.bincount(which[inside], minlength=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    keep = counts > 0
    return centres[keep], sums[keep] / counts[keep]


def nps_peak_frequency(frequency: Sequence[float], nps: Sequence[float]) -> float:
    """The frequency (cycles/mm) where a measured NPS is highest, refined by a parabola through its top bins."""
    values = np.asarray(nps, dtype=float)
    freqs = np.asarray(frequency, dtype=float)
    top = int(np.argmax(values))
    if 0 < top < len(values) - 1:
        left, centre, right = values[top - 1 : top + 2]
        denominator = left - 2 * centre + right
        if denominator != 0:
            shift = 0.5 * (left - right) / denominator
            return float(freqs[top] + shift * (freqs[1] - freqs[0]))
    return float(freqs[top])
