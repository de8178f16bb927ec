import contextlib
import io
import os
import signal
import subprocess
import sys

import pytest
import torch

from phenaki_cli.config import TOKENIZER_PRESETS
from phenaki_cli.modeldir import save_model_dir
from phenaki_cli.tokenizer import CViViT

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A model directory holding a random-weight tiny tokenizer (32×32 frames)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model_dir(path, {"tokenizer": (TOKENIZER_PRESETS["tiny"], CViViT(TOKENIZER_PRESETS["tiny"]))})
    return path


def run_cli(*args, cwd=None, process=False):
    """Run the CLI as a user would; returns (exit code, stdout, stderr).

    In this process by default: the same `main()` a shell runs, without an interpreter and torch start-up
    per call (3-4 s each, most of the suite's time once). What a command may change for the process (signal
    handlers, compute threads, working directory) is put back. `process=True` runs `python -m phenaki_cli`."""
    if process:
        result = subprocess.run([sys.executable, "-m", "phenaki_cli", *map(str, args)], capture_output=True,
                                text=True, cwd=cwd, timeout=300)
        return result.returncode, result.stdout, result.stderr
    from phenaki_cli.cli import main

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    threads, argv, here = torch.get_num_threads(), sys.argv, os.getcwd()
    sys.argv = ["phenaki", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
        torch.set_num_threads(threads)
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    return code, out.getvalue(), err.getvalue()


def one_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), err


def build_tiny_phenaki(prompts=("a red square", "a blue circle"), seed=0, **sampling):
    """A random-weight tiny Phenaki (32×32 frames, windows of 9 frames, K = 5)."""
    from phenaki_cli.config import TRANSFORMER_PRESETS, SamplingConfig
    from phenaki_cli.pipeline import Phenaki
    from phenaki_cli.text import build_text_encoder
    from phenaki_cli.transformer import MaskGIT

    torch.manual_seed(seed)
    text_encoder = build_text_encoder(list(prompts), d_model=32, layers=1, heads=2, seed=seed)
    settings = {"steps": 4, "window_frames": 9, "prime_frames": 5, **sampling}
    return Phenaki(CViViT(TOKENIZER_PRESETS["tiny"]), MaskGIT(TRANSFORMER_PRESETS["tiny"]), text_encoder,
                   SamplingConfig(**settings), fps=8.0, name="tiny")


@pytest.fixture(scope="session")
def tiny_phenaki_dir(tmp_path_factory):
    """A complete random-weight tiny model directory (tokenizer, transformer, text encoder)."""
    path = tmp_path_factory.mktemp("models") / "tiny-phenaki"
    build_tiny_phenaki(prompts=("a red square moves left", "a blue circle grows on a gray background")
                       ).save_pretrained(path)
    return path
