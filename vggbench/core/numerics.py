"""The process-wide numeric settings a run changes (threads, TF32, cudnn.benchmark), scoped and put back."""

from __future__ import annotations

import contextlib

import torch

from .device import Device


def tf32_flag(device: Device, tf32: bool | None) -> bool | None:
    """The TF32 flag a run on `device` applies: on CUDA, fp32 is IEEE fp32 unless TF32 was asked for
    (torch's own default lets cuDNN use TF32, which moves logits ~1e-3 of their range); elsewhere TF32
    does not exist, the flags are left alone and fp32 is judged as fp32 (None)."""
    return bool(tf32) if device.is_cuda else None


@contextlib.contextmanager
def scoped_numerics(threads: int | None = None, tf32: bool | None = None, cudnn_benchmark: bool | None = None):
    """Apply a run's thread count and CUDA flags for its duration, then put back what was there."""
    saved = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        if cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = cudnn_benchmark
        yield
    finally:  # put back only what was set: an untouched setting stays exactly as the user had it
        if threads is not None:
            torch.set_num_threads(saved[0])
        if tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]
        if cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = saved[3]
