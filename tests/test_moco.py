"""MoCo core: InfoNCE, queue, momentum update and the model's step, against literal re-implementations.

Encoders here are tiny stand-in MLPs (anything with an nn.Linear ``fc`` works), so these tests do not
depend on the real encoders.
"""

import copy
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from moco import functional
from moco.builder import (
    MoCo,
    attach_mlp_head,
    build_moco,
    checkpoint_state_dict,
    encoder_state_dict,
    strip_prefix,
)
from moco.functional import contrastive_loss, enqueue, info_nce_labels, info_nce_logits, momentum_update
from moco.step import contrastive_step

DIM, K, T, M = 4, 16, 0.07, 0.9


class TinyEncoder(nn.Module):
    """(N, *) -> (N, out): flatten, one hidden layer, then ``fc`` as the real encoders end."""

    def __init__(self, in_features: int, hidden: int = 6, out: int = DIM) -> None:
        super().__init__()
        self.body = nn.Linear(in_features, hidden)
        self.fc = nn.Linear(hidden, out)

    def forward(self, x):
        return self.fc(torch.relu(self.body(x.flatten(1))))


def make_moco(streams: int, mlp: bool = False, seed: int = 0) -> MoCo:
    torch.manual_seed(seed)
    encoders = [TinyEncoder(5), TinyEncoder(3 * 2)][:streams]
    return MoCo(encoders, dim=DIM, K=K, m=M, T=T, mlp=mlp)


def make_views(streams: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    shapes = [(batch, 5), (batch, 3, 2)][:streams]
    return [torch.randn(s, generator=g) for s in shapes] + [torch.randn(s, generator=g) for s in shapes]


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


# -------------------------------------------------------------------------------------------------
# Pure functions
# -------------------------------------------------------------------------------------------------


def naive_info_nce(q, k, queue, t):
    """Per-sample InfoNCE with Python loops: -log softmax of the positive among positive + queue."""
    total, rows = 0.0, []
    for n in range(q.shape[0]):
        row = [sum(float(q[n, c]) * float(k[n, c]) for c in range(q.shape[1])) / t]
        for j in range(queue.shape[1]):
            row.append(sum(float(q[n, c]) * float(queue[c, j]) for c in range(q.shape[1])) / t)
        rows.append(row)
        total += -(row[0] - math.log(sum(math.exp(v) for v in row)))
    return total / q.shape[0], rows


def test_info_nce_matches_hand_computation():
    g = torch.Generator().manual_seed(1)
    q, k = unit(torch.randn(3, DIM, generator=g)), unit(torch.randn(3, DIM, generator=g))
    queue = unit(torch.randn(5, DIM, generator=g)).t()
    logits, labels = info_nce_logits(q, k, queue, T)
    expected_loss, expected_rows = naive_info_nce(q, k, queue, T)
    assert logits.shape == (3, 6) and labels.tolist() == [0, 0, 0] and labels.dtype == torch.long
    assert torch.allclose(logits, torch.tensor(expected_rows, dtype=torch.float32), atol=1e-5)
    loss, logits2 = contrastive_loss(q, k, queue, T)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert torch.equal(logits, logits2)


def test_info_nce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"queue must be \(C, K\) with C = 4"):
        info_nce_logits(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 7), T)
    with pytest.raises(ValueError, match="query and positive"):
        info_nce_logits(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(4, 7), T)


def test_enqueue_order_and_wrap_around():
    size, dim = 6, 2
    queue = torch.zeros(dim, size)
    ptr = torch.zeros(1, dtype=torch.long)
    literal = [0.0] * size  # value of the key column j holds
    literal_ptr = 0
    for step in range(4):
        keys = torch.stack([torch.full((dim,), 10.0 * step + i) for i in range(4)])  # (4, dim)
        returned = enqueue(queue, ptr, keys)
        assert returned is ptr  # advanced in place, the model's own buffer
        for i in range(4):
            literal[(literal_ptr + i) % size] = 10.0 * step + i
        literal_ptr = (literal_ptr + 4) % size
        assert ptr.tolist() == [literal_ptr]
        assert queue[0].tolist() == literal and queue[1].tolist() == literal
    # step 1 wrote columns 4, 5, 0, 1: the oldest keys went first
    assert literal_ptr == 4 and queue[0].tolist() == [30.0, 31.0, 32.0, 33.0, 22.0, 23.0]


