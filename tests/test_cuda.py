"""The CUDA paths against the CPU, the reference's per-frame function and themselves (skipped without a GPU).

Run on a GPU machine with ``python -m pytest -q tests/test_cuda.py`` (or ``-m cuda``); ``bench/device_check.sh``
runs it first. Tolerances, as relative errors ||x - ref|| / ||ref|| (``relative_error`` below):

- exact fp32 (TF32 off) against the CPU: outputs and first losses within 1e-5; gradients as accurate as the
  CPU's own float32 ones, i.e. their error against a float64 CPU run at most 10x the CPU's (floor 1e-5). The
  graph encoder's float32 gradients are ill-conditioned (4-5e-4 from float64 on the CPU as well), the others
  ~1e-6;
- three MoCo steps: later losses and the queues within 1e-4 of the CPU's, each query encoder's parameter change
  within 5e-4 (BiGRU), 1e-3 (HCN) or 5e-3 (AGCN, whose gradients carry its float32 error);
- the whole-sequence cuDNN BiGRU against the reference's per-frame loop in float64: 1e-5 (features), 1e-4
  (gradients);
- DataParallel over one GPU against the bare model: equal to 1e-5 (relative) / 1e-6 (absolute);
- a bf16 autocast step against the fp32 one: loss within 2e-2, each query encoder's gradient within 0.2 (bf16
  keeps 8 significant bits; on the CPU its gradients land 6-8e-2 from float64).
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from engine.knn import knn_accuracy
from moco.builder import MoCo, build_moco
from moco.step import contrastive_step
from models import PAIRS, build_encoder, parse_representation
from models.bigru import BIGRU, causal_bigru, reference_loop_features
from tests.test_models import _literal_per_frame_bigru

with warnings.catch_warnings():
    # Selectable with -m cuda; registering the marker in the pytest configuration silences nothing else.
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    CUDA_MARK = pytest.mark.cuda

pytestmark = [CUDA_MARK, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DEVICE = torch.device("cuda", 0)
FRAMES = 64
SMALL = dict(gru_hidden_size=256, gru_layers=3, agcn_base_channels=16, hcn_out_channels=16)
STEP_TOLERANCE = {"seq-based": 5e-4, "graph-based": 5e-3, "image-based": 1e-3}


@contextlib.contextmanager
def float32_mode(tf32: bool, *, deterministic: bool | None = None, benchmark: bool | None = None) -> Iterator[None]:
    """Within the block: TF32 on or off for cuBLAS and cuDNN (PyTorch's defaults differ: matrix products in
    exact fp32, cuDNN in TF32), cuDNN's deterministic and benchmark flags as given (None: as they are)."""
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")
    flags += (torch.backends.cudnn, "deterministic"), (torch.backends.cudnn, "benchmark")
    saved = [getattr(owner, name) for owner, name in flags]
    try:
        for (owner, name), value in zip(flags, (tf32, tf32, deterministic, benchmark)):
            if value is not None:
                setattr(owner, name, value)
        yield
    finally:
        for (owner, name), value in zip(flags, saved):
            setattr(owner, name, value)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """||value - reference|| / ||reference|| in float64 on the CPU (0 when both are zero)."""
    a, b = (t.detach().to("cpu", torch.float64) for t in (value, reference))
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}"
    difference, denominator = (a - b).norm().item(), b.norm().item()
    if denominator == 0.0:
        return 0.0 if difference == 0.0 else float("inf")
    return difference / denominator


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors concatenated into one float64 CPU vector (e.g. all gradients of a model)."""
    return torch.cat([t.detach().to("cpu", torch.float64).reshape(-1) for t in tensors])


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off for cuBLAS and cuDNN (PyTorch leaves cuDNN in TF32 by default)."""
    with float32_mode(False, benchmark=False):
        yield


@pytest.fixture(autouse=True, scope="module")
def all_cpu_threads():
    """The CPU references are paper-size models: they get every core (the suite otherwise runs on one thread)."""
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(cores)
    yield
    torch.set_num_threads(before)


