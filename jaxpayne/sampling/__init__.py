"""Full posteriors P(θ | O) ∝ L(O | θ) P(θ) with NumPyro's NUTS: priors as a research tool, one star
or thousands in one compiled call.

* :class:`Prior` — per-parameter NumPyro distributions and a joint log-density of the named
  parameters; :func:`load_prior` reads ``FILE.py:NAME`` (the CLI's ``--prior``);
* :class:`Posterior` — the density of one spectrum (prior + :func:`~jaxpayne.forward.loglike`)
  in physical and unconstrained coordinates, and as a NumPyro model;
* :mod:`~jaxpayne.sampling.terms` — likelihood terms beside the spectrum's: :class:`Seismic`
  (ν_max, Δν scaling relations), :class:`LabelMeasurement` (per-star label measurements), and
  :class:`jaxpayne.photometry.Photometry` (parallax and magnitudes);
* :class:`Sampler` / :func:`sample` — vmapped NUTS with per-star adaptation, started from the
  batched fit, returning ArviZ ``InferenceData`` with a ``star`` dimension;
* :func:`summarize` — the per-star summary table (mean, sd, percentiles, r_hat, ESS, divergences,
  flags); :func:`sample_spectra` — the resumable streaming run behind ``jaxpayne sample``.

See ``docs/sampling.md``.
"""

from jaxpayne.sampling.posterior import NOISE_SCALE, NOISE_SCALE_BOUNDS, Posterior
from jaxpayne.sampling.priors import Prior, as_prior, load_prior
from jaxpayne.sampling.run import read_posterior, sample_spectra
from jaxpayne.sampling.sampler import DEFAULT_MAX_TREE_DEPTH, Sampler, sample
from jaxpayne.sampling.summary import summarize, summary_columns, summary_table
from jaxpayne.sampling.terms import GaussianTerm, LabelMeasurement, Latent, Seismic

__all__ = [
    "DEFAULT_MAX_TREE_DEPTH",
    "GaussianTerm",
    "LabelMeasurement",
    "Latent",
    "Seismic",
    "NOISE_SCALE",
    "NOISE_SCALE_BOUNDS",
    "Posterior",
    "Prior",
    "Sampler",
    "as_prior",
    "load_prior",
    "read_posterior",
    "sample",
    "sample_spectra",
    "summarize",
    "summary_columns",
    "summary_table",
]