def test_enqueue_divisible_batches_cycle_like_reference_slices():
    queue, ptr = torch.zeros(DIM, K), torch.zeros(1, dtype=torch.long)
    expected = queue.clone()
    p = 0
    for _ in range(5):
        keys = torch.randn(8, DIM)
        enqueue(queue, ptr, keys)
        expected[:, p : p + 8] = keys.T  # the reference's slice assignment
        p = (p + 8) % K
        assert torch.equal(queue, expected) and int(ptr) == p


def test_enqueue_errors():
    with pytest.raises(ValueError, match="cannot enqueue 5 keys into a queue of 4"):
        enqueue(torch.zeros(2, 4), torch.zeros(1, dtype=torch.long), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"keys must be \(B, 2\)"):
        enqueue(torch.zeros(2, 4), torch.zeros(1, dtype=torch.long), torch.zeros(3, 3))


def test_momentum_update_matches_formula():
    g = torch.Generator().manual_seed(2)
    keys = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    queries = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    expected = [k * 0.99 + q * (1.0 - 0.99) for k, q in zip(keys, queries)]
    before = [q.clone() for q in queries]
    momentum_update(keys, queries, 0.99)
    for k, e in zip(keys, expected):
        assert torch.allclose(k, e, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(q, b) for q, b in zip(queries, before))
    with pytest.raises(ValueError, match="2 key tensors but 1 query"):
        momentum_update(keys, queries[:1], 0.5)


# -------------------------------------------------------------------------------------------------
# The model
# -------------------------------------------------------------------------------------------------


def test_state_dict_names_match_the_reference():
    inter = make_moco(2, mlp=True)
    keys = set(inter.state_dict())
    assert {"Queue_S1", "queue_ptr_S1", "Queue_S2", "queue_ptr_S2"} <= keys
    for enc in ("encoder_q", "encoder_k", "encoder_r", "encoder_l"):
        assert {f"{enc}.fc.0.weight", f"{enc}.fc.2.weight", f"{enc}.body.weight"} <= keys
    assert inter.Queue_S1.shape == (DIM, K) and inter.queue_ptr_S1.dtype == torch.long
    assert torch.allclose(inter.Queue_S2.norm(dim=0), torch.ones(K))
    # parameter order q, k, r, l as the reference registers them (the optimizer's state follows it)
    order = [name.split(".")[0] for name, _ in inter.named_parameters()]
    assert [n for i, n in enumerate(order) if i == 0 or order[i - 1] != n] == [
        "encoder_q",
        "encoder_k",
        "encoder_r",
        "encoder_l",
    ]

    intra = make_moco(1)
    assert {"queue", "queue_ptr", "encoder_q.fc.weight", "encoder_k.fc.weight"} <= set(intra.state_dict())
    assert not any(k.startswith(("encoder_r", "Queue_")) for k in intra.state_dict())


def test_key_encoders_start_as_copies_without_gradients():
    model = make_moco(2, mlp=True)
    for q, k in ((model.encoder_q, model.encoder_k), (model.encoder_r, model.encoder_l)):
        for pq, pk in zip(q.parameters(), k.parameters()):
            assert torch.equal(pq, pk) and pq.data_ptr() != pk.data_ptr()
            assert pq.requires_grad and not pk.requires_grad


def test_wrong_output_dim_and_head_are_rejected():
    with pytest.raises(ValueError, match="outputs 4 features but the queue dimension is 8"):
        MoCo([TinyEncoder(5)], dim=8, K=K)
    enc = TinyEncoder(5)
    enc.fc = nn.Identity()
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        attach_mlp_head(enc)
    with pytest.raises(ValueError, match="1 or 2 query encoders"):
        MoCo([TinyEncoder(5)] * 3, dim=DIM, K=K)


def test_forward_is_free_of_side_effects():
    """What nn.DataParallel replicates must not change parameters, queues or pointers."""
    model = make_moco(2, mlp=True)
    before = copy.deepcopy(model.state_dict())
    queries, keys = model(*make_views(2, 4, seed=3))
    assert all(t.shape == (4, DIM) for t in queries + keys)
    assert all(torch.allclose(t.norm(dim=1), torch.ones(4)) for t in queries + keys)
    assert all(t.requires_grad for t in queries) and not any(t.requires_grad for t in keys)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(ValueError, match="expected 4 input views"):
        model(*make_views(2, 4, seed=3)[:3])


