"""Where and how the models of an evaluation run: processes (accelerate), devices, mixed precision.

:class:`Runtime` wraps an ``accelerate.Accelerator`` (or a single process): the sharded loader over
example indices (the padded duplicates of an uneven last round dropped by ``gather_for_metrics``'s
rule), autocast, gathering. :func:`model_device` is where a model's inputs go, also for a model
dispatched by accelerate's big-model inference (``device_map``, CPU/disk offload).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .options import EvalOptions
from .streams import IndexRange, collate_indices, real_rows

__all__ = ["Runtime", "model_device"]

_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go: the device of its first parameter (the first block of a model
    dispatched by accelerate's big-model inference), CPU for a model without parameters."""
    for tensor in model.parameters():
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


@dataclass
class Runtime:
    """Processes and precision of one evaluation (an ``accelerate.Accelerator`` or one process)."""

    accelerator: Any
    precision: str
    mixed_precision: str | None

    @classmethod
    def create(cls, opts: EvalOptions) -> Runtime:
        accelerator = opts.accelerator
        if accelerator is None and opts.distributed:
            from accelerate import Accelerator

            accelerator = Accelerator(mixed_precision=opts.mixed_precision or "no", cpu=not torch.cuda.is_available())
        precision = accelerator.mixed_precision if accelerator is not None else (opts.mixed_precision or "no")
        return cls(accelerator, precision, opts.mixed_precision)

    @property
    def is_main(self) -> bool:
        return self.accelerator is None or bool(self.accelerator.is_main_process)

    @property
    def rank(self) -> int:
        return 0 if self.accelerator is None else int(self.accelerator.process_index)

    @property
    def world(self) -> int:
        return 1 if self.accelerator is None else int(self.accelerator.num_processes)

    def place(self, model: torch.nn.Module) -> None:
        """Moves a model to the accelerator's device (a model dispatched with ``device_map`` stays)."""
        if self.accelerator is not None and getattr(model, "hf_device_map", None) is None:
            model.to(self.accelerator.device)

    def autocast(self, devices: set[str]) -> AbstractContextManager[Any]:
        stack = ExitStack()
        if self.accelerator is not None:
            stack.enter_context(self.accelerator.autocast())
        elif self.mixed_precision in _HALF:
            for device_type in sorted(devices):
                stack.enter_context(torch.autocast(device_type=device_type, dtype=_HALF[self.mixed_precision]))
        return stack

    def loader(self, n: int, order: np.ndarray | None, batch_size: int) -> Any:
        batches: Any = torch.utils.data.DataLoader(IndexRange(n, order), batch_size=batch_size, shuffle=False,
                                                   collate_fn=collate_indices)
        return self.accelerator.prepare(batches) if self.accelerator is not None else batches

    def real(self, item: torch.Tensor) -> list[int]:
        indices = item.tolist()
        return indices[: real_rows(self.accelerator, len(indices))] if self.accelerator is not None else indices

    def gather(self, value: Any) -> list[Any]:
        if self.accelerator is not None and self.world > 1:
            from accelerate.utils import gather_object

            return list(gather_object([value]))
        return [value]
