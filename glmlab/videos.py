"""Video inputs: the container's headers checked against budgets, then a few sampled frames decoded.

Decoding is PyAV's (FFmpeg's own demuxers and decoders, shipped inside its wheel). `load_video` is the
only door, as `glmlab.images.to_pil` is for images:

1. Budgets before bytes. The container is opened with a demuxer chosen from the file's first bytes
   (MP4/MOV, Matroska/WebM, AVI; never FFmpeg's probing, which would also open playlists that name
   other files), and its duration, frame count and resolution are read from the stream headers and
   checked against `VideoOptions` before a single frame is decoded. A refusal is an InputError that
   names the file, the value and the limit.
2. Explicit sampling. Frames are taken at `fps` frames per second of video (times 0, 1/fps, 2/fps, ...),
   at most `max_frames` of them (spread evenly over the clip when `fps` would give more). GLM-4.6V's
   processor patches frames in pairs (temporal_patch_size 2: each pair becomes one set of video tokens,
   one timestamp), so an odd count gets its last frame repeated, as the processor's own sampler does.
3. Decoding stops after the last sampled frame; only sampled frames are converted to RGB, and their
   bytes are admitted against the process-wide decode memory (`glmlab.images.DECODE_MEMORY`) first.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from glmlab.errors import InputError
from glmlab.images import decode_data_url

SUPPORTED_VIDEOS = "MP4, MOV, WebM, MKV, AVI"
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
VIDEO_MIME_PREFIX = "data:video/"
DEFAULT_FPS = 2.0  # frames sampled per second of video (GLM-4.6V's processor samples 2-3 for short clips)
DEFAULT_MAX_FRAMES = 32  # frames kept at most (16 temporal pairs)
DEFAULT_MAX_DURATION_S = 600.0  # ten minutes
DEFAULT_MAX_STREAM_FRAMES = 100_000  # frames the stream may declare (a 30 fps hour is 108,000)
DEFAULT_MAX_FRAME_PIXELS = 3840 * 2160  # 4K UHD per frame
DEFAULT_MAX_VIDEO_BYTES = 200 * 1024 * 1024
TEMPORAL_PATCH_SIZE = 2  # GLM-4.6V's video processor: frames are patched in pairs
# FFmpeg demuxer for each container signature (see sniff_container); nothing else is ever opened.
_DEMUXERS = {"mp4": "mov,mp4,m4a,3gp,3g2,mj2", "matroska": "matroska,webm", "avi": "avi"}
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


@dataclass(frozen=True)
class VideoOptions:
    """How a video is sampled (`fps`, `max_frames`) and what is refused before decoding (the rest)."""

    fps: float = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_stream_frames: int = DEFAULT_MAX_STREAM_FRAMES
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES

    def __post_init__(self) -> None:
        if not (isinstance(self.fps, int | float) and math.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"fps={self.fps!r}: must be a positive number of frames per second.")
        if not isinstance(self.max_frames, int) or self.max_frames < TEMPORAL_PATCH_SIZE:
            raise InputError(
                f"max_frames={self.max_frames!r}: must be an integer of at least {TEMPORAL_PATCH_SIZE} "
                "(the processor patches frames in pairs)."
            )


@dataclass(frozen=True)
class VideoInfo:
    """What the container's headers say, read before any frame is decoded."""

    width: int
    height: int
    fps: float  # the stream's average frame rate
    frames: int  # frames in the stream (declared, or duration x fps when the container does not say)
    duration_s: float
    container: str  # "mp4", "matroska" or "avi"
    codec: str


