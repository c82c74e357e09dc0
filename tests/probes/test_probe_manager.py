"""The manager: sites, hook lifetime, gradients untouched, memory bound, logs, callbacks."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

import actlab.probes as P
from actlab.probes import ProbeCallback


def n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class Net(nn.Module):
    def __init__(self, d: int = 16, depth: int = 3, classes: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(1))


def test_sites_and_hooks_removed_on_exit() -> None:
    net = Net()
    with P.probe(net) as p:
        # one hook per activation (sparsity + distribution), per block, and two on the root
        # (its attention_mask keyword: padded tokens are left out)
        assert n_hooks(net) == 3 + 3 + 2
        net(torch.randn(2, 5, 16))
    assert n_hooks(net) == 0
    assert p.sites["sparsity"] == [f"blocks.{i}.act" for i in range(3)]
    assert p.sites["massive"] == [f"blocks.{i}" for i in range(3)]
    assert p.sites["attention"] == []
    assert {r["probe"] for r in p.summary()} == {"sparsity", "distribution", "massive"}


def test_hooks_removed_on_exception_and_failed_attach() -> None:
    net = Net()
    with pytest.raises(ZeroDivisionError), P.probe(net):
        net(torch.randn(1, 4, 16))
        raise ZeroDivisionError
    assert n_hooks(net) == 0

    class Broken(P.SparsityProbe):
        def resolve_sites(self, sites):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), P.probe(net, probes=["massive", Broken()]):
        pass
    assert n_hooks(net) == 0
    with pytest.raises(ValueError, match="available"):
        P.probe(net, probes=["nope"])


def test_register_probe_by_name() -> None:
    @P.register_probe
    class CallCount(P.Probe):
        """Counts hook calls per layer."""

        name = "callcount"

        def __init__(self) -> None:
            super().__init__()
            self.reset()

        def reset(self) -> None:
            self.n: dict[str, int] = {}

        def update(self, name, module, output):  # type: ignore[no-untyped-def]
            self.n[name] = self.n.get(name, 0) + 1

        def summary(self):  # type: ignore[no-untyped-def]
            return {k: {"calls": v} for k, v in self.n.items()}

    net = Net()
    with P.probe(net, probes=["callcount"]) as p:
        net(torch.randn(1, 2, 16))
        net(torch.randn(1, 2, 16))
    assert p.summary().column("calls") == [2, 2, 2]
    assert "callcount" in P.PROBES
    with pytest.raises(TypeError):
        P.register_probe(int)  # type: ignore[arg-type]


def test_probe_errors_name_the_layer() -> None:
    class Bad(P.SparsityProbe):
        def update(self, name, module, output):  # type: ignore[no-untyped-def]
            raise ValueError("bad stats")

    net = Net()
    with pytest.raises(RuntimeError, match=r"blocks\.0\.act"), P.probe(net, probes=[Bad()]):
        net(torch.randn(1, 4, 16))
    assert n_hooks(net) == 0


def test_outputs_and_gradients_unchanged() -> None:
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(3, 7, 16)
    net(x).sum().backward()
    ref_grads = [q.grad.clone() for q in net.parameters()]  # type: ignore[union-attr]
    ref_out = net(x).detach()
    net.zero_grad()
    with P.probe(net, probes=list(P.PROBES)) as p:
        p.set_context(labels=torch.tensor([0, 1, 2]))
        out = net(x)
        out.sum().backward()
    assert torch.equal(out.detach(), ref_out)
    for q, g in zip(net.parameters(), ref_grads, strict=True):
        assert torch.equal(q.grad, g)  # type: ignore[arg-type]


def test_train_stride_samples_every_nth_call_but_keeps_dead_units_exact() -> None:
    net = Net()  # train mode
    with P.probe(net, probes=["sparsity", "massive"], train_stride=3) as p:
        xs = [torch.randn(2, 8, 16) for _ in range(7)]
        for x in xs:
            net(x)
    sp = p.summary("sparsity").get("sparsity", "blocks.0.act")
    assert sp["tokens_sampled"] == 3 * 16  # calls 0, 3, 6 sampled
    with torch.no_grad():
        pre = [net.blocks[0].fc1(x) for x in xs]  # type: ignore[operator]
    alive = torch.stack([(z > 0).reshape(-1, 32).any(0) for z in pre]).any(0)
    assert sp["dead_rate"] == pytest.approx(1 - float(alive.float().mean()))  # every call
    ma = p.summary("massive").get("massive", "blocks.0")
    assert ma["calls"] == 7 and ma["sampled_calls"] == 3


def test_works_in_eval_mode_under_no_grad_and_every_mode() -> None:
    net = Net().eval()
    with P.probe(net, probes=["sparsity"], every=2) as p, torch.no_grad():
        for _ in range(5):
            net(torch.randn(2, 8, 16))
    assert p.summary()[0]["tokens_sampled"] == 3 * 16  # calls 0, 2, 4
    with P.probe(net, probes=["sparsity"], mode="train") as p2:
        net(torch.randn(2, 8, 16))  # eval mode: skipped
    assert len(p2.summary()) == 0


def test_same_seed_same_summary() -> None:
    net = Net()
    xs = [torch.randn(4, 64, 16) for _ in range(3)]

    def run(seed: int) -> list[dict]:
        with P.probe(net, probes=["sparsity", "entropy"], sample=32, seed=seed) as p:
            for x in xs:
                net(x)
        return p.summary().rows

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_memory_bounded_under_long_loop() -> None:
    net = Net(d=16).eval()  # eval mode: every call sampled, staging cycles every 32 calls
    probes = ["sparsity", "distribution", "massive", "entropy", "dse", "infoplane"]
    with P.probe(net, probes=probes, sample=64, max_tokens=256) as p, torch.no_grad():
        sizes = []
        tracemalloc.start()
        for step in range(170):
            p.set_context(labels=torch.arange(8) % 3)
            net(torch.randn(8, 16, 16))
            if step == 80:
                base_py = tracemalloc.get_traced_memory()[0]
            sizes.append(p.nbytes())
        end_py = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    # reservoirs fill within ~35 steps (256 rows / 8 samples), the dead-rate ring buffers at
    # the first window close (step 63); after that the state is periodic: staging queues
    # cycle every 32 calls, dead-unit windows every 64 (8192 rows / 128 per call)
    assert sizes[66:100] == sizes[130:164]
    assert sizes[-1] < 2_000_000
    assert end_py - base_py < 200_000  # no Python-side growth either (bytes)
    res = p["entropy"].res["blocks.0.act"]  # type: ignore[attr-defined]
    assert len(res) == 256 and res.seen == 170 * 64


def test_summary_table_print_and_logs(tmp_path: Path) -> None:
    net = Net()
    jsonl, csv_path = tmp_path / "p.jsonl", tmp_path / "p.csv"
    with P.probe(net, probes=["sparsity", "massive"], log_to=jsonl) as p:
        for step in range(2):
            net(torch.randn(2, 8, 16))
            p.log(step)
            p.log(step, csv_path, reset=step == 0)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 2 * 6 and lines[0]["step"] == 0 and "top_dims" in lines[-1]
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0].keys() == {"step", "probe", "layer", "key", "stat", "value"}
    assert {r["step"] for r in rows} == {"0", "1"}
    buf = io.StringIO()
    Console(file=buf, width=160).print(p.summary())
    assert "probe: massive" in buf.getvalue() and "blocks.2" in buf.getvalue()
    with pytest.raises(ValueError, match=".jsonl or .csv"):
        p.log(0, tmp_path / "p.txt")
    with pytest.raises(ImportError, match="tensorboard"):
        P.probe(net, tensorboard=tmp_path / "tb").log(0)


def test_info_probes_with_labels() -> None:
    torch.manual_seed(1)
    net = Net(d=8)
    with P.probe(net, probes=["infoplane", "dse", "entropy"], where="blocks.*.act") as p:
        for _ in range(3):
            y = torch.randint(0, 3, (30,))
            p.set_context(labels=y)
            net(torch.randn(30, 6, 8) + y[:, None, None].float() * 3)
    info = p.summary("infoplane").get("infoplane", "blocks.2.act")
    assert 0 < info["I_TY_ebab"] <= info["H_Y"] + 1e-9 and info["H_T_ebab"] >= info["I_TY_ebab"]
    assert "I_XT_ebab" not in info  # no input ids: only the bound H(T)
    assert 0 < info["I_TY_kde"] <= info["H_Y"] + 1e-6 and "I_TY_pca" in info
    dse = p.summary("dse").get("dse", "blocks.0.act")
    assert 0 <= dse["dse"] <= dse["dse_max"] and "dsmi" in dse
    ent = p.summary("entropy").get("entropy", "blocks.0.act")
    assert 0 < ent["H_unit_mean"] <= ent["H_unit_max"]


def test_callback_with_a_training_loop(tmp_path: Path) -> None:
    """The trainer protocol: the model is captured on its first forward after train begin."""
    torch.manual_seed(2)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    cb = ProbeCallback(probes=["sparsity"], log_to=tmp_path / "t.jsonl", log_every=2)
    cb.on_train_begin({"task": "toy", "model": "net"})  # no nn.Module in info
    step = 0
    for epoch in (1, 2):
        for _ in range(3):
            net.train()
            loss = net(torch.randn(4, 5, 16)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            cb.on_step_end(step, loss.detach())
        net.eval()
        with torch.no_grad():
            net(torch.randn(4, 5, 16))  # validation: not probed (mode="train")
        cb.on_epoch_end({"epoch": epoch, "step": step}, net)
    cb.on_train_end(None)
    assert n_hooks(net) == 0 and cb._capture is None
    assert [t[0]["epoch"] for t in cb.history] == [1, 2]
    assert cb.history[-1][0]["tokens_sampled"] == 2 * 20  # train mode: calls 0 and 4 sampled
    logged = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(logged) == 3 * 3 + 2 * 3  # steps 2, 4, 6 and two epoch ends, 3 layers each

    with P.probe(net, probes=["massive"]) as p:
        bound = p.callback()
        bound.on_train_begin({})
        net(torch.randn(1, 3, 16))
        bound.on_epoch_end({"epoch": 1, "step": 1}, net)
        bound.on_train_end(None)
        assert p.attached  # a user's manager stays attached until its with-block ends
    assert n_hooks(net) == 0
