"""Video in and out: RGB uint8 frames (F, H, W, 3) ⇄ files, through the ffmpeg of imageio-ffmpeg.

Reading: mp4 / webm / mov / mkv / avi / gif, a single image, or a folder of images (sorted
by name). Frames always come back RGB uint8, whatever the container (the public Phenaki
code read mp4 as BGR; a test guards against that class of bug).

Resize policy (`size`): scale so the shorter side equals `size` (antialiased bilinear),
then crop the centre square. Frame-rate policy (`fps`): ffmpeg's fps filter drops or
repeats frames to the target rate.

Writing is atomic (temporary file, checked, then renamed: files.py): mp4/mov/mkv as H.264 yuv420p (odd sizes
are padded to even, +faststart so it plays while loading), webm as VP9, gif with a
per-video palette, or a folder of PNGs when the path has no suffix.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
import torch.nn.functional as F

from phenaki_cli.errors import UserError
from phenaki_cli.files import atomic_path

DEFAULT_FPS = 8.0
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class Video:
    frames: np.ndarray  # (F, H, W, 3) uint8, RGB
    fps: float


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg_frames(path: Path, fps: float | None) -> tuple[np.ndarray, float]:
    output_params = ["-vf", f"fps={fps}"] if fps else None
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=output_params)
        meta = reader.__next__()
        width, height = meta["size"]
        frames = [np.frombuffer(buf, np.uint8).reshape(height, width, 3) for buf in reader]
    except (RuntimeError, OSError, StopIteration, KeyError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable video or image ({reason[:160]})") from None
    source_fps = float(meta.get("fps") or DEFAULT_FPS)
    if not frames:
        return np.zeros((0, height, width, 3), np.uint8), fps or source_fps
    return np.stack(frames), fps or source_fps


def read_video(path: str | Path, fps: float | None = None, size: int | None = None) -> Video:
    """Read any supported video, image or image folder as RGB uint8 frames."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        frames = [_ffmpeg_frames(f, None)[0][:1] for f in files]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise UserError(f"{path}: images differ in size ({', '.join(str(s[1:3]) for s in shapes)})")
        video = Video(np.concatenate(frames), fps or DEFAULT_FPS)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        video = Video(_ffmpeg_frames(path, None)[0][:1], fps or DEFAULT_FPS)
    else:
        video = Video(*_ffmpeg_frames(path, fps))
    if len(video.frames) == 0:
        raise UserError(f"{path}: has no frames")
    if size is not None:
        video.frames = resize_center_crop(video.frames, size)
    return video


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Scale the shorter side to `size` (antialiased), then crop the centre square."""
    _, h, w, _ = frames.shape
    if h == size and w == size:
        return frames
    x = frames_to_tensor(frames)
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return tensor_to_frames(x[:, :, top:top + size, left:left + size])


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 → (F, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) float in [0, 1] → (F, H, W, 3) uint8."""
    return video.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _pad_even(frames: np.ndarray) -> np.ndarray:
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _ffmpeg_settings(path: Path) -> tuple[str, str, list[str]]:
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".mov", ".mkv", ".m4v"):
        return "libx264", "yuv420p", ["-crf", "12", "-preset", "medium", "-movflags", "+faststart"]
    if suffix == ".webm":
        return "libvpx-vp9", "yuv420p", ["-crf", "20", "-b:v", "0"]
    if suffix == ".gif":
        return "gif", "pal8", ["-vf", "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=none"]
    raise UserError(f"{path}: unsupported output format {suffix!r} (use .mp4, .webm, .gif, .png or a folder)")


class _FfmpegPipe:
    """Raw RGB frames into an ffmpeg process that encodes `path`. Its exit status and its error
    output are honoured: a failure (a full disk, say) is one line naming `target`, the file the
    user asked for, and the caller leaves the old one in place."""

    def __init__(self, path: Path, target: Path, size: tuple[int, int], fps: float, codec: str, pix_fmt: str,
                 params: list[str]):
        import subprocess
        import tempfile

        self.target, self.log = target, tempfile.TemporaryFile()
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-vcodec", "rawvideo",
                   "-s", f"{size[0]}x{size[1]}", "-pix_fmt", "rgb24", "-r", f"{fps:.02f}", "-i", "-", "-an",
                   "-vcodec", codec, "-pix_fmt", pix_fmt, *params, str(path)]
        # its own session: a Ctrl-C reaches us, and we stop ffmpeg
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log,
                                        start_new_session=True)

    def send(self, data: bytes) -> None:
        try:
            self.process.stdin.write(data)
        except (BrokenPipeError, OSError):
            self.process.wait()
            raise self._failure() from None

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        if self.process.wait() != 0:
            raise self._failure()
        self.log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def _failure(self) -> UserError:
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().decode(errors="replace").splitlines() if line.strip()]
        self.log.close()
        from phenaki_cli.files import DISK_ERRORS

        # the line that names a disk error (a full disk, a quota) says most; else ffmpeg's last word
        disk = [line for line in lines if any(os.strerror(code) in line for code in DISK_ERRORS)]
        cause = (disk or lines or [f"exit status {self.process.returncode}"])[-1 if not disk else 0]
        return UserError(f"{self.target}: ffmpeg could not write it ({cause}); nothing was replaced")


