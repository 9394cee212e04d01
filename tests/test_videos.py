"""Video input: headers checked before decoding, exact frame sampling, clear errors, and a video question
through the library, the CLI and the server on the tiny model."""

from __future__ import annotations

import base64
import io
import json
import re

import av
import numpy as np
import openai
import pytest
from support import API_KEY, GREEDY, gray_clip, video_message
from typer.testing import CliRunner

from glmlab import videos
from glmlab.cli import app
from glmlab.errors import InputError
from glmlab.videos import VideoInfo, load_video, probe, sample_indices

CLIP = gray_clip()  # 20 frames at 4 fps, 64x48: 5.0 s


def frame_ids(video) -> list[int]:
    """Which source frame each decoded frame is (its gray level / 8)."""
    return [round(float(frame.mean()) / 8) for frame in video.frames]


def test_probe_reads_the_headers():
    assert probe(CLIP) == VideoInfo(
        width=64, height=48, fps=4.0, frames=20, duration_s=5.0, container="mp4", codec="h264"
    )


@pytest.mark.parametrize(
    ("fps", "max_frames", "indices"),
    [
        (2, 32, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]),  # one frame every 0.5 s
        (4, 6, [0, 4, 8, 11, 15, 19]),  # fps would give 20: spread evenly instead
        (1, 32, [0, 4, 8, 12, 16, 16]),  # five frames: the last repeated (frames go in pairs)
    ],
)
def test_sampled_frames_are_the_ones_asked_for(fps, max_frames, indices):
    video = load_video(CLIP, fps=fps, max_frames=max_frames)
    assert video.indices == indices
    assert frame_ids(video) == indices  # the decoded pixels are those frames'
    assert video.frames.shape == (len(indices), 48, 64, 3) and video.frames.dtype == np.uint8
    assert video.timestamps == [index / 4 for index in indices]
    assert [image.size for image in video.images()] == [(64, 48)] * len(indices)


def test_sampling_follows_time_not_frame_numbers():
    info = VideoInfo(width=8, height=8, fps=30.0, frames=300, duration_s=10.0, container="mp4", codec="h264")
    assert sample_indices(info, fps=1, max_frames=32) == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]
    assert sample_indices(info, fps=2, max_frames=4) == [0, 100, 199, 299]


def test_a_data_url_and_a_file_give_the_same_frames(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(CLIP)
    url = videos.video_to_data_url(CLIP)
    assert url.startswith("data:video/mp4;base64,")
    from_url, from_file = load_video(url), load_video(path)
    assert from_url.indices == from_file.indices and np.array_equal(from_url.frames, from_file.frames)
    assert from_file.data_url() == url


def test_webm_without_a_frame_count_uses_its_duration():
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            frame = np.full((48, 64, 3), 8 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    video = load_video(buffer.getvalue(), fps=2)
    assert (video.info.container, video.info.codec, video.info.frames) == ("matroska", "vp8", 20)
    assert video.indices == [0, 2, 5, 7, 10, 12, 15, 17]
    assert all(
        abs(found - wanted) <= 1 for found, wanted in zip(frame_ids(video), video.indices, strict=True)
    )


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (
            {"max_duration_s": 4},
            "bytes input: 5.0 s long, over the limit of 4 s (max_duration_s); cut the part you need.",
        ),
        (
            {"max_frame_pixels": 3000},
            "bytes input: 64x48 = 3,072 pixels a frame is over the limit of 3,000 (max_frame_pixels); "
            "downscale the video.",
        ),
        (
            {"max_stream_frames": 19},
            "bytes input: the stream declares 20 frames, over the limit of 19 (max_stream_frames).",
        ),
        (
            {"max_video_bytes": 100},
            f"bytes input: {len(CLIP):,} bytes is over the limit of 100 (max_video_bytes).",
        ),
    ],
)
def test_budgets_refuse_before_any_frame_is_decoded(monkeypatch, limit, message):
    def never(*args, **kwargs):
        raise AssertionError("decoded a frame of a refused video")

    monkeypatch.setattr(videos, "_decode_frames", never)
    with pytest.raises(InputError) as refused:
        load_video(CLIP, **limit)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bytes input: empty input (0 bytes)."),
        (
            b"just text",
            "bytes input: not a video container glmlab reads. Supported: MP4, MOV, WebM, MKV, AVI.",
        ),
        (CLIP[:400], "bytes input: corrupt or truncated video (Invalid data found when processing input)."),
        (
            b"\x00\x00\x00\x18ftypisom" + bytes(200),
            "bytes input: corrupt or truncated video (Invalid data found when processing input).",
        ),
    ],
)
def test_corrupt_empty_and_unsupported_files_are_named(data, message):
    with pytest.raises(InputError) as refused:
        load_video(data)
    assert str(refused.value) == message


