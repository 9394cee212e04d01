"""Records and loaders: every source gives the same columns, and every bad row is named or counted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glmlab.data import (
    REASONS,
    features,
    generate_shapes,
    load_records,
    load_records_with_report,
    save_records,
    to_messages,
)
from glmlab.errors import ConfigError, InputError


def _png(path: Path, color: tuple[int, int, int] = (200, 10, 10)) -> Path:
    Image.new("RGB", (16, 16), color).save(path)
    return path


def _folder(tmp_path: Path, rows: list, images: dict[str, bytes | None] | None = None) -> Path:
    """A data folder with `good.png`, extra image files and one JSON line per row (str rows verbatim)."""
    _png(tmp_path / "good.png")
    for name, data in (images or {}).items():
        (tmp_path / name).write_bytes(data)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


GOOD = {"id": "ok", "image": "good.png", "question": "What color?", "answer": "red", "kind": "color"}
# (bad row, extra image files, reason, words the message must hold)
BAD_ROWS = {
    "missing_image_file": (
        {"id": "bad", "image": "nowhere.png", "question": "Q?", "answer": "A"},
        {},
        "missing_image",
        "image file 'nowhere.png' not found",
    ),
    "corrupt_image_bytes": (
        {"id": "bad", "image": "broken.png", "question": "Q?", "answer": "A"},
        {"broken.png": b"\x89PNG not really"},
        "unreadable_image",
        "not an image",
    ),
    "missing_answer": (
        {"id": "bad", "image": "good.png", "question": "Q?"},
        {},
        "missing_field",
        "missing field 'answer'",
    ),
    "missing_image_field": (
        {"id": "bad", "question": "Q?", "answer": "A"},
        {},
        "missing_field",
        "missing field 'image'",
    ),
    "empty_answer": (
        {"id": "bad", "image": "good.png", "question": "Q?", "answer": "  "},
        {},
        "empty_answer",
        "the answer is empty",
    ),
    "answer_wrong_type": (
        {"id": "bad", "image": "good.png", "question": "Q?", "answer": 2},
        {},
        "wrong_type",
        "field 'answer' has type int, expected a string",
    ),
    "images_wrong_type": (
        {"id": "bad", "images": "good.png", "question": "Q?", "answer": "A"},
        {},
        "wrong_type",
        "field 'images' has type str, expected a list",
    ),
    "invalid_json": ('{"id": "bad", "image": ', {}, "invalid_row", "invalid JSON"),
}


def test_to_messages_turns_shorthand_into_user_and_assistant_turns():
    record = {"question": "What shape is it?", "answer": " circle "}
    assert to_messages(record) == [
        {"role": "user", "content": "What shape is it?"},
        {"role": "assistant", "content": "circle"},
    ]


def test_to_messages_keeps_image_markers_and_rewrites_glm_placeholders_to_them():
    record = {"question": "Left <|begin_of_image|><|image|><|end_of_image|> right <image>?", "answer": "2"}
    assert to_messages(record)[0] == {"role": "user", "content": "Left <image> right <image>?"}


def test_to_messages_flattens_content_parts_and_drops_image_parts():
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count them."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "3"}]},
        ]
    }
    assert to_messages(record) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Count them."},
        {"role": "assistant", "content": "3"},
    ]


def test_to_messages_refuses_a_conversation_without_final_answer():
    with pytest.raises(InputError, match=r"record \(id 'x'\): messages do not end with an assistant answer"):
        to_messages({"id": "x", "messages": [{"role": "user", "content": "Hi?"}]})


def test_folder_loader_gives_the_four_columns_with_normalised_messages(tmp_path):
    dataset = load_records(_folder(tmp_path, [GOOD]))
    assert dataset.features == features()
    row = dataset[0]
    assert row["id"] == "ok"
    assert row["messages"] == [
        {"role": "user", "content": "What color?"},
        {"role": "assistant", "content": "red"},
    ]
    assert json.loads(row["metadata"]) == {"kind": "color"}
    assert np.array_equal(np.asarray(row["images"][0]), np.asarray(Image.open(tmp_path / "good.png")))


def test_generated_folder_reads_back_as_the_generated_records(tmp_path):
    records = generate_shapes(6, seed=3, out_dir=tmp_path)
    dataset = load_records(tmp_path)
    assert len(dataset) == 6
    for record, row in zip(records, dataset, strict=True):
        assert row["id"] == record["id"]
        assert row["messages"] == to_messages(record)
        assert json.loads(row["metadata"]) == record["metadata"]
        assert np.array_equal(np.asarray(row["images"][0]), np.asarray(Image.open(record["images"][0])))


def test_save_records_round_trips_in_memory_records(tmp_path):
    records = generate_shapes(4, seed=1)
    save_records(records, tmp_path / "copy")
    dataset = load_records(tmp_path / "copy")
    assert [row["messages"] for row in dataset] == [to_messages(record) for record in records]
    assert all(
        np.array_equal(np.asarray(row["images"][0]), np.asarray(record["image"]))
        for row, record in zip(dataset, records, strict=True)
    )


def test_dataframe_and_list_loaders_match_the_folder_loader(tmp_path):
    folder = _folder(tmp_path, [GOOD, {**GOOD, "id": "two", "answer": "blue"}])
    rows = [
        {**row, "image": str(tmp_path / row["image"])}
        for row in (GOOD, {**GOOD, "id": "two", "answer": "blue"})
    ]
    from_folder = load_records(folder).to_list()
    assert load_records(pd.DataFrame(rows)).to_list() == from_folder
    assert load_records(rows).to_list() == from_folder


def test_list_loader_accepts_multiple_in_memory_images_per_record():
    images = [Image.new("RGB", (8, 8), (0, 0, 255)), np.zeros((8, 8, 3), dtype=np.uint8)]
    dataset = load_records([{"images": images, "question": "Same?", "answer": "no"}])
    assert [image.getpixel((0, 0)) for image in dataset[0]["images"]] == [(0, 0, 255), (0, 0, 0)]


@pytest.fixture
def hub_offline(monkeypatch):
    """The tests never reach the hub: a name that is not packaged fails at once instead of retrying."""
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_name_is_loaded_with_load_dataset_and_mapped_with_columns(tmp_path, hub_offline):
    hub_like = datasets.Dataset.from_dict(
        {
            "picture": [str(_png(tmp_path / "a.png"))],
            "query": ["Colour?"],
            "label": ["red"],
            "split_tag": ["x"],
        },
        features=datasets.Features(
            {
                "picture": datasets.Image(),
                "query": datasets.Value("string"),
                "label": datasets.Value("string"),
                "split_tag": datasets.Value("string"),
            }
        ),
    )
    hub_like.to_parquet(tmp_path / "train.parquet")
    dataset = load_records(
        "parquet",
        split="train",
        columns={"picture": "image", "query": "question", "label": "answer"},
        hub_options={"data_files": str(tmp_path / "train.parquet"), "cache_dir": str(tmp_path / "c")},
    )
    assert dataset[0]["messages"][-1] == {"role": "assistant", "content": "red"}
    assert json.loads(dataset[0]["metadata"]) == {"split_tag": "x"}
    assert dataset[0]["images"][0].getpixel((0, 0)) == (200, 10, 10)


def test_dataset_images_keep_their_stored_jpeg_bytes():
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buffer, format="JPEG", quality=80)
    jpeg = buffer.getvalue()
    source = datasets.Dataset.from_dict(
        {"image": [{"bytes": jpeg, "path": None}], "question": ["Q"], "answer": ["A"]},
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
            }
        ),
    )
    records = load_records(source)
    feature = records.features["images"]
    stored = records.cast_column("images", type(feature)(datasets.Image(decode=False)))
    assert stored[0]["images"][0]["bytes"] == jpeg  # not decoded and re-encoded as PNG


def test_unknown_hub_name_raises_input_error_naming_it(tmp_path, hub_offline):
    with pytest.raises(InputError, match="no-such-builder-xyz: not a local path"):
        load_records("no-such-builder-xyz", hub_options={"cache_dir": str(tmp_path)})


def test_limit_counts_loaded_records(tmp_path):
    folder = _folder(tmp_path, [GOOD, {**GOOD, "image": "gone.png"}, GOOD, GOOD])
    dataset, report = load_records_with_report(folder, on_error="skip", limit=2)
    assert len(dataset) == 2
    assert (report.rows_read, report.rows_loaded, report.skipped_by_reason) == (3, 2, {"missing_image": 1})


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_raises_input_error_naming_row_and_problem(tmp_path, case):
    row, images, _, words = BAD_ROWS[case]
    folder = _folder(tmp_path, [GOOD, row], images)
    with pytest.raises(InputError) as raised:
        load_records(folder)
    message = str(raised.value)
    assert "data.jsonl row 1" in message and words in message
    if case != "invalid_json":
        assert "(id 'bad')" in message


def test_skip_mode_counts_every_bad_row_by_reason_and_logs_it(tmp_path, caplog):
    rows = [GOOD] + [BAD_ROWS[case][0] for case in sorted(BAD_ROWS)]
    images = {name: data for case in BAD_ROWS.values() for name, data in case[1].items()}
    with caplog.at_level(logging.WARNING, logger="glmlab.data.loaders"):
        dataset, report = load_records_with_report(_folder(tmp_path, rows, images), on_error="skip")
    assert len(dataset) == 1 and report.rows_read == len(rows) and report.rows_loaded == 1
    expected: dict[str, int] = {}
    for case in BAD_ROWS.values():
        expected[case[2]] = expected.get(case[2], 0) + 1
    assert report.skipped_by_reason == expected
    assert set(expected) <= set(REASONS)
    assert [row.index for row in report.skipped] == list(range(1, len(rows)))
    assert f"skipped {len(rows) - 1}" in caplog.text and "missing_image: 1" in caplog.text


def test_dataframe_rows_with_empty_cells_are_named_by_index(tmp_path):
    frame = pd.DataFrame(
        [
            {"image": str(_png(tmp_path / "a.png")), "question": "Q?", "answer": "A"},
            {"image": str(tmp_path / "a.png"), "question": "Q?", "answer": None},
        ]
    )
    with pytest.raises(InputError, match=r"DataFrame row 1: missing field 'answer'"):
        load_records(frame)


def test_list_row_that_is_not_a_dict_is_an_invalid_row():
    with pytest.raises(InputError, match=r"list row 0: has type str, not a mapping of fields"):
        load_records(["just text"])


def test_all_rows_skipped_raises_instead_of_returning_an_empty_dataset(tmp_path):
    with pytest.raises(
        InputError, match=r"loaded 0 of 1 rows; skipped 1 \(empty_answer: 1\): no usable record"
    ):
        load_records(_folder(tmp_path, [{**GOOD, "answer": ""}]), on_error="skip")


def test_unknown_on_error_value_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="on_error='ignore'"):
        load_records(_folder(tmp_path, [GOOD]), on_error="ignore")


def test_missing_folder_file_is_named(tmp_path):
    with pytest.raises(InputError, match="no data.jsonl in this folder"):
        load_records(tmp_path)