def view_batch(representation: str, batch: int, seed: int) -> torch.Tensor:
    """A random input of one representation: (N, T, 150) sequences or (N, 3, T, 25, 2) skeletons."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, FRAMES, 150) if representation == "seq-based" else (batch, 3, FRAMES, 25, 2)
    return 0.3 * torch.randn(shape, generator=gen)


def pair_views(pair: str, batch: int, seed: int) -> list[torch.Tensor]:
    names = parse_representation(pair)
    return [view_batch(name, batch, seed * 10 + i) for i, name in enumerate(names + names)]


def without_dropout(model: nn.Module) -> nn.Module:
    """Dropout draws its masks from each device's own generator; the cross-device comparisons switch it off."""
    for module in model.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d)):
            module.p = 0.0
    return model


def forward_backward(model: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output of a training forward and the gradients of (output * weights).sum(), flattened."""
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * weights.to(out.dtype)).sum().backward()
    return out.detach(), flat([p.grad for p in model.parameters()])


def assert_as_accurate_as_cpu(gpu: torch.Tensor, cpu: torch.Tensor, exact: torch.Tensor, what: str) -> None:
    gpu_error, cpu_error = relative_error(gpu, exact), relative_error(cpu, exact)
    assert gpu_error <= max(10 * cpu_error, 1e-5), f"{what}: CUDA {gpu_error:.2e} vs CPU {cpu_error:.2e} from float64"


# ------------------------------------------------------------------------------------------------ flags


def test_tf32_switch_takes_effect():
    """The exact-fp32 setting really gives fp32 (else the tolerances below would mean nothing)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1024, 1024, generator=gen), torch.randn(1024, 1024, generator=gen)
    exact = a.double() @ b.double()
    ag, bg = a.to(DEVICE), b.to(DEVICE)
    with float32_mode(False):
        off = relative_error(ag @ bg, exact)
        conv_in = torch.randn(8, 64, FRAMES, 25, generator=gen)
        weight = torch.randn(64, 64, 9, 1, generator=gen) / 24
        conv_exact = nn.functional.conv2d(conv_in.double(), weight.double(), padding=(4, 0))
        conv_off = relative_error(
            nn.functional.conv2d(conv_in.to(DEVICE), weight.to(DEVICE), padding=(4, 0)), conv_exact
        )
    with float32_mode(True):
        on = relative_error(ag @ bg, exact)
    assert off < 1e-5 < 5e-5 < on, f"matmul error with TF32 off {off:.1e}, on {on:.1e}"
    assert conv_off < 1e-5, f"cuDNN convolution error with TF32 off {conv_off:.1e}"


# --------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("representation", ["seq-based", "graph-based", "image-based"])
def test_encoder_on_cuda_equals_cpu(representation):
    """Paper-size encoders: training forward, gradients and evaluation features."""
    torch.manual_seed(0)
    cpu = without_dropout(build_encoder(representation, 128)).train()
    gpu = copy.deepcopy(cpu).to(DEVICE)
    exact = copy.deepcopy(cpu).double()
    x = view_batch(representation, 4, seed=1)
    weights = torch.randn(4, 128, generator=torch.Generator().manual_seed(2))
    out_cpu, grad_cpu = forward_backward(cpu, x, weights)
    out_gpu, grad_gpu = forward_backward(gpu, x.to(DEVICE), weights.to(DEVICE))
    out_exact, grad_exact = forward_backward(exact, x.double(), weights.double())
    assert relative_error(out_gpu, out_cpu) < 1e-5
    assert_as_accurate_as_cpu(out_gpu, out_cpu, out_exact, "output")
    assert_as_accurate_as_cpu(grad_gpu, grad_cpu, grad_exact, "gradients")
    cpu.eval()
    gpu.eval()
    with torch.no_grad():
        features_cpu = cpu(x, knn_eval=True)
        features_gpu = gpu(x.to(DEVICE), knn_eval=True)
    assert relative_error(features_gpu, features_cpu) < 1e-5