def test_bad_sources_and_options_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match=r"^/no/clip\.mp4: no such file\.$"):
        load_video("/no/clip.mp4")
    with pytest.raises(InputError, match="video URLs are not fetched; download the file"):
        load_video("https://example.com/clip.mp4")
    with pytest.raises(InputError, match=r"not a base64 data URL; expected 'data:video/mp4;base64,\.\.\.'"):
        load_video("data:video/mp4,plain")
    with pytest.raises(InputError, match=r"^fps=0: must be a positive number of frames per second\.$"):
        load_video(CLIP, fps=0)
    with pytest.raises(InputError, match=r"^max_frames=1: must be an integer of at least 2"):
        load_video(CLIP, max_frames=1)


def test_is_video_tells_videos_from_images(tmp_path):
    assert videos.is_video("clip.MP4") and videos.is_video(tmp_path / "a.webm") and videos.is_video(CLIP)
    assert videos.is_video("data:video/mp4;base64,AAAA")
    assert not videos.is_video("photo.png") and not videos.is_video("data:image/png;base64,AAAA")
    assert not videos.is_video(b"\x89PNG\r\n\x1a\n")


# ---- the model --------------------------------------------------------------------------------------

# 64x48 is resized to 56x56 (the processor's minimum area): 2x2 merged tokens a frame pair, 4 tokens
TOKENS_PER_PAIR = 4


def test_a_video_question_through_the_library(vlm, tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(CLIP)
    answer = vlm.ask(path, "What changes?", temperature=0, max_new_tokens=4)
    assert answer.usage.video_tokens == 5 * TOKENS_PER_PAIR and answer.usage.image_tokens == 0
    prompt = vlm.prepare([{"role": "user", "content": [{"type": "video", "video": path}, "What changes?"]}])
    assert prompt.features["video_grid_thw"].tolist() == [[5, 4, 4]]
    text = vlm.tokenizer.decode(prompt.features["input_ids"][0])
    assert re.findall(r"<\|end_of_image\|>([\d.]+) seconds", text) == ["0.0", "1.0", "2.0", "3.0", "4.0"]
    url_answer = vlm.chat(
        video_message(videos.video_to_data_url(CLIP), "What changes?"), temperature=0, max_new_tokens=4
    )
    assert url_answer.text == answer.text


def test_explicit_sampling_changes_the_token_count(vlm):
    answer = vlm.ask(load_video(CLIP, fps=1, max_frames=4), "?", temperature=0, max_new_tokens=2)
    assert answer.usage.video_tokens == 2 * TOKENS_PER_PAIR


def test_videos_and_images_batch_apart_and_never_share_a_prompt(vlm, red_image, caplog):
    answers = vlm.batch(
        [(CLIP, "q"), (red_image, "q"), (load_video(CLIP, fps=1), "qq"), ([red_image, CLIP], "q")],
        temperature=0,
        max_new_tokens=2,
    )
    assert [a.usage.video_tokens for a in answers] == [20, 0, 12, 0]
    assert [a.usage.image_tokens for a in answers] == [0, 16, 0, 0]
    assert "failed" not in caplog.text  # no batch mixed the two kinds
    assert answers[3].finish_reason == "error" and answers[3].error == (
        "messages: 1 image(s) and 1 video(s) in one conversation; GLM-V models in transformers take images "
        "or videos in one prompt, not both. Ask about them separately."
    )
    assert answers[0].text == vlm.ask(CLIP, "q", temperature=0, max_new_tokens=2).text


def test_a_video_question_through_the_cli(tiny_path, tmp_path, vlm):
    path = tmp_path / "clip.mp4"
    path.write_bytes(CLIP)
    args = ["ask", str(path), "-q", "What?", "--model", "tiny", "--json", "--temperature", "0"]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "3", "--fps", "1", "--max-frames", "4"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output[result.output.index("{") :])
    assert answer["usage"]["video_tokens"] == 2 * TOKENS_PER_PAIR
    expected = vlm.ask(load_video(path, fps=1, max_frames=4), "What?", temperature=0, max_new_tokens=3)
    assert answer["text"] == expected.text


