"""One training step, when a run needs more than the lecture's update (gpt/train.py's lecture_step,
which a plain run takes as it is):

- fp16 autocast (a GPU without bf16): a gradient scaler multiplies the loss so that small fp16
  gradients don't round to zero, and divides them back before the update;
- micro-steps (--grad-accum K): the batch in K parts whose gradients add up before the update, the
  same update in less memory;
- several processes (torchrun): each takes its own rows of the batch, and DistributedDataParallel
  averages the gradients in the backward pass of the last micro-step.

The forward passes' precision itself is course/device.py's Autocast, around the model.
"""

from contextlib import nullcontext

from gpt.train import lecture_step

from .distributed import this_ranks_share


class Step:
    """forward, zero_grad, backward, update, for a run with a gradient scaler, micro-steps or processes."""

    def __init__(self, scaler, micro_steps: int = 1, syncs: bool = False):
        self.scaler = scaler  # torch.amp.GradScaler, switched off outside fp16
        self.micro_steps = micro_steps
        self.syncs = syncs  # DistributedDataParallel: gradients exchanged on the last micro-step only

    def __call__(self, model, optimizer, xb, yb):
        micro_batches = this_ranks_share(xb, yb, self.micro_steps)  # this process's rows, in micro-steps
        optimizer.zero_grad(set_to_none=True)  # before the forward passes: the micro-steps' gradients add up
        for i, (xm, ym) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with model.no_sync() if self.syncs and not last else nullcontext():
                _, loss = model(xm, ym)
                self.scaler.scale(loss / len(micro_batches)).backward()
        self.scaler.step(optimizer)  # without fp16: optimizer.step()
        self.scaler.update()
        return loss

    def state_dict(self) -> dict | None:
        """The gradient scaler's state (its loss scale), for a checkpoint; None when it is off."""
        return self.scaler.state_dict() if self.scaler.is_enabled() else None


def step_for(precision, micro_steps: int, world_size: int, scaler_state: dict | None = None):
    """The lecture's step where nothing more is needed (fp32 or bf16, one micro-step, one process),
    else a Step; scaler_state continues a resumed fp16 run's loss scale."""
    scaler = precision.grad_scaler()
    if not scaler.is_enabled() and micro_steps == 1 and world_size == 1:
        return lecture_step
    if scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    return Step(scaler, micro_steps, syncs=world_size > 1)


def step_state(step) -> dict | None:
    """What of a step a checkpoint keeps: a Step's scaler state; nothing of the lecture's."""
    return step.state_dict() if isinstance(step, Step) else None
