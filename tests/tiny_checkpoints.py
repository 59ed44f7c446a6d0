"""Small random checkpoints of every family, for the server's tests: fast to build, and their outputs
depend on their inputs (init_std = 0.3 makes each token's logits peaked and context-dependent)."""

from __future__ import annotations

from pathlib import Path

import torch

from nanoformer.config import ModelConfig
from nanoformer.models import build_model
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.checkpoint import save_checkpoint

TEXT = ("나는 학교에 간다. 학교에 나는 간다. I go to school. The cat sat on the mat. Ein Mann fährt Fahrrad. "
        "To be, or not to be: that is the question. abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789")


def tokenizer() -> Tokenizer:
    return Tokenizer.train_char(texts=[TEXT])


def write(folder: Path, arch: str, seed: int = 0, **extra) -> Path:
    tok = tokenizer()
    sp = tok.special_ids()
    torch.manual_seed(seed)
    config = ModelConfig(arch=arch, vocab_size=tok.vocab_size, d_model=32, n_heads=4, n_layers=2, d_ff=64,
                         max_positions=64, dropout=0.0, positional="sinusoidal", init_std=0.3, pad_id=sp["pad"],
                         bos_id=sp["bos"], eos_id=sp["eos"], mask_id=sp["mask"], cls_id=sp["cls"],
                         sep_id=sp["sep"], unk_id=sp["unk"], **extra)
    model = build_model(config).eval()
    return save_checkpoint(folder, model, {"model": config.to_dict()}, tok)


def all_families(root: Path) -> dict[str, Path]:
    """name -> checkpoint folder: a GPT, a translator, a masked-LM encoder and a classifier."""
    return {
        "gpt": write(root / "gpt", "decoder", seed=1),
        "translator": write(root / "translator", "encoder-decoder", seed=2),
        "bert": write(root / "bert", "encoder", seed=3),
        "sentiment": write(root / "sentiment", "encoder", seed=4, num_labels=2, labels=["negative", "positive"]),
    }


def trained_gpt(folder: Path) -> Path:
    """A character GPT trained for a few seconds on two sentences (its continuations follow its prompt)."""
    from test_cli import write_config

    from nanoformer.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, steps=150)
    text = config.read_text(encoding="utf-8").replace("dropout = 0.1", "dropout = 0.0")
    config.write_text(text.replace("max_positions = 32", "max_positions = 64"), encoding="utf-8")
    assert main(["train", str(config), "--out", str(folder / "gpt"), "--quiet"]) == 0
    return folder / "gpt"


def trained_translator(folder: Path) -> Path:
    """The word-for-word German -> English toy translator of tests/test_translation_cli.py."""
    from test_translation_cli import write_config

    from nanoformer.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    assert main(["train", str(write_config(folder)), "--out", str(folder / "translator"), "--quiet"]) == 0
    return folder / "translator"


class LiveServer:
    """An app on uvicorn in a background thread, on a free loopback port."""

    def __init__(self, app) -> None:
        import threading

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
