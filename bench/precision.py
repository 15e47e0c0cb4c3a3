"""Float32 arithmetic modes on CUDA (exact fp32 or TF32) and the error measure the device checks use.

PyTorch's defaults differ between libraries: cuBLAS matrix products run in exact fp32 unless
``torch.backends.cuda.matmul.allow_tf32`` is set, while cuDNN convolutions and RNNs use TF32 unless
``torch.backends.cudnn.allow_tf32`` is cleared. Comparisons with the CPU need both off; speed runs want
both on. Only the flags that exist in every torch >= 2.1 are used (mixing them with the newer
``fp32_precision`` attributes is refused by recent torch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS: tuple[str, ...] = ("default", "fp32", "tf32", "bf16")
PRECISION_HELP = (
    "default: torch's own flags (cuDNN in TF32, matrix products in fp32); fp32: TF32 off everywhere; "
    "tf32: TF32 on everywhere; bf16: bf16 autocast, TF32 for what stays in fp32"
)


@contextlib.contextmanager
def float32_mode(
    tf32: bool | None, *, deterministic: bool | None = None, benchmark: bool | None = None
) -> Iterator[None]:
    """Within the block: TF32 on or off for cuBLAS and cuDNN (None: leave as is), cuDNN's deterministic and
    benchmark flags as given (None: leave as is); everything restored afterwards."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        if tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        if deterministic is not None:
            torch.backends.cudnn.deterministic = deterministic
        if benchmark is not None:
            torch.backends.cudnn.benchmark = benchmark
        yield
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        ) = saved


def precision_setup(precision: str) -> tuple[bool | None, torch.dtype | None]:
    """(TF32 flag for :func:`float32_mode`, autocast dtype) of one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return {"default": (None, None), "fp32": (False, None), "tf32": (True, None), "bf16": (True, torch.bfloat16)}[
        precision
    ]


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """||value - reference|| / ||reference|| in float64 on the CPU (0 when both are zero)."""
    a = value.detach().to("cpu", torch.float64)
    b = reference.detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    denominator = b.norm().item()
    difference = (a - b).norm().item()
    if denominator == 0.0:
        return 0.0 if difference == 0.0 else float("inf")
    return difference / denominator


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors concatenated into one float64 CPU vector (e.g. all gradients of a model)."""
    return torch.cat([t.detach().to("cpu", torch.float64).reshape(-1) for t in tensors])
