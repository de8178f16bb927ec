"""The codec commands: `tokenize` (video → tokens) and `reconstruct` (tokens or video → video, PSNR / SSIM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from phenaki_cli.cli.common import (InferencePrecisionOption, JsonOption, ModelOption, OverwriteOption, QuietOption,
                                    check_precision, say, setup, trim_note)
from phenaki_cli.errors import UserError


def tokenize(video: Path = typer.Argument(..., help="Video, image or folder of images."),
             output: Path = typer.Option(..., "--output", "-o", help="Tokens file (.npz)."),
             model: Path = ModelOption, fps: Optional[float] = typer.Option(None, help="Resample to this frame rate."),
             precision: str = InferencePrecisionOption,
             overwrite: bool = OverwriteOption, as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Encode a video into its grid of discrete tokens."""
    import numpy as np

    from phenaki_cli.codec import Tokens, encode_frames, load_clip, save_tokens
    from phenaki_cli.files import Outputs
    from phenaki_cli.modeldir import load_tokenizer

    setup()
    check_precision(precision)
    Outputs([output], overwrite, [video])
    tokenizer, config_hash = load_tokenizer(model)
    frames, fps, source_frames = load_clip(video, tokenizer, fps)
    grid = encode_frames(tokenizer, frames, precision)
    save_tokens(output, Tokens(grid, fps, len(frames), source_frames, config_hash))
    info = {"output": str(output), "grid": list(grid.shape), "frames": len(frames), "source_frames": source_frames,
            "fps": fps, "config_hash": config_hash, "codes_used": int(np.unique(grid).size)}
    if as_json:
        print(json.dumps(info))
    else:
        trim_note(quiet, len(frames), source_frames, tokenizer)
        say(quiet, f"wrote {output}: {grid.shape[0]}×{grid.shape[1]}×{grid.shape[2]} tokens for {len(frames)} frames")


def reconstruct(source: Path = typer.Argument(..., help="A video (encode → decode) or a tokens .npz (decode)."),
                output: Path = typer.Option(..., "--output", "-o", help="Reconstructed video (.mp4, .gif, folder)."),
                model: Path = ModelOption, compare: Optional[Path] = typer.Option(
                    None, help="Also write input and reconstruction side by side here."),
                fps: Optional[float] = typer.Option(None, help="Resample the input to this frame rate."),
                precision: str = InferencePrecisionOption,
                overwrite: bool = OverwriteOption, as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Round-trip a video through the tokenizer and report PSNR / SSIM."""
    import numpy as np

    from phenaki_cli.codec import decode_grid, encode_frames, load_clip, load_tokens
    from phenaki_cli.eval.metrics import psnr, psnr_per_frame, ssim_per_frame
    from phenaki_cli.files import Outputs
    from phenaki_cli.modeldir import load_tokenizer
    from phenaki_cli.video_io import check_video_output, output_kind

    setup()
    check_precision(precision)
    if compare is not None and source.suffix.lower() == ".npz":
        raise UserError("--compare needs a video input (a tokens file has no original frames)")
    if compare is not None and compare.resolve() == output.resolve():
        raise UserError(f"--compare {compare}: the same file as the output")
    videos = [p for p in (compare, output) if p is not None]  # the reconstruction goes into place last
    for path in videos:
        check_video_output(path)
    outputs = Outputs(videos, overwrite, [source], folders=[p for p in videos if output_kind(p) == "folder"])
    tokenizer, config_hash = load_tokenizer(model)
    if source.suffix.lower() == ".npz":
        tokens = load_tokens(source, config_hash)
        recon = decode_grid(tokenizer, tokens.grid, precision)
        _write_videos(outputs, {output: recon}, tokens.fps)
        info = {"output": str(output), "frames": len(recon)}
    else:
        frames, fps, source_frames = load_clip(source, tokenizer, fps)
        if not as_json:
            trim_note(quiet, len(frames), source_frames, tokenizer)
        recon = decode_grid(tokenizer, encode_frames(tokenizer, frames, precision), precision)
        _write_videos(outputs, {output: recon, **({compare: np.concatenate([frames, recon], axis=2)}
                                                  if compare is not None else {})}, fps)
        per_frame_psnr, per_frame_ssim = psnr_per_frame(frames, recon), ssim_per_frame(frames, recon)
        info = {"output": str(output), "frames": len(recon), "psnr": psnr(frames, recon),
                "ssim": float(per_frame_ssim.mean())}
        if as_json:
            info["per_frame"] = [{"frame": i, "psnr": float(p), "ssim": float(s)}
                                 for i, (p, s) in enumerate(zip(per_frame_psnr, per_frame_ssim))]
    if as_json:
        print(json.dumps(info))
    else:
        scores = f": PSNR {info['psnr']:.2f} dB, SSIM {info['ssim']:.4f}" if "psnr" in info else ""
        say(quiet, f"wrote {output} ({info['frames']} frames){scores}")


def _write_videos(outputs, videos: dict, fps: float) -> None:
    """Write each video to its staged temporary; `outputs` puts them all in place, or none."""
    from phenaki_cli.video_io import VideoWriter, check_video_output

    with outputs.staged() as staged:
        for path, frames in videos.items():
            check_video_output(path, len(frames))  # a .png holds one frame
            with VideoWriter(path, fps, staged_at=staged[path]) as writer:
                writer.write(frames)