@dataclass
class Video:
    """Sampled frames of one video ([T, H, W, 3] uint8) with where they came from.

    `indices` are the sampled frames' positions in the stream (an odd count's last one repeated), so
    `timestamps` are exact; the processor writes one per pair of frames into the prompt. `data` keeps
    the file's bytes, which a client sends on (`data_url`) rather than the decoded frames.
    """

    frames: np.ndarray
    indices: list[int]
    info: VideoInfo
    name: str = "video"
    data: bytes = field(default=b"", repr=False)
    _previews: list[Image.Image] = field(default_factory=list, repr=False)

    @property
    def timestamps(self) -> list[float]:
        return [index / self.info.fps for index in self.indices]

    def data_url(self) -> str:
        """The original file as a data:video/...;base64 URL (what OpenAI-style servers take)."""
        return video_to_data_url(self.data, self.info.container)

    def images(self) -> list[Image.Image]:
        """The sampled frames as PIL images (for previews)."""
        if not self._previews:
            self._previews = [Image.fromarray(frame) for frame in self.frames]
        return self._previews

    def metadata(self) -> dict[str, Any]:
        """The processor's video metadata (transformers' VideoMetadata fields, as a dict: no model code
        here): the source fps and the sampled indices, so the prompt's frame timestamps are the real ones."""
        return {
            "total_num_frames": self.info.frames,
            "fps": self.info.fps,
            "width": self.info.width,
            "height": self.info.height,
            "duration": self.info.duration_s,
            "video_backend": "pyav",
            "frames_indices": list(self.indices),
        }


def is_video(source: Any) -> bool:
    """Whether an input is a video: a Video, a path with a video extension, a `data:video/` URL, or
    bytes whose first bytes are a video container's."""
    if isinstance(source, Video):
        return True
    if isinstance(source, Path):
        return source.suffix.lower() in VIDEO_EXTENSIONS
    if isinstance(source, str):
        if source.startswith("data:"):
            return source[:40].lower().startswith(VIDEO_MIME_PREFIX)
        path = source.split("?", 1)[0]
        return path.lower().endswith(VIDEO_EXTENSIONS)
    if isinstance(source, bytes | bytearray):
        return sniff_container(bytes(source[:16])) is not None
    return False


def load_video(source: Any, *, budget: Any = None, **options: Any) -> Video:
    """Sample one video's frames: a path, a `data:video/...;base64,` URL, raw bytes, or a Video.

    options: `VideoOptions` fields (fps, max_frames, max_duration_s, max_stream_frames,
    max_frame_pixels, max_video_bytes). Bad or over-budget input raises InputError naming it.
    budget: a request's `glmlab.images.ImageBudget` (the server passes one): every sampled frame counts
    as one image of the frame's size against its image and pixel limits, admitted from the headers
    before decoding, and the frames' memory stays held until the request releases it. None: the
    process-wide decode memory only, released when the frames are returned.
    """
    opts = VideoOptions(**options)
    if isinstance(source, Video):
        return source
    data, name = _read_source(source, opts)
    return _decode(data, name, opts, budget)


def probe(source: Any, **options: Any) -> VideoInfo:
    """The headers of a video (checked against the limits), without decoding any frame."""
    return checked_bytes(source, **options)[1]


def checked_bytes(source: Any, **options: Any) -> tuple[bytes, VideoInfo]:
    """A video's file bytes and headers, checked against the limits without decoding any frame: what a
    record store keeps (the file itself; frames are sampled when a prompt is built)."""
    opts = VideoOptions(**options)
    data, name = _read_source(source, opts)
    with _open(data, name) as (container, stream, fmt):
        return data, _checked_info(container, stream, fmt, name, opts)


def sample_indices(info: VideoInfo, fps: float, max_frames: int) -> list[int]:
    """Stream positions of the frames to keep: one every 1/fps seconds from time 0, at most
    `max_frames` (spread evenly over the stream when there would be more); even in number."""
    last = max(info.frames - 1, 0)
    times = np.arange(0.0, max(info.duration_s, 1e-9), 1.0 / fps)
    indices = sorted({min(int(math.floor(t * info.fps + 1e-6)), last) for t in times})
    if len(indices) > max_frames:
        indices = sorted({int(round(x)) for x in np.linspace(0, last, max_frames - max_frames % 2)})
    if len(indices) % TEMPORAL_PATCH_SIZE:
        indices.append(indices[-1])
    return indices