def test_whole_sequence_bigru_on_cuda_equals_the_per_frame_function():
    """The paper's BiGRU (150 -> 1024 x 3), one cuDNN call per layer and direction, against the reference's
    frame-by-frame loop spelled out in float64, and the loop run through cuDNN."""
    torch.manual_seed(3)
    model = BIGRU(150, 1024, 3, num_class=128)  # the reference's initialisation
    gru64 = copy.deepcopy(model.encoder.gru).double()
    gru = model.encoder.gru.to(DEVICE)
    x64 = (0.5 * torch.randn(4, FRAMES, 150, dtype=torch.float64)).requires_grad_()
    x = x64.detach().float().to(DEVICE).requires_grad_()
    expected = _literal_per_frame_bigru(gru64, x64)
    ours = causal_bigru(gru, x)[:, -1]
    assert relative_error(ours, expected) < 1e-5
    with torch.no_grad():
        assert relative_error(reference_loop_features(gru, x), expected) < 1e-5
    weights = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    got = torch.autograd.grad((ours * weights.float().to(DEVICE)).sum(), [x, *gru.parameters()])
    want = torch.autograd.grad((expected * weights).sum(), [x64, *gru64.parameters()])
    for (name, _), a, b in zip([("input", None), *gru.named_parameters()], got, want):
        assert relative_error(a, b) < 1e-4, f"gradient of {name}: {relative_error(a, b):.1e}"


# ------------------------------------------------------------------------------------------- MoCo steps


def small_moco(pair: str, seed: int = 0) -> MoCo:
    torch.manual_seed(seed)
    return without_dropout(build_moco(pair, dim=128, K=512, m=0.99, T=0.07, mlp=True, **SMALL))


def run_steps(
    model: nn.Module, base: MoCo, batches: list[list[torch.Tensor]], device: torch.device, **step_kwargs
) -> list[torch.Tensor]:
    optimizer = torch.optim.SGD(base.parameters(), 0.05, momentum=0.9, weight_decay=1e-4)
    losses = []
    for views in batches:
        out = contrastive_step(model, base, [v.to(device) for v in views], optimizer, **step_kwargs)
        losses.append(out.loss)
    return losses


@pytest.mark.parametrize("pair", PAIRS)
def test_three_contrastive_steps_on_cuda_equal_cpu(pair):
    cpu = small_moco(pair)
    gpu = copy.deepcopy(cpu).to(DEVICE)
    start = {k: v.clone() for k, v in cpu.state_dict().items()}
    batches = [pair_views(pair, 8, seed) for seed in range(3)]
    losses_cpu = run_steps(cpu, cpu, batches, torch.device("cpu"))
    losses_gpu = run_steps(gpu, gpu, batches, DEVICE)
    for step, (a, b) in enumerate(zip(losses_gpu, losses_cpu)):
        tolerance = 1e-5 if step == 0 else 1e-4  # later steps start from parameters that differ by rounding
        assert relative_error(a, b) < tolerance, f"losses {[float(v) for v in losses_gpu]} vs CPU {losses_cpu}"
    state_cpu, state_gpu = cpu.state_dict(), gpu.state_dict()
    for ptr in [k for k in state_cpu if "ptr" in k]:
        assert int(state_gpu[ptr]) == int(state_cpu[ptr]) == 24
    for queue in [k for k in state_cpu if k.lower().startswith("queue")]:
        assert relative_error(state_gpu[queue], state_cpu[queue]) < 1e-4
    for (query, _), name in zip((("encoder_q", "encoder_k"), ("encoder_r", "encoder_l")), parse_representation(pair)):
        keys = [k for k in start if k.startswith(query + ".") and start[k].is_floating_point()]
        change_cpu = flat([state_cpu[k] - start[k] for k in keys])
        change_gpu = flat([state_gpu[k].cpu() - start[k] for k in keys])
        error = relative_error(change_gpu, change_cpu)
        assert error < STEP_TOLERANCE[name], f"{query} ({name}) parameter change differs by {error:.1e}"


