"""Diffusion in the MS-VAE latent: cosine schedule, training loss, samplers with classifier-free guidance."""
from hldm.diffusion.loss import clamp_x0, diffusion_loss, predict_x0, q_sample, subspace_losses, training_target
from hldm.diffusion.samplers import SAMPLER_FUNCTIONS, cpu_generators, guided, initial_noise, sample
from hldm.diffusion.schedules import PREDICTION_TYPES, SAMPLERS, cosine_alphas_cumprod, make_scheduler

__all__ = ["PREDICTION_TYPES", "clamp_x0", "SAMPLERS", "SAMPLER_FUNCTIONS", "cosine_alphas_cumprod", "cpu_generators", "diffusion_loss",
           "guided", "initial_noise", "make_scheduler", "predict_x0", "q_sample", "sample", "subspace_losses",
           "training_target"]
