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


def run_cli(*args, cwd=None):
    """Run the installed CLI as a user would; returns (exit code, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", "phenaki_cli", *map(str, args)], capture_output=True,
                            text=True, cwd=cwd, timeout=300)
    return result.returncode, result.stdout, result.stderr