def literal_reference_step(model: MoCo, views, lr: float):
    """The reference's builder + training step, written out: per-parameter momentum formula, logits by
    einsum-free loops over streams, slice enqueue, plain SGD (no momentum, no weight decay)."""
    n = model.num_streams
    pairs = [("encoder_q", "encoder_k"), ("encoder_r", "encoder_l")][:n]
    with torch.no_grad():
        for qn, kn in pairs:
            for pq, pk in zip(getattr(model, qn).parameters(), getattr(model, kn).parameters()):
                pk.data = pk.data * model.m + pq.data * (1.0 - model.m)
    qs = [unit(getattr(model, qn)(x)) for (qn, _), x in zip(pairs, views[:n])]
    with torch.no_grad():
        ks = [unit(getattr(model, kn)(x)) for (_, kn), x in zip(pairs, views[n:])]
    if n == 2:
        contrasts = [(qs[0], ks[1], model.Queue_S2), (qs[1], ks[0], model.Queue_S1)]  # q.l vs S2, r.k vs S1
        queues = [("Queue_S1", "queue_ptr_S1", ks[0]), ("Queue_S2", "queue_ptr_S2", ks[1])]
    else:
        contrasts = [(qs[0], ks[0], model.queue)]
        queues = [("queue", "queue_ptr", ks[0])]
    loss = 0
    for q, k, queue in contrasts:
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.clone()], dim=1) / model.T
        loss = loss + nn.functional.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g
        for qname, pname, keys in queues:
            ptr = int(getattr(model, pname))
            getattr(model, qname)[:, ptr : ptr + len(keys)] = keys.T
            getattr(model, pname)[0] = (ptr + len(keys)) % model.K
    return loss.detach()


class EmulatedDataParallel(nn.Module):
    """What nn.DataParallel does to a forward: split the batch, run each part on a fresh replica (whose
    writes are lost), concatenate the outputs. Works on the CPU, so it runs in every test session."""

    def __init__(self, module: nn.Module, replicas: int = 2) -> None:
        super().__init__()
        self.module = module
        self.replicas = replicas

    def forward(self, *inputs):
        outputs = []
        for part in zip(*(x.chunk(self.replicas) for x in inputs)):
            replica = copy.deepcopy(self.module)  # buffers: copies, so their writes are lost
            for name, p in self.module.named_parameters():
                owner_path, _, attr = name.rpartition(".")
                owner = replica.get_submodule(owner_path)
                del owner._parameters[attr]
                # a differentiable copy, as DataParallel's broadcast: in-place writes are lost too,
                # gradients reach the base parameters
                setattr(owner, attr, p.clone())
            outputs.append(replica(*part))
        queries = tuple(torch.cat(t) for t in zip(*(o[0] for o in outputs)))
        keys = tuple(torch.cat(t) for t in zip(*(o[1] for o in outputs)))
        return queries, keys


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("wrapper", ["none", "data_parallel"])
def test_step_matches_literal_reference(streams, wrapper):
    ours, theirs = make_moco(streams, mlp=True), make_moco(streams, mlp=True)
    theirs.load_state_dict(ours.state_dict())
    model = EmulatedDataParallel(ours) if wrapper == "data_parallel" else ours
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.5)
    for step in range(4):  # 4 x 8 keys: the queue of 16 wraps around once
        views = make_views(streams, 8, seed=10 + step)
        out = contrastive_step(model, ours, views, optimizer)
        expected_loss = literal_reference_step(theirs, views, lr=0.5)
        assert out.loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
        assert len(out.logits) == streams and out.logits[0].shape == (8, 1 + K)
    reference_state = theirs.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.allclose(value.float(), reference_state[name].float(), atol=1e-5), name
    ptr = "queue_ptr" if streams == 1 else "queue_ptr_S2"
    assert int(ours.state_dict()[ptr]) == (4 * 8) % K