def video_to_data_url(data: bytes, container: str = "mp4") -> str:
    """A base64 data URL of a video file's bytes (what OpenAI-style servers such as vLLM take)."""
    mime = {"mp4": "mp4", "matroska": "webm", "avi": "x-msvideo"}.get(container, container)
    return f"data:video/{mime};base64," + base64.b64encode(data).decode("ascii")


def write_video(
    frames: list[np.ndarray] | np.ndarray, target: Any, fps: int = 4, codec: str = "libx264"
) -> None:
    """Encode RGB frames ([H, W, 3] uint8, even sides) as an MP4 at `target` (a path or a binary file).

    Near-lossless (x264 with qp 1) so that tests and synthetic data read back what they wrote.
    """
    import av

    frames = list(frames)
    if not frames:
        raise InputError("write_video: no frames to write.")
    height, width = frames[0].shape[:2]
    with av.open(target, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = (
            width,
            height,
            "yuv444p" if codec == "libx264" else "yuv420p",
        )
        if codec == "libx264":
            stream.options = {"qp": "1", "preset": "ultrafast"}
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# ---- reading ---------------------------------------------------------------------------------------


def _read_source(source: Any, opts: VideoOptions) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return _capped(bytes(source), "bytes input", opts), "bytes input"
    if isinstance(source, str) and source.startswith("data:"):
        name = source[:60] + "..." if len(source) > 60 else source
        return _capped(_decode_data_url(source, name), name, opts), name
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        raise InputError(
            f"{source[:200]}: video URLs are not fetched; download the file and pass its path or a "
            "data:video/...;base64 URL."
        )
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: no such file.")
        if path.is_dir():
            raise InputError(f"{path}: is a folder, not a video file.")
        size = path.stat().st_size
        if size > opts.max_video_bytes:
            raise InputError(
                f"{path}: {size:,} bytes is over the limit of {opts.max_video_bytes:,} (max_video_bytes)."
            )
        return path.read_bytes(), str(path)
    raise InputError(
        f"{type(source).__name__} object: not a video input. Supported: a path, bytes or a "
        f"data:video/...;base64 URL ({SUPPORTED_VIDEOS})."
    )


def _capped(data: bytes, name: str, opts: VideoOptions) -> bytes:
    if len(data) > opts.max_video_bytes:
        raise InputError(
            f"{name}: {len(data):,} bytes is over the limit of {opts.max_video_bytes:,} (max_video_bytes)."
        )
    return data


def _decode_data_url(url: str, name: str) -> bytes:
    return decode_data_url(url, name, "data:video/mp4;base64,...")


def sniff_container(head: bytes) -> str | None:
    """The container a file's first bytes announce ("mp4", "matroska", "avi"), or None."""
    if head[4:8] in _MP4_BOXES:
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


class _open:
    """The container opened with the sniffed demuxer and its first video stream (a context manager)."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name = data, name
        self.container: Any = None

    def __enter__(self) -> tuple[Any, Any, str]:
        import av

        if not self.data:
            raise InputError(f"{self.name}: empty input (0 bytes).")
        fmt = sniff_container(self.data[:16])
        if fmt is None:
            raise InputError(
                f"{self.name}: not a video container glmlab reads. Supported: {SUPPORTED_VIDEOS}."
            )
        try:
            self.container = av.open(io.BytesIO(self.data), format=fmt, mode="r")
        except (av.FFmpegError, ValueError, OSError) as error:
            raise InputError(f"{self.name}: corrupt or truncated video ({_reason(error)}).") from None
        if not self.container.streams.video:
            self.container.close()
            raise InputError(f"{self.name}: the container has no video stream.")
        stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"
        return self.container, stream, fmt

    def __exit__(self, *exc: Any) -> None:
        self.container.close()


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _checked_info(container: Any, stream: Any, fmt: str, name: str, opts: VideoOptions) -> VideoInfo:
    """The stream's headers, each checked against its limit (nothing is decoded here)."""
    import av

    context = stream.codec_context
    width, height = int(context.width or 0), int(context.height or 0)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * Fraction(stream.time_base))
    elif container.duration:
        duration = container.duration / av.time_base
    frames = int(stream.frames or 0)
    if width <= 0 or height <= 0:
        raise InputError(f"{name}: the video stream declares no frame size ({width}x{height}).")
    if fps <= 0:
        raise InputError(f"{name}: the video stream declares no frame rate.")
    if duration is None or duration <= 0:
        if frames <= 0:
            raise InputError(f"{name}: the container declares neither a duration nor a frame count.")
        duration = frames / fps
    if frames <= 0:
        frames = max(int(round(duration * fps)), 1)
    if width * height > opts.max_frame_pixels:
        raise InputError(
            f"{name}: {width}x{height} = {width * height:,} pixels a frame is over the limit of "
            f"{opts.max_frame_pixels:,} (max_frame_pixels); downscale the video."
        )
    if duration > opts.max_duration_s:
        raise InputError(
            f"{name}: {duration:.1f} s long, over the limit of {opts.max_duration_s:g} s (max_duration_s); "
            "cut the part you need."
        )
    if frames > opts.max_stream_frames:
        raise InputError(
            f"{name}: the stream declares {frames:,} frames, over the limit of {opts.max_stream_frames:,} "
            "(max_stream_frames)."
        )
    return VideoInfo(width, height, fps, frames, duration, fmt, context.name)


