"""Targets of guided step distillation (hldm.diffusion.distillation): the student's grid is the one the
"ddim" sampler walks, and its x0 target makes one DDIM step land where the teacher's steps land."""
import pytest
import torch

from hldm.diffusion.distillation import ddim_step, student_grid, teacher_steps, x0_for_step
from hldm.diffusion.loss import output_for_x0
from hldm.diffusion.schedules import cosine_alphas_cumprod, make_scheduler

ABAR = cosine_alphas_cumprod(1000).float()


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_the_student_grid_is_the_path_of_the_ddim_sampler_and_its_steps_are_ddim_steps(prediction_type):
    """Each grid step (t -> s) is exactly what diffusers' DDIMScheduler does with the same x0, for either
    parameterisation (they space the timesteps differently)."""
    steps = 6
    t, s = student_grid(1000, steps, prediction_type)
    scheduler = make_scheduler("ddim", 1000, prediction_type)
    scheduler.set_timesteps(steps)
    assert torch.equal(t, scheduler.timesteps.long()) and (s < t).all() and s[-1] <= 0
    gen = torch.Generator().manual_seed(0)
    for tk, sk in zip(t, s):
        x, x0 = torch.randn(2, 4, 8, generator=gen), torch.randn(2, 4, 8, generator=gen)
        tt, ss = tk.repeat(2), sk.repeat(2)
        v = output_for_x0(x0, x, tt, ABAR, prediction_type)
        ours = ddim_step(x, x0, tt, ss, ABAR)
        theirs = scheduler.step(v, int(tk), x, eta=0.0).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_x0_for_step_inverts_a_ddim_step():
    gen = torch.Generator().manual_seed(1)
    x_t, x0 = torch.randn(3, 4, 8, generator=gen), torch.randn(3, 4, 8, generator=gen)
    t, s = torch.tensor([999, 500, 166]), torch.tensor([832, 333, -1])
    x_s = ddim_step(x_t, x0, t, s, ABAR)
    torch.testing.assert_close(x0_for_step(x_t, x_s, t, s, ABAR), x0, rtol=1e-4, atol=1e-4)


def test_a_teacher_that_knows_x0_lands_where_one_ddim_step_does():
    """With an exact, constant x0 every solver step agrees, whatever the number of substeps; a teacher
    whose x0 depends on x_t does not, so the substeps matter."""
    gen = torch.Generator().manual_seed(2)
    x_t, x0 = torch.randn(2, 4, 8, generator=gen), torch.randn(2, 4, 8, generator=gen)
    t, s = torch.tensor([999, 332]), torch.tensor([832, 166])
    one = ddim_step(x_t, x0, t, s, ABAR)
    for substeps in (1, 2, 4):
        torch.testing.assert_close(teacher_steps(lambda x, u: x0, x_t, t, s, substeps, ABAR), one,
                                   rtol=1e-4, atol=1e-4)
    moving = lambda x, u: 0.5 * x  # noqa: E731
    assert not torch.allclose(teacher_steps(moving, x_t, t, s, 1, ABAR), teacher_steps(moving, x_t, t, s, 4, ABAR))