def test_a_video_question_through_the_server_and_the_client(server, served_vlm):
    import glmlab

    client = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0, timeout=60)
    url = videos.video_to_data_url(CLIP)
    response = client.chat.completions.create(model="tiny", messages=video_message(url, "What?"), **GREEDY)
    assert response.usage.prompt_tokens_details.video_tokens == 20
    local = served_vlm.chat(video_message(url, "What?"), adapter=None, temperature=0, max_new_tokens=6)
    assert response.choices[0].message.content == local.text
    answer = glmlab.Client(server.url, api_key=API_KEY).ask(CLIP, "What?", temperature=0, max_new_tokens=6)
    assert answer.text == local.text and answer.usage.video_tokens == 20


def test_the_server_refuses_video_paths_and_urls(server):
    client = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0, timeout=60)
    for url in ("/etc/passwd.mp4", "https://example.com/clip.mp4"):
        with pytest.raises(openai.BadRequestError, match="expected a data:video/...;base64 URL"):
            client.chat.completions.create(model="tiny", messages=video_message(url, "?"), **GREEDY)
    bad = "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypisom" + bytes(64)).decode()
    with pytest.raises(openai.BadRequestError, match="corrupt or truncated video"):
        client.chat.completions.create(model="tiny", messages=video_message(bad, "?"), **GREEDY)


# ---- the server's video budgets ------------------------------------------------------------------


@pytest.fixture(scope="module")
def budget_client(served_vlm):
    from fastapi.testclient import TestClient

    from glmlab.serve import ServerSettings, create_app

    settings = ServerSettings(
        model="tiny",
        max_images=6,
        max_request_pixels=64 * 48 * 6,  # 6 frames of CLIP's size
        max_videos=1,
        video_fps=1.0,
        video_max_frames=4,
        max_input_pixels=4096 * 4096,
    )
    with TestClient(create_app(served_vlm, settings), base_url="http://localhost") as client:
        yield client


def video_body(*clips: bytes, question: str = "What?") -> dict:
    parts = [{"type": "video_url", "video_url": {"url": videos.video_to_data_url(clip)}} for clip in clips]
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": question}]}],
        "max_tokens": 2,
        "temperature": 0,
    }


def test_the_server_samples_with_its_video_fps_and_max_frames(budget_client):
    response = budget_client.post("/v1/chat/completions", json=video_body(CLIP))
    assert response.status_code == 200, response.text
    # 5 s at --video-fps 1 would be 5 frames; --video-max-frames 4 spreads 4 = 2 pairs of 4 tokens
    assert response.json()["usage"]["prompt_tokens_details"]["video_tokens"] == 8


def test_sampled_frames_count_in_the_request_image_and_pixel_budgets(budget_client, served_vlm):
    long_clip = gray_clip(frames=30, fps=3, width=64, height=96)  # 10 s: 4 frames of twice the pixels
    response = budget_client.post("/v1/chat/completions", json=video_body(long_clip))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.endswith(
        " (4 sampled frames): 24,576 decoded pixels would bring this request to 24,576, over the limit "
        "of 18,432 (max_request_pixels); downscale the images or send fewer."
    )
    image = {"type": "image_url", "image_url": {"url": data_url_of(np.zeros((24, 32, 3), np.uint8))}}
    body = video_body(CLIP)
    body["messages"][0]["content"] = [image] * 3 + body["messages"][0]["content"]
    response = budget_client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400  # 3 images, then the clip's 4 frames: 7 of 6
    assert (
        " (4 sampled frames): 4 image(s) would bring this request to 7 images, over the limit of 6 "
        in (response.json()["error"]["message"])
    )


def test_more_videos_than_max_videos_are_refused_before_decoding(budget_client):
    response = budget_client.post("/v1/chat/completions", json=video_body(CLIP, b"not even a video"))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "the request holds 2 videos, more than this server takes in one request (1, "
        "--max-videos); send them in separate requests.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "invalid_value",
    }


def data_url_of(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
