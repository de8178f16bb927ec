"""`phenaki data encode`: a dataset (Shapes World, a video folder, an image folder) → token shards.

Video files are decoded in DataLoader worker processes; unreadable or too-short files are
skipped and counted, never crash the run. Without a given T5, a small closed-vocabulary one
is built from the dataset's own captions (text.build_text_encoder), so everything works
offline; users with a real T5 pass its directory or hub id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import torch

from phenaki_cli.data.datasets import SkippedFiles, Unreadable, VideoClips, captions_hint
from phenaki_cli.data.tokens import ShardIndex, write_shards
from phenaki_cli.errors import UserError
from phenaki_cli.text import TextEncoder, build_text_encoder


def shapes_clips(count: int, frames: int, size: int, prime_frames: int, split: str = "train",
                 continuation_share: float = 0.5, start: int = 0) -> Iterator[tuple]:
    """Shapes World training clips (frames, caption, prime frames); half continue an earlier scene."""
    from phenaki_cli.data.shapes_sampler import sample_clip
    for i in range(start, start + count):
        clip = sample_clip(split, i, frames, size=size, prime_frames=prime_frames,
                           continuation_share=continuation_share)
        yield clip.frames, clip.caption, clip.prime_frames


def shapes_captions() -> list[str]:
    """Captions that cover the Shapes World vocabulary (for its small T5)."""
    from phenaki_cli.data.shapes_sampler import sample_story, split_rng
    from phenaki_cli.data.shapes_world import vocabulary
    return [c.text() for i in range(500) for c in sample_story(split_rng("train", i), 2)] + [" ".join(vocabulary())]


def _as_is(item):
    return item


class FolderClips:
    """Clips of a dataset folder in sample order, decoded by `workers` processes; notes the skipped
    files (`skipped`, each once)."""

    def __init__(self, root: str | Path, frames: int, size: int, fps: float, seed: int, images: bool,
                 count: int | None, workers: int, prime_frames: int = 0, on_skip: Callable[[str], None] | None = None):
        self.source = VideoClips(root, frames, size, fps, seed, images=images)
        self.count = len(self.source) if count is None else count
        self.workers, self.prime_frames, self.skipped = workers, prime_frames, SkippedFiles(on_new=on_skip)

    def captions(self) -> list[str]:
        return [e.caption for e in self.source.entries if e.caption]

    def __iter__(self) -> Iterator[tuple]:
        loader = torch.utils.data.DataLoader(self.source, sampler=range(self.count), batch_size=None,
                                             num_workers=self.workers, collate_fn=_as_is)
        for sample, item in enumerate(loader):
            if isinstance(item, Unreadable):
                self.skipped.add(item)
            else:
                # every other clip trains continuation: its first K frames are given (the causal
                # tokenizer makes them exactly the tokens a story's re-encoded last K frames get)
                yield item[0], item[1], self.prime_frames if sample % 2 else 0


def encode_dataset(data: str, out: str | Path, tokenizer, text_encoder: TextEncoder | None, frames: int,
                   prime_frames: int = 0, count: int | None = None, images: bool = False, fps: float = 8.0,
                   seed: int = 0, workers: int = 0, shard_size: int = 4096,
                   on_total: Callable[[int], None] | None = None,
                   on_batch: Callable[[int], None] | None = None, device: torch.device | None = None,
                   on_skip: Callable[[str], None] | None = None) -> ShardIndex:
    """Encode `data` ('shapes' or a folder) into a shard folder `out` with the tokenizer on `device`;
    returns its index. `on_skip(reason)` hears of the first few files left out, once each."""
    size = tokenizer.config.image_size
    tokenizer.config.time_steps(frames)  # a clear error for a frame count the tokenizer cannot take
    if not images and not 0 <= prime_frames < frames:
        raise UserError(f"--prime-frames {prime_frames} must be fewer than the clip's {frames} frames")
    if prime_frames:
        tokenizer.config.time_steps(prime_frames)
    if images and frames != 1:
        raise UserError(f"image datasets give 1-frame clips, not {frames}")
    if data == "shapes":
        if images:
            raise UserError("Shapes World is video; its first frames already train the image steps")
        count = 4000 if count is None else count
        clips, skipped = shapes_clips(count, frames, size, prime_frames), SkippedFiles()
        captions = shapes_captions() if text_encoder is None else []
    else:
        prime_frames = 0 if images else prime_frames
        folder = FolderClips(data, frames, size, fps, seed, images, count, workers, prime_frames, on_skip)
        count, clips, skipped = folder.count, iter(folder), folder.skipped
        captions = folder.captions()
        if not captions:  # a transformer learns from captions: none at all is a layout mistake
            raise UserError(f"{data}: none of its {len(folder.source.entries)} files has a caption; "
                            f"{captions_hint(Path(data))}")
    if count < 1:
        raise UserError(f"--clips must be at least 1, got {count}")
    if text_encoder is None:
        text_encoder = build_text_encoder(captions, seed=seed)
    if on_total is not None:
        on_total(count)
    return write_shards(out, clips, tokenizer, text_encoder, "image" if images else "video", frames, fps,
                        prime_frames, shard_size=shard_size, source=str(data), skipped=skipped, on_batch=on_batch,
                        device=device)
