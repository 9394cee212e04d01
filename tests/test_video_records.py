"""Records with videos: stored as checked file bytes, written and read back as a folder, asked by the eval
harness and encoded by the LoRA collator exactly as `vlm.ask` encodes a clip."""

from __future__ import annotations

import pytest
import torch
from support import EVAL_DIR, QUIET, gray_clip, scene, script

from glmlab.data import generate, load_records, load_records_with_report, save_records
from glmlab.data.loaders import features
from glmlab.errors import InputError
from glmlab.eval import Suite, evaluate
from glmlab.lora.collator import IGNORE_INDEX, LoraCollator, answer_end_token_id
from glmlab.lora.data import fingerprint

CLIP = gray_clip(frames=8, fps=4)


def clip_record(**fields):
    return {"id": "clip", "video": CLIP, "question": "What is the level?", "answer": "gray", **fields}


def test_a_video_record_keeps_the_files_bytes_in_its_own_column():
    dataset = load_records([clip_record(), {"id": "pic", "image": scene(), "question": "Q?", "answer": "A"}])
    assert dataset.features == features()
    assert dataset[0]["videos"] == [CLIP] and dataset[0]["images"] == []
    assert dataset[1]["videos"] == [] and len(dataset[1]["images"]) == 1


@pytest.mark.parametrize(
    ("fields", "reason", "message"),
    [
        ({"video": b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64}, "unreadable_video", "unreadable video: "),
        ({"video": "missing.mp4"}, "missing_video", "video file 'missing.mp4' not found"),
        ({"video": 7}, "wrong_type", "a video has type int; expected a path, bytes or data URL"),
        ({"image": scene()}, "invalid_row", "has both images and videos"),
        ({"video": None}, "missing_field", "every record needs an image or a video"),
        ({"videos": [CLIP], "video": CLIP}, "invalid_row", "has both 'video' and 'videos'"),
    ],
    ids=["corrupt", "missing", "wrong-type", "image-and-video", "none", "both-keys"],
)
def test_bad_video_rows_are_named_and_counted_by_reason(fields, reason, message):
    good = clip_record(id="good")
    _, report = load_records_with_report([good, clip_record(**fields)], on_error="skip")
    assert report.rows_loaded == 1
    assert [row.reason for row in report.skipped] == [reason]
    assert message in report.skipped[0].message and "list row 1 (id 'clip')" in report.skipped[0].message
    with pytest.raises(InputError, match="list row 1"):
        load_records([good, clip_record(**fields)])


def test_a_data_folder_round_trips_videos_as_files(tmp_path):
    records = [clip_record(id="a"), clip_record(id="b", videos=[CLIP, CLIP], video=None)]
    save_records(records, tmp_path)
    assert sorted(path.name for path in (tmp_path / "videos").iterdir()) == ["a.mp4", "b_0.mp4", "b_1.mp4"]
    dataset = load_records(tmp_path)
    assert [row["videos"] for row in dataset] == [[CLIP], [CLIP, CLIP]]
    assert load_records(tmp_path / "data.jsonl")[0]["videos"] == [CLIP]


def test_the_fingerprint_changes_with_a_videos_bytes():
    one = load_records([clip_record()])
    other = load_records([clip_record(video=gray_clip(frames=10, fps=4))])
    assert fingerprint(one) != fingerprint(other)
    assert fingerprint(one) == fingerprint(load_records([clip_record()]))


def test_the_collator_encodes_a_clip_as_inference_does(vlm):
    records = load_records(generate("moving-shapes", 2, 0, question_types=("direction",)))
    collator = LoraCollator(vlm.processor, eos_token_id=answer_end_token_id(vlm.tokenizer, vlm.eos_token_ids))
    sample = collator.encode(records[0])
    messages, answer = collator.prompt_messages(records[0])
    prompt = vlm.prepare(messages, thinking=False)
    length = prompt.features["input_ids"].shape[1]
    assert torch.equal(sample.input_ids[:length], prompt.features["input_ids"][0])
    assert torch.equal(sample.pixel_values_videos, prompt.features["pixel_values_videos"])
    assert sample.video_grid_thw.tolist() == [[2, 4, 4]]  # 4 sampled frames = 2 pairs of 56 px (4x4 patches)
    assert (sample.labels[:length] == IGNORE_INDEX).all()
    assert vlm.tokenizer.decode(sample.labels[length:-1]).endswith(answer)
    batch = collator(list(records))
    assert batch["pixel_values_videos"].shape[0] == 2 * sample.pixel_values_videos.shape[0]
    assert batch["video_grid_thw"].tolist() == [[2, 4, 4], [2, 4, 4]]
    assert "pixel_values" not in batch
    loss = vlm.model(**{key: value for key, value in batch.items() if key != "labels"}).logits
    assert torch.isfinite(loss).all()
    assert messages[0]["content"][0]["type"] == "video"


def test_the_video_suite_asks_every_clip_and_keeps_a_frame_as_thumbnail(scripted, tmp_path):
    script(scripted, "left")
    suite = Suite.from_yaml(
        EVAL_DIR / "video-shapes.yaml", overrides={"data.options.question_types": ["direction"]}
    )
    run = evaluate(suite, scripted, limit=8, run_dir=tmp_path, **QUIET)
    records = generate("moving-shapes", 8, 1000, question_types=("direction",))
    assert run.samples["prediction"].tolist() == ["left"] * 8
    assert run.samples["exact_match"].tolist() == [float(r["answer"] == "left") for r in records]
    assert run.samples["exact_match"].mean() == 0.25  # balanced directions
    wrong = {record["id"] + ".png" for record in records if record["answer"] != "left"}
    assert {path.name for path in (tmp_path / "thumbnails").iterdir()} == wrong  # a frame of each clip


def test_the_memory_estimate_counts_a_clips_video_tokens_as_the_prompt_has_them(vlm):
    from pathlib import Path

    from glmlab.lora import LoraRecipe
    from glmlab.lora.estimate import sample_shape

    recipe = LoraRecipe.from_yaml(Path(__file__).resolve().parents[1] / "lora" / "video-shapes.yaml")
    record = generate("moving-shapes", 1, recipe.data_seed, **recipe.data.options)[0]
    answer = vlm.ask(record["video"], record["question"], max_new_tokens=1, thinking=False)
    assert sample_shape(recipe).image_tokens == answer.usage.video_tokens == 8