def _decode(data: bytes, name: str, opts: VideoOptions, request_budget: Any = None) -> Video:
    from glmlab.images import DECODE_MEMORY, LIBRARY_WAIT_S, ImageBudget

    with _open(data, name) as (container, stream, fmt):
        info = _checked_info(container, stream, fmt, name, opts)
        wanted = sample_indices(info, opts.fps, opts.max_frames)
        kept_bytes = len(wanted) * info.width * info.height * 3
        budget = request_budget or ImageBudget(memory=DECODE_MEMORY, wait_s=LIBRARY_WAIT_S)
        budget.admit(f"{name} ({len(wanted)} sampled frames)", [(info.width, info.height)] * len(wanted))
        try:
            # peak: the kept frames, one decoded YUV frame and its RGB copy
            with budget.decoding(name, kept_bytes + 2 * info.width * info.height * 4, kept_bytes):
                frames = _decode_frames(container, stream, wanted, info, name)
        finally:
            if request_budget is None:
                budget.release()  # the caller owns the frames now
    if not frames:
        raise InputError(f"{name}: no decodable frame (an empty or corrupt video stream).")
    found = sorted(frames)
    indices = [index if index in frames else found[-1] for index in wanted]  # a stream shorter than declared
    stack = np.stack([frames[index] for index in indices])
    return Video(stack, indices, info, name, data)


def _decode_frames(
    container: Any, stream: Any, wanted: list[int], info: VideoInfo, name: str
) -> dict[int, np.ndarray]:
    """Decode in order up to the last wanted frame, converting only the wanted ones."""
    import av

    targets, last = set(wanted), max(wanted)
    frames: dict[int, np.ndarray] = {}
    try:
        for position, frame in enumerate(container.decode(stream)):
            if (frame.width, frame.height) != (info.width, info.height):  # checked budgets stay true
                raise InputError(
                    f"{name}: frame {position} is {frame.width}x{frame.height} where the stream header "
                    f"says {info.width}x{info.height}; videos that change size are not read."
                )
            if position in targets:
                frames[position] = frame.to_ndarray(format="rgb24")
            if position >= last:
                break
    except (av.FFmpegError, ValueError, OSError) as error:
        if not frames:
            raise InputError(f"{name}: corrupt video data ({_reason(error)}).") from None
    return frames