def test_inter_loss_pairs_each_query_with_the_other_representations_key():
    """loss = CE([q.l, q.Queue_S2]/T) + CE([r.k, r.Queue_S1]/T): with the two queues made different,
    swapping which key or queue a query meets changes the loss."""
    model = make_moco(2)
    queries, keys = model(*make_views(2, 4, seed=5))
    q, r = queries
    k, l = keys
    _, (logits_s1, logits_s2) = model.loss(queries, keys)
    assert torch.allclose(logits_s1[:, 0], (q * l).sum(1) / T) and torch.allclose(
        logits_s1[:, 1:], q @ model.Queue_S2 / T
    )
    assert torch.allclose(logits_s2[:, 0], (r * k).sum(1) / T) and torch.allclose(
        logits_s2[:, 1:], r @ model.Queue_S1 / T
    )


def test_shuffle_bn_single_process_keeps_results():
    """With one process the shuffle permutes and restores the key batch; batch-independent encoders
    then give the same step as without shuffling (checks the un-shuffling)."""
    a, b = make_moco(2), make_moco(2)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    for step in range(2):
        views = make_views(2, 8, seed=20 + step)
        la = contrastive_step(a, a, views, opt_a).loss
        lb = contrastive_step(b, b, views, opt_b, shuffle_bn=True).loss
        assert la.item() == pytest.approx(lb.item(), rel=1e-6)
    assert torch.allclose(a.Queue_S1, b.Queue_S1, atol=1e-6) and torch.allclose(a.Queue_S2, b.Queue_S2, atol=1e-6)


def test_checkpoint_state_dict_round_trip():
    model = make_moco(2, mlp=True)
    state = checkpoint_state_dict(model)
    assert all(k.startswith("module.") for k in state) and "module.Queue_S1" in state
    other = make_moco(2, mlp=True, seed=1)
    other.load_state_dict(strip_prefix(state), strict=True)
    assert all(torch.equal(v, state["module." + k]) for k, v in other.state_dict().items())
    enc = encoder_state_dict(state, "encoder_r")
    assert set(enc) == {"body.weight", "body.bias", "fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"}
    with pytest.raises(KeyError, match="encoder_x"):
        encoder_state_dict(state, "encoder_x")


# -------------------------------------------------------------------------------------------------
# The loss that trains is the loss that is tested
# -------------------------------------------------------------------------------------------------


def paper_loss_by_hand(model: MoCo, views):
    """The paper's loss from the pure function, term by term, on a copy of ``model`` brought to the
    state a step computes its loss in (momentum update applied, queues not yet written)."""
    copied = copy.deepcopy(model)
    copied.momentum_update()
    queries, keys = copied(*views)
    if model.num_streams == 2:
        (q, r), (k, l) = queries, keys
        return [contrastive_loss(q, l, copied.Queue_S2, T), contrastive_loss(r, k, copied.Queue_S1, T)]
    (q,), (k,) = queries, keys
    return [contrastive_loss(q, k, copied.queue, T)]


