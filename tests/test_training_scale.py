"""Training at scale: torchrun DDP / FSDP, token shards, image data, checkpoints kept, previews, presets."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from phenaki_cli.config import TOKENIZER_PRESETS, TRANSFORMER_PRESETS
from phenaki_cli.data.tokens import load_shards
from phenaki_cli.tokenizer import CViViT
from phenaki_cli.transformer import MaskGIT

TORCHRUN = Path(sys.executable).with_name("torchrun")


def torchrun(*args, processes: int = 2) -> tuple[int, str]:
    """Exit status and stderr. A failure message needs a long tail of stderr: torchrun's own report of a
    failed process (~2,000 characters) comes after what the process itself printed before it died."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")  # a crash shows its Python stack
    result = subprocess.run([str(TORCHRUN), "--nproc-per-node", str(processes), "-m", "phenaki_cli",
                             *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    return result.returncode, result.stderr


def losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: Path, b: Path, name: str, skip: str = "") -> None:
    x, y = load_file(str(a / f"{name}.safetensors")), load_file(str(b / f"{name}.safetensors"))
    assert x.keys() == y.keys()
    for key in x:
        if not skip or skip not in key:
            torch.testing.assert_close(x[key].float(), y[key].float(), rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny Shapes World video folder, a tiny tokenizer trained on it, and its token shards."""
    root = tmp_path_factory.mktemp("scale")
    code, _, err = run_cli("data", "shapes", "-n", "6", "-o", root / "ds", "--frames-per-scene", "9", "--size", "32")
    assert code == 0, err
    code, _, err = run_cli("train-tokenizer", root / "ds", "-o", root / "tok", "--preset", "tiny", "--steps", "2",
                           "--batch-size", "2", "--frames", "5", "-q")
    assert code == 0, err
    code, _, err = run_cli("data", "encode", root / "ds", "-o", root / "shards", "--tokenizer", root / "tok",
                           "--frames", "5", "--prime-frames", "1", "--shard-size", "4", "-q")
    assert code == 0, err
    return root


def test_paper_presets_have_the_paper_sizes():
    """Built on the meta device: no memory, only shapes. Table 7: 24 layers of 2048 ≈ 1.8 B parameters."""
    with torch.device("meta"):
        transformer = MaskGIT(TRANSFORMER_PRESETS["paper"])
        tokenizer = CViViT(TOKENIZER_PRESETS["paper"])
    count = sum(p.numel() for p in transformer.parameters())
    assert 1.75e9 < count < 1.9e9, count
    assert len(transformer.blocks) == 24 and transformer.config.dim == 2048
    config = tokenizer.config
    assert (config.spatial_depth, config.temporal_depth, config.dim, config.codebook_size) == (4, 4, 512, 8192)
    assert len(tokenizer.encoder_spatial) == len(tokenizer.encoder_temporal) == 4


def test_shards_hold_tokens_embeddings_and_what_made_them(dataset):
    index, examples = load_shards(dataset / "shards")
    assert [s["examples"] for s in index.shards] == [4, 2] and len(examples) == 6
    assert examples.tokens.shape == (6, 3, 4, 4) and examples.tokens.dtype == np.int16
    assert set(examples.prefix_steps.tolist()) == {0, 1}  # every other clip trains continuation
    assert set(examples.embeddings) == set(examples.prompts) and all(examples.prompts)
    assert index.text_dim == next(iter(examples.embeddings.values())).shape[1]
    # a tokenizer trained further is another tokenizer: its tokens would mean something else
    code, _, err = run_cli("train-tokenizer", dataset / "ds", "-o", dataset / "tok2", "--preset", "tiny", "--steps",
                           "1", "--batch-size", "2", "--frames", "5", "-q", "--seed", "1")
    assert code == 0, err
    code, _, err = run_cli("train", dataset / "shards", "-o", dataset / "wrong", "--tokenizer", dataset / "tok2",
                           "--preset", "tiny", "--frames", "5", "--prime-frames", "1", "--steps", "1")
    assert code == 2 and "made by another tokenizer" in err and not (dataset / "wrong").exists()


def test_two_processes_match_one_process_accumulating_the_same_batch(dataset, tmp_path):
    """torchrun DDP (gloo, 2 processes) and FSDP equal one process with --accumulate 2, and runs resume
    across strategies: the global batch is split into the same parts (train/distributed.py)."""
    common = ["train", dataset / "shards", "--tokenizer", dataset / "tok", "--preset", "tiny", "--frames", "5",
              "--prime-frames", "1", "--batch-size", "2", "--save-every", "2", "--preview-every", "0", "-q"]
    code, _, err = run_cli(*common, "-o", tmp_path / "single", "--steps", "4", "--accumulate", "2")
    assert code == 0, err
    code, err = torchrun(*common, "-o", tmp_path / "ddp", "--steps", "4")
    assert code == 0, err[-12000:]
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), rel=1e-5)
    assert_same_weights(tmp_path / "single", tmp_path / "ddp", "transformer")
    # FSDP for two steps, then the same run resumed by DDP for the last two
    code, err = torchrun(*common, "-o", tmp_path / "mixed", "--steps", "4", "--until-step", "2", "--strategy", "fsdp")
    assert code == 0, err[-12000:]
    code, err = torchrun(*common, "-o", tmp_path / "mixed", "--steps", "4", "--resume")
    assert code == 0, err[-12000:]
    assert losses(tmp_path / "mixed") == pytest.approx(losses(tmp_path / "single"), rel=1e-5)
    assert_same_weights(tmp_path / "single", tmp_path / "mixed", "transformer")


def test_ctrl_c_under_torchrun_stops_every_process_cleanly(dataset, tmp_path):
    """The processes exit without a traceback of their own, process 0 says which step was kept, and
    the kept checkpoint resumes. (torchrun's own report of the signal is torchrun's.)"""
    import signal
    import time

    run = tmp_path / "run"
    args = ["train-tokenizer", dataset / "ds", "-o", run, "--preset", "tiny", "--steps", "100000", "--batch-size",
            "2", "--frames", "5", "--save-every", "2", "--preview-every", "0", "-q"]
    process = subprocess.Popen([str(TORCHRUN), "--nproc-per-node", "2", "-m", "phenaki_cli", *map(str, args)],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 120
    while not run.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=120)[1]
    said = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(said) == 1 and "keeps the checkpoint of step" in said[0], err[-3000:]
    assert "phenaki_cli/" not in err, err[-3000:]  # no traceback from a process (only torchrun's own)
    saved = int(said[0].split("checkpoint of step ")[1].split(";")[0])
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == saved
    code, _, err = run_cli("train-tokenizer", dataset / "ds", "-o", run, "--resume", "--until-step", str(saved + 1),
                           "-q")
    assert code == 0, err


def test_tokenizer_ddp_matches_accumulation(dataset, tmp_path):
    common = ["train-tokenizer", dataset / "ds", "--preset", "tiny", "--steps", "3", "--batch-size", "2",
              "--frames", "5", "--preview-every", "0", "-q"]
    code, _, err = run_cli(*common, "-o", tmp_path / "single", "--accumulate", "2")
    assert code == 0, err
    code, err = torchrun(*common, "-o", tmp_path / "ddp")
    assert code == 0, err[-12000:]
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), rel=1e-5)
    # the dead-code counters count forward passes, which accumulation doubles: parameters only
    assert_same_weights(tmp_path / "single", tmp_path / "ddp", "tokenizer", skip="steps_unused")


def test_keep_last_checkpoints_and_previews(dataset, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("train", dataset / "shards", "-o", out, "--tokenizer", dataset / "tok", "--preset", "tiny",
                           "--frames", "5", "--prime-frames", "1", "--batch-size", "2", "--steps", "8",
                           "--save-every", "2", "--keep-last", "2", "--preview-every", "4", "-q")
    assert code == 0, err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000006", "step-000008"]
    assert sorted(p.name for p in (out / "previews").iterdir()) == [
        "step-000004.mp4", "step-000004.txt", "step-000008.mp4", "step-000008.txt"]
    # every kept checkpoint is a complete training folder: it plays and it resumes
    older = out / "checkpoints" / "step-000006"
    assert [json.loads(line)["step"] for line in (older / "metrics.jsonl").read_text().splitlines()][-1] == 6
    code, _, err = run_cli("generate", "a red circle", "-o", tmp_path / "g.mp4", "--model", older, "-q")
    assert code == 0, err
    assert not list(tmp_path.glob(".run*"))  # no temporary or old folders left behind


def test_image_folder_trains_the_image_steps_and_unreadable_files_are_counted(dataset, tmp_path):
    from phenaki_cli.video_io import read_video, write_png

    images = tmp_path / "laion"
    images.mkdir()
    for i, video in enumerate(sorted((dataset / "ds" / "videos").glob("*.mp4"))[:3]):
        write_png(images / f"{i:06d}.png", read_video(video).frames[0])
        (images / f"{i:06d}.txt").write_text(f"picture {i}\n")
    (images / "000009.png").write_bytes(b"not a png")  # corrupt: skipped and counted
    code, _, err = run_cli("train", dataset / "shards", "-o", tmp_path / "run", "--tokenizer", dataset / "tok",
                           "--preset", "tiny", "--frames", "5", "--prime-frames", "1", "--batch-size", "2",
                           "--steps", "2", "--images", images, "--image-share", "0.5", "--preview-every", "0")
    assert code == 0, err
    assert "1 unreadable or too-short files were skipped" in err
    index, shards = load_shards(tmp_path / "run.images")
    assert index.kind == "image" and shards.tokens.shape == (3, 1, 4, 4) and index.skipped == 1
    assert set(shards.prompts) == {"picture 0", "picture 1", "picture 2"}


def test_training_options_are_checked_before_any_work(dataset, tmp_path):
    common = ["train", dataset / "shards", "-o", tmp_path / "run", "--tokenizer", dataset / "tok", "--preset", "tiny",
              "--frames", "5", "--prime-frames", "1"]
    for args, message in [(["--precision", "fp8"], "--precision 'fp8'"), (["--strategy", "zero"], "--strategy 'zero'"),
                          (["--keep-last", "0"], "--keep-last must be at least 1"),
                          (["--strategy", "fsdp", "--ema", "0.99"], "--ema is not supported with --strategy fsdp"),
                          (["--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA device")]:
        code, _, err = run_cli(*common, *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
        assert not (tmp_path / "run").exists()
    if importlib.util.find_spec("tensorboard") is None:
        code, _, err = run_cli(*common, "--steps", "1", "--tensorboard", tmp_path / "tb")
        assert code == 2 and "--tensorboard needs the tensorboard package" in err, err
    else:
        code, _, err = run_cli(*common, "--steps", "1", "--tensorboard", tmp_path / "tb", "-q")
        assert code == 0 and list((tmp_path / "tb").glob("events.*")), err
    code, _, err = run_cli("data", "encode", dataset / "ds", "-o", tmp_path / "s", "--tokenizer", dataset / "tok",
                           "--frames", "6")
    assert code == 2 and "got 6 frames" in err and not (tmp_path / "s").exists()


def test_fine_tuning_starts_from_the_given_model(dataset, tmp_path):
    common = ["train", dataset / "shards", "--tokenizer", dataset / "tok", "--frames", "5", "--prime-frames", "1",
              "--batch-size", "2", "--preview-every", "0", "-q"]
    code, _, err = run_cli(*common, "-o", tmp_path / "base", "--preset", "tiny", "--steps", "2")
    assert code == 0, err
    # a step of (almost) no learning rate: the fine-tuned weights are the base model's
    code, _, err = run_cli(*common, "-o", tmp_path / "tuned", "--init-from", tmp_path / "base", "--steps", "1",
                           "--lr", "1e-12", "--tasks", "predict=0.2,box=0.2")
    assert code == 0, err
    assert_same_weights(tmp_path / "base", tmp_path / "tuned", "transformer")
    code, _, err = run_cli(*common, "-o", tmp_path / "bad", "--init-from", tmp_path / "base", "--steps", "1",
                           "--tasks", "predict=0.8,box=0.8")
    assert code == 2 and "sum to at most 1" in err
    code, _, err = run_cli(*common, "-o", tmp_path / "bad", "--init-from", tmp_path / "base", "--steps", "1",
                           "--corrupt", "1.5")
    assert code == 2 and "--corrupt must lie in [0, 1), got 1.5" in err and not (tmp_path / "bad").exists()
    code, _, err = run_cli(*common, "-o", tmp_path / "bad", "--init-from", tmp_path / "base", "--steps", "1",
                           "--change-weight", "0")
    assert code == 2 and "--change-weight must lie in (0, 100], got 0.0" in err and not (tmp_path / "bad").exists()
    code, _, err = run_cli(*common, "-o", tmp_path / "bad", "--init-from", tmp_path / "base", "--steps", "1",
                           "--crop-share", "1.5")
    assert code == 2 and "--crop-share must lie in [0, 1], got 1.5" in err and not (tmp_path / "bad").exists()
    # text layers may be added (they start as the identity): the base model's weights carry over unchanged
    (tmp_path / "text.json").write_text('{"text_layers": 1}')
    own_tokenizer = [a for a in common if a not in ("--tokenizer", dataset / "tok")]  # the base model's, by default
    code, _, err = run_cli(*own_tokenizer, "-o", tmp_path / "reading", "--init-from", tmp_path / "base", "--steps",
                           "1", "--lr", "1e-12", "--config", tmp_path / "text.json")
    assert code == 0, err
    base = load_file(str(tmp_path / "base" / "transformer.safetensors"))
    reading = load_file(str(tmp_path / "reading" / "transformer.safetensors"))
    assert {k for k in reading if k not in base} and all(k.startswith("text_blocks.") for k in reading if k not in base)
    for key in base:
        torch.testing.assert_close(reading[key].float(), base[key].float(), rtol=1e-4, atol=1e-5, msg=key)
    # a fresh cross-attention: the rest of the base model carries over, the prompt is read anew from zero
    code, _, err = run_cli(*own_tokenizer, "-o", tmp_path / "fresh", "--init-from", tmp_path / "base", "--steps",
                           "1", "--lr", "1e-12", "--config", tmp_path / "text.json", "--fresh-cross-attention")
    assert code == 0, err
    fresh = load_file(str(tmp_path / "fresh" / "transformer.safetensors"))
    for key in base:
        if ".cross." not in key:
            torch.testing.assert_close(fresh[key].float(), base[key].float(), rtol=1e-4, atol=1e-5, msg=key)
    assert all(fresh[key].abs().max() < 1e-6 for key in fresh if ".cross.to_out." in key)
    code, _, err = run_cli(*common, "-o", tmp_path / "nothing", "--preset", "tiny", "--steps", "1",
                           "--fresh-cross-attention")
    assert code == 2 and "--fresh-cross-attention" in err and "--init-from" in err and "Traceback" not in err
    (tmp_path / "deeper.json").write_text('{"depth": 3}')
    code, _, err = run_cli(*common, "-o", tmp_path / "deeper", "--init-from", tmp_path / "base", "--steps", "1",
                           "--config", tmp_path / "deeper.json")
    assert code == 2 and "asks for depth 3" in err and "may only add text_layers" in err and "Traceback" not in err
    assert not (tmp_path / "deeper").exists()


def test_code_features_carry_the_tokenizers_codes(dataset, tmp_path):
    """code_features: the transformer holds its tokenizer's normalized codes (filled when training
    starts, kept in the model directory), so two codes with the same vector embed alike; a size that
    is not the tokenizer's code_dim is refused before any work."""
    from phenaki_cli.config import TransformerConfig
    from phenaki_cli.modeldir import load_tokenizer
    from phenaki_cli.pipeline import Phenaki

    common = ["train", dataset / "shards", "--tokenizer", dataset / "tok", "--frames", "5", "--prime-frames", "1",
              "--batch-size", "2", "--preview-every", "0", "--preset", "tiny", "--steps", "1", "-q"]
    (tmp_path / "codes.json").write_text('{"code_features": 16}')
    code, _, err = run_cli(*common, "-o", tmp_path / "run", "--config", tmp_path / "codes.json")
    assert code == 0, err
    model = Phenaki.from_pretrained(tmp_path / "run").transformer
    tokenizer, _ = load_tokenizer(dataset / "tok")
    codes = tokenizer.quantizer.normalized_codes().detach()
    assert torch.equal(model.codes[:len(codes)], codes) and not model.codes[len(codes):].any()
    twin = MaskGIT(TransformerConfig(**{**vars(model.config), "code_features": 16}))
    twin.token_embedding.weight.data[5] = twin.token_embedding.weight.data[3]
    twin.set_codes(torch.nn.functional.normalize(torch.randn(256, 16), dim=-1))
    assert not torch.equal(twin.embed(torch.tensor([3])), twin.embed(torch.tensor([5])))
    twin.codes[5] = twin.codes[3]
    assert torch.equal(twin.embed(torch.tensor([3])), twin.embed(torch.tensor([5])))
    (tmp_path / "wrong.json").write_text('{"code_features": 8}')
    code, _, err = run_cli(*common, "-o", tmp_path / "wrong", "--config", tmp_path / "wrong.json")
    assert code == 2 and "code_features 8 but the tokenizer's codes have 16 dimensions" in err
    assert "Traceback" not in err and not (tmp_path / "wrong").exists()


def test_loading_a_shard_reads_its_embeddings_once(tmp_path):
    """Each distinct prompt's embedding is a copy of its row, not a view that keeps (yet another
    read of) the whole table alive: memory stays proportional to the shard."""
    import tracemalloc

    from phenaki_cli.data.tokens import TokenExamples

    prompts = [f"prompt {i}" for i in range(300)]
    rng = np.random.default_rng(0)
    examples = TokenExamples(rng.integers(0, 256, (300, 3, 4, 4)).astype(np.int16), prompts,
                             np.zeros(300, dtype=np.int64),
                             {p: rng.standard_normal((12, 64)).astype(np.float16) for p in prompts})
    examples.save(tmp_path / "shard.npz")
    table_bytes = 300 * 12 * 64 * 2
    tracemalloc.start()
    loaded = TokenExamples.load(tmp_path / "shard.npz")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert loaded.prompts == prompts and np.array_equal(loaded.embeddings["prompt 7"], examples.embeddings["prompt 7"])
    assert peak < 5 * table_bytes, peak


def test_cpu_minutes_keep_equal_compute_checkpoints_and_stop(dataset, tmp_path):
    """--cpu-minutes: a checkpoint when the process's CPU time passes each mark, kept even with
    --keep-last 1, the run ends at the last, and resuming a finished run trains nothing more
    (learning curves at equal compute)."""
    out = tmp_path / "run"
    args = ["train", dataset / "shards", "-o", out, "--tokenizer", dataset / "tok", "--preset", "tiny", "--frames",
            "5", "--prime-frames", "1", "--batch-size", "2", "--steps", "100000", "--save-every", "5",
            "--keep-last", "1", "--preview-every", "0", "--cpu-minutes", "0.01,0.04", "--threads", "1",
            "--tasks", "predict=0.2,box=0.1", "--corrupt", "0.1", "-q"]
    code, _, err = run_cli(*args)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 1 < len(rows) < 100000 and rows[-1]["cpu_seconds"] >= 0.04 * 60 > rows[-2]["cpu_seconds"]
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    first_past = next(r["step"] for r in rows if r["cpu_seconds"] >= 0.01 * 60)
    # one checkpoint per mark, at the first step past it (one, if a slow step passed both); the saves
    # every 5 steps between them replace only the folder's own (--keep-last 1)
    assert kept == sorted({f"step-{first_past:06d}", f"step-{rows[-1]['step']:06d}"})
    code, _, err = run_cli(*args, "--resume")
    assert code == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(rows)
    # --resume alone keeps the run's marks (a few steps more would be trained without them)
    alone = ["train", dataset / "shards", "-o", out, "--resume", "--until-step", str(rows[-1]["step"] + 3)]
    code, _, err = run_cli(*alone)
    assert code == 0 and "--cpu-minutes 0.01,0.04" in err and "--tasks predict=0.2,box=0.1," in err, err
    assert "--corrupt 0.1" in err, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(rows)
    bad = [tmp_path / "bad" if a == out else "0.04,0.01" if a == "0.01,0.04" else a for a in args]
    code, _, err = run_cli(*bad)
    assert code == 2 and "--cpu-minutes must be increasing positive minutes" in err