def test_data_parallel_over_one_gpu_equals_the_bare_model():
    """nn.DataParallel as the reference launches it, with the split step, dropout on (same seed)."""
    pair = "seq-based_and_image-based"
    torch.manual_seed(5)
    bare = build_moco(pair, dim=128, K=512, mlp=True, **SMALL).to(DEVICE)
    base = copy.deepcopy(bare)
    batches = [pair_views(pair, 16, seed) for seed in range(3)]
    with float32_mode(False, deterministic=True):
        torch.manual_seed(6)
        losses_bare = run_steps(bare, bare, batches, DEVICE)
        torch.manual_seed(6)
        losses_dp = run_steps(nn.DataParallel(base, device_ids=[0]), base, batches, DEVICE)
        for a, b in zip(losses_dp, losses_bare):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for key, value in bare.state_dict().items():
            torch.testing.assert_close(base.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
        encoder = base.encoder_q.eval()
        x = view_batch("seq-based", 8, seed=7).to(DEVICE)
        with torch.no_grad():
            torch.testing.assert_close(
                nn.DataParallel(encoder, device_ids=[0])(x, knn_eval=True),
                encoder(x, knn_eval=True),
                rtol=1e-5,
                atol=1e-6,
            )


def test_bf16_autocast_step_is_finite_and_close_to_fp32():
    """The paper's configuration (seq+graph, batch 64, K 16384, MLP heads) for one step from the same state."""
    pair = "seq-based_and_graph-based"
    torch.manual_seed(8)
    fp32 = build_moco(pair, dim=128, K=16384, mlp=True).to(DEVICE)
    bf16 = copy.deepcopy(fp32)
    views = [pair_views(pair, 64, seed=9)]
    loss_fp32 = run_steps(fp32, fp32, views, DEVICE)[0]
    loss_bf16 = run_steps(bf16, bf16, views, DEVICE, autocast_dtype=torch.bfloat16)[0]
    assert torch.isfinite(loss_bf16) and torch.isfinite(loss_fp32)
    assert relative_error(loss_bf16, loss_fp32) < 2e-2, f"loss {float(loss_bf16):.4f} vs {float(loss_fp32):.4f}"
    for query in ("encoder_q", "encoder_r"):
        grads_bf16 = [p.grad for p in getattr(bf16, query).parameters()]
        grads_fp32 = [p.grad for p in getattr(fp32, query).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads_bf16), f"{query}: missing or non-finite"
        error = relative_error(flat(grads_bf16), flat(grads_fp32))
        assert error < 0.2, f"{query}: bf16 gradient differs from fp32 by {error:.2f}"
    assert all(torch.isfinite(v).all() for v in bf16.state_dict().values() if v.is_floating_point())


def test_a_step_never_waits_for_the_device():
    """moco.step promises no host synchronisation: CUDA's sync debug mode turns any into an error."""
    pair = "seq-based_and_graph-based"
    model = small_moco(pair).to(DEVICE)
    optimizer = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=1e-4)
    pinned = [v.pin_memory() for v in pair_views(pair, 16, seed=10)]
    for dtype in (None, torch.bfloat16):  # lazy initialisation of each path first
        contrastive_step(model, model, [v.to(DEVICE) for v in pinned], optimizer, autocast_dtype=dtype)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for dtype in (None, torch.bfloat16):
            views = [v.to(DEVICE, non_blocking=True) for v in pinned]
            contrastive_step(model, model, views, optimizer, autocast_dtype=dtype)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ data and evaluation


def test_pinned_batches_copy_without_blocking(tmp_path):
    from bench import write_clips
    from feeders.datasets import PretrainDataset

    paths = write_clips(tmp_path, 8, seed=1)
    dataset = PretrainDataset(paths, ("sequence", "clip"), seed=0)
    loader = DataLoader(dataset, batch_size=4, num_workers=1, pin_memory=True)
    for views in loader:
        assert all(v.is_pinned() for v in views)
        on_device = [v.to(DEVICE, non_blocking=True) for v in views]
        torch.cuda.synchronize()
        for a, b in zip(on_device, views):
            assert torch.equal(a.cpu(), b)


def test_knn_on_cuda_equals_cpu():
    rng = np.random.default_rng(11)
    train, query = rng.normal(size=(300, 64)).astype(np.float32), rng.normal(size=(80, 64)).astype(np.float32)
    labels, query_labels = rng.integers(0, 5, 300), rng.integers(0, 5, 80)
    for k in (1, 5):
        acc_cpu, pred_cpu = knn_accuracy(train, labels, query, query_labels, k, chunk_size=32, device="cpu")
        acc_gpu, pred_gpu = knn_accuracy(train, labels, query, query_labels, k, chunk_size=32, device=DEVICE)
        assert acc_gpu == acc_cpu
        np.testing.assert_array_equal(pred_gpu, pred_cpu)