@pytest.mark.parametrize("streams", [1, 2])
def test_step_loss_is_contrastive_loss_applied_per_term(streams):
    """inter: the step's loss is contrastive_loss(q, l, Queue_S2) + contrastive_loss(r, k, Queue_S1),
    its logits those two terms' logits; intra: one term contrastive_loss(q, k, queue). Bit for bit,
    over steps whose queues hold keys written by earlier steps."""
    model = make_moco(streams, mlp=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(3):
        views = make_views(streams, 8, seed=30 + step)
        terms = paper_loss_by_hand(model, views)
        out = contrastive_step(model, model, views, optimizer)
        assert len(out.logits) == len(terms) == streams
        expected = terms[0][0] if streams == 1 else terms[0][0] + terms[1][0]
        assert torch.equal(out.loss, expected.detach())
        for got, (_, want) in zip(out.logits, terms):
            assert torch.equal(got, want.detach())
    if streams == 2:  # the pairing matters: the crossed terms give another loss
        views = make_views(2, 8, seed=40)
        (q, r), (k, l) = model(*views)
        crossed = contrastive_loss(q, k, model.Queue_S1, T)[0] + contrastive_loss(r, l, model.Queue_S2, T)[0]
        assert abs(crossed.item() - model.loss((q, r), (k, l))[0].item()) > 1e-3


def test_model_loss_sums_the_terms_and_labels_are_the_positive_column():
    model = make_moco(2)
    with torch.no_grad():
        queries, keys = model(*make_views(2, 4, seed=6))
    loss, logits = model.loss(queries, keys)
    (q, r), (k, l) = queries, keys
    expected = naive_info_nce(q, l, model.Queue_S2, T)[0] + naive_info_nce(r, k, model.Queue_S1, T)[0]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert info_nce_labels(logits[0]).tolist() == [0, 0, 0, 0]


def test_step_rejects_a_rank_or_world_size_that_is_not_this_processes():
    """A wrong world_size would slice shuffled keys and size the queues' batch wrongly: refused before
    anything changes."""
    model = make_moco(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = copy.deepcopy(model.state_dict())
    views = make_views(2, 4, seed=7)
    with pytest.raises(ValueError, match=r"rank=0, world_size=2 but this process is rank 0 of 1$"):
        contrastive_step(model, model, views, optimizer, world_size=2)
    with pytest.raises(ValueError, match=r"rank=1, world_size=1 but"):
        contrastive_step(model, model, views, optimizer, rank=1)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_step_under_a_one_process_group_matches_no_group(tmp_path):
    """With a process group live, rank and world_size are checked against it and the step is the same."""
    a, b = make_moco(2), make_moco(2)
    b.load_state_dict(a.state_dict())
    views = make_views(2, 8, seed=8)
    expected = contrastive_step(b, b, views, torch.optim.SGD(b.parameters(), lr=0.1)).loss
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="world_size=2 but this process is rank 0 of 1"):
            contrastive_step(a, a, views, torch.optim.SGD(a.parameters(), lr=0.1), world_size=2)
        got = contrastive_step(a, a, views, torch.optim.SGD(a.parameters(), lr=0.1), world_size=1).loss
    finally:
        dist.destroy_process_group()
    assert torch.equal(got, expected) and torch.equal(a.Queue_S2, b.Queue_S2)


# -------------------------------------------------------------------------------------------------
# Private torch API: torch._foreach_* in the momentum update
# -------------------------------------------------------------------------------------------------


def momentum_tensors(seed: int):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (5,), (), (2, 3, 1)]
    return [torch.randn(s, generator=g) for s in shapes], [torch.randn(s, generator=g) for s in shapes]


def test_foreach_momentum_update_exists_and_equals_the_per_tensor_loop():
    """torch._foreach_mul_ / _foreach_add_ are private: this fails loudly if they disappear or compute
    anything but the per-tensor update, bit for bit."""
    assert functional._HAS_FOREACH, "torch._foreach_mul_/_foreach_add_ are gone; momentum_update now runs the loop"
    keys, queries = momentum_tensors(3)
    fused, looped = [k.clone() for k in keys], [k.clone() for k in keys]
    functional._momentum_update_foreach(fused, queries, 0.99)
    functional._momentum_update_loop(looped, queries, 0.99)
    for f, lp, k, q in zip(fused, looped, keys, queries):
        assert torch.equal(f, lp)
        assert torch.allclose(f, 0.99 * k + 0.01 * q, rtol=1e-6, atol=1e-7)
        assert not torch.equal(f, k)


def test_momentum_update_without_foreach_takes_the_loop(monkeypatch):
    keys, queries = momentum_tensors(4)
    fused = [k.clone() for k in keys]
    momentum_update(fused, queries, 0.9)
    monkeypatch.setattr(functional, "_HAS_FOREACH", False)
    monkeypatch.setattr(torch, "_foreach_mul_", None)  # a call would now fail
    looped = [k.clone() for k in keys]
    momentum_update(looped, queries, 0.9)
    assert all(torch.equal(f, lp) for f, lp in zip(fused, looped))


def test_build_moco_builds_the_named_encoders():
    model = build_moco("seq-based_and_graph-based", dim=8, K=16, gru_hidden_size=4, gru_layers=1, agcn_base_channels=4)
    assert [type(e).__name__ for e in model.query_encoders()] == ["BIGRU", "AGCN"]
    assert model.Queue_S1.shape == (8, 16) and model.num_streams == 2
    assert [type(e).__name__ for e in build_moco("image-based", dim=8, K=16, hcn_out_channels=4).key_encoders()] == [
        "HCN"
    ]