class VideoWriter:
    """Stream frames to a video file (or a folder of PNGs) that appears only when closed
    without error: memory stays flat however long the video grows, and Ctrl-C leaves nothing.
    Before it appears, an encoded file is opened again and its frames counted.

        with VideoWriter("out.mp4", fps=8) as writer:
            writer.write(frames)   # (F, H, W, 3) uint8, any number of calls

    With `staged_at` (a temporary path from files.Outputs), it writes there and leaves the rename
    to the caller, so the video can go into place together with its sidecar files.
    """

    def __init__(self, path: str | Path, fps: float, staged_at: Path | None = None):
        self.path, self.fps, self.frames_written, self.staged_at = Path(path), fps, 0, staged_at
        self.kind = output_kind(self.path)
        if self.kind == "ffmpeg":
            self.codec, self.pix_fmt, self.params = _ffmpeg_settings(self.path)
        self._atomic = self._ffmpeg = None

    def __enter__(self) -> "VideoWriter":
        if self.staged_at is not None:
            self.tmp = self.staged_at
        else:
            self._atomic = atomic_path(self.path, directory=self.kind == "folder")
            self.tmp = self._atomic.__enter__()
        return self

    def write(self, frames: np.ndarray) -> None:
        from phenaki_cli.runtime import raise_if_interrupted

        raise_if_interrupted()  # a Ctrl-C that Python swallowed while ffmpeg was starting
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (F, H, W, 3), got {frames.shape}")
        if self.kind == "folder":
            for i, frame in enumerate(frames, start=self.frames_written):
                write_png(self.tmp / f"{i:05d}.png", frame)
        elif self.kind == "png":
            if self.frames_written + len(frames) > 1:
                raise UserError(f"{self.path}: a .png holds one frame; give a folder path (no suffix) for more")
            write_png(self.tmp, frames[0])
        else:
            if self.codec != "gif":
                frames = _pad_even(frames)
            if self._ffmpeg is None:
                _, h, w, _ = frames.shape
                self._ffmpeg = _FfmpegPipe(self.tmp, self.path, (w, h), self.fps, self.codec, self.pix_fmt,
                                           self.params)
            for frame in frames:
                self._ffmpeg.send(frame.tobytes())
        self.frames_written += len(frames)
        raise_if_interrupted()

    def _finish(self) -> None:
        if self.frames_written == 0:
            raise ValueError(f"{self.path}: no frames were written")
        if self._ffmpeg is not None:
            self._ffmpeg.close()
            try:  # read back: the container must open and hold every frame
                counted = imageio_ffmpeg.count_frames_and_secs(str(self.tmp))[0]
            except (RuntimeError, OSError) as e:
                raise UserError(f"{self.path}: the file ffmpeg wrote does not open ({str(e).strip()[-120:]}); "
                                f"nothing was replaced") from None
            if counted != self.frames_written:
                raise UserError(f"{self.path}: ffmpeg wrote {counted} of {self.frames_written} frames; nothing "
                                f"was replaced")

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                self._finish()
            elif self._ffmpeg is not None:
                self._ffmpeg.kill()
        except BaseException as e:
            if self._ffmpeg is not None:
                self._ffmpeg.kill()
            if self._atomic is not None:
                self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        if self._atomic is not None:
            self._atomic.__exit__(kind, value, traceback)


def output_kind(path: Path) -> str:
    """How a video path is written: "folder" (PNGs, no suffix), "png" (one frame) or "ffmpeg"."""
    suffix = path.suffix.lower()
    return "folder" if suffix == "" else "png" if suffix == ".png" else "ffmpeg"


def check_video_output(path: Path, frames: int | None = None) -> None:
    """A video output's format, checked before any work (and, given the frame count, a .png's one frame)."""
    if output_kind(path) == "ffmpeg":
        _ffmpeg_settings(path)
    elif output_kind(path) == "png" and frames is not None and frames > 1:
        raise UserError(f"{path}: a .png holds one frame, and this makes {frames}; give a folder path (no suffix) "
                        f"or a video file")


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write frames atomically; the format follows the suffix (none: a folder of PNGs)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (F, H, W, 3) array, got {frames.shape}")
    with VideoWriter(path, fps) as writer:
        writer.write(frames)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write one RGB uint8 image as PNG (zlib from the standard library; no extra dependency)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    write_png_strips(path, image.shape[1], image.shape[0], [image])


def write_png_strips(path: str | Path, width: int, height: int, strips) -> None:
    """Write an RGB PNG from horizontal strips ((h_i, width, 3) uint8, top to bottom, heights summing to
    `height`), compressing each as it comes: memory holds one strip, never the whole image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor, rows = zlib.compressobj(6), 0
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        for strip in strips:
            strip = np.ascontiguousarray(strip, dtype=np.uint8)
            if strip.shape[1:] != (width, 3):
                raise ValueError(f"a strip of {strip.shape} in a {width}-wide RGB image")
            rows += len(strip)
            data = compressor.compress(b"".join(b"\x00" + row.tobytes() for row in strip))
            if data:
                f.write(chunk(b"IDAT", data))
        if rows != height:
            raise ValueError(f"strips hold {rows} rows, the image {height}")
        f.write(chunk(b"IDAT", compressor.flush()) + chunk(b"IEND", b""))
