"""Two ``torchrun`` processes (gloo, CPU) give the loss and gradients of one process on the whole batch."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import dist_worker
from training.towers.scratch_text import train_tokenizer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("loss_kind", ["softmax", "sigmoid"])
def test_two_processes_equal_one_process_on_the_global_batch(
    tmp_path: Path, tower_weights: Path, loss_kind: str
) -> None:
    tokenizer = tmp_path / "tokenizer.json"
    corpus = [f"a {c} {s}" for c in ("red", "blue", "green", "pink") for s in ("circle", "square")]
    train_tokenizer(corpus, vocab_size=100).save(str(tokenizer))
    out = tmp_path / "dist.pt"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", dist_worker.__file__, str(out), loss_kind, str(tower_weights),
        str(tokenizer),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(out)
    assert result["world"] == 2

    model = dist_worker.make_model(loss_kind, tower_weights, tokenizer)
    features, captions = dist_worker.fixed_batch(model.image_tower.output_dim)
    loss = dist_worker.step(model, model, features, captions)
    assert result["loss"] == pytest.approx(loss.item(), abs=1e-5)
    text_grads = [n for n in result["grads"] if n.startswith("text_tower.")]
    assert text_grads, "the text tower must be trainable"
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.allclose(result["grads"][name], param.grad, atol=1e-5), name
    # a world-size-1 run on half the batch differs: the comparison is sensitive to the global batch
    half = dist_worker.make_model(loss_kind, tower_weights, tokenizer)
    assert abs(dist_worker.step(half, half, features[:4], captions[:4]).item() - loss.item()) > 1e-3
