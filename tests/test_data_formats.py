"""Other tools' layouts (ShareGPT/LLaVA, LLaMA-Factory, a CSV beside its images) read into records, the
image markers that keep each image's place in the text, and the bad rows of each layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from glmlab import prompts
from glmlab.data import DataSource, load_records, load_records_with_report, load_source
from glmlab.errors import ConfigError, InputError
from glmlab.eval.samples import load_samples
from glmlab.eval.suite import Suite
from glmlab.lora.collator import LoraCollator, answer_end_token_id

RED, BLUE = (200, 10, 10), (10, 10, 200)


def _png(path: Path, color: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path)
    return path.name


def _json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


def _colours(row) -> list[tuple[int, int, int]]:
    return [image.getpixel((0, 0)) for image in row["images"]]


def _records(dataset) -> list[tuple]:
    return [(row["id"], row["messages"], json.loads(row["metadata"])) for row in dataset]


# ---- ShareGPT / LLaVA -----------------------------------------------------------------------------

LLAVA = {
    "id": "000000033471",
    "image": "coco/33471.jpg",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."},
    ],
}


def test_llava_rows_become_records_with_the_image_marker_where_llava_put_it(tmp_path):
    Image.new("RGB", (16, 16), RED).save(tmp_path / "bus.jpg")
    (tmp_path / "coco").mkdir()
    (tmp_path / "bus.jpg").rename(tmp_path / "coco" / "33471.jpg")
    dataset = load_records(_json(tmp_path / "llava.json", [LLAVA]), format="sharegpt")
    assert _records(dataset) == [
        (
            "000000033471",
            [
                {"role": "user", "content": "<image>\nWhat are the colors of the bus in the image?"},
                {"role": "assistant", "content": "The bus in the image is white and red."},
                {"role": "user", "content": "What feature can be seen on the back of the bus?"},
                {"role": "assistant", "content": "The back of the bus features an advertisement."},
            ],
            {},
        )
    ]


def test_sharegpt_rows_with_two_images_a_system_text_and_extra_keys(tmp_path):
    _png(tmp_path / "a.png", RED), _png(tmp_path / "b.png", BLUE)
    row = {
        "system": "Answer in one word.",
        "images": ["a.png", "b.png"],
        "conversations": [
            {"from": "user", "value": "Is <image> the same colour as <image>?"},
            {"from": "assistant", "value": "No"},
        ],
        "source": "hand-made",
    }
    (tmp_path / "data.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    dataset = load_records(tmp_path, format="sharegpt")  # a folder: data.json, else data.jsonl
    assert _records(dataset) == [
        (
            None,
            [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Is <image> the same colour as <image>?"},
                {"role": "assistant", "content": "No"},
            ],
            {"source": "hand-made"},
        )
    ]
    assert _colours(dataset[0]) == [RED, BLUE]


SHAREGPT_BAD = [  # (row, reason, message after "llava.json row N (id ...): ")
    (
        {
            "id": "text-only",
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
        },
        "missing_field",
        "missing field 'image' (or 'images', 'video', 'videos'): every record needs an image or a video",
    ),
    (
        {"id": "tool", "image": "a.png", "conversations": [{"from": "function_call", "value": "{}"}]},
        "wrong_type",
        "conversations[0] has from 'function_call'; expected human, gpt or system (or user, assistant): "
        "tool-call turns are not read",
    ),
    (
        {
            "id": "two-markers",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image> vs <image>?"},
                {"from": "gpt", "value": "same"},
            ],
        },
        "invalid_row",
        "the text holds 2 <image> marker(s) but the record has 1 image(s); give one marker per image, or none "
        "(the images then open the first user turn)",
    ),
    (
        {"id": "no-turns", "image": "a.png"},
        "missing_field",
        "missing field 'conversations' (a ShareGPT row holds a list of {'from', 'value'} turns)",
    ),
    (
        {
            "id": "number",
            "image": "a.png",
            "conversations": [{"from": "human", "value": "How many?"}, {"from": "gpt", "value": 3}],
        },
        "wrong_type",
        "conversations[1].value has type int, expected a string",
    ),
    (
        {
            "id": "marker-in-answer",
            "image": "a.png",
            "conversations": [{"from": "human", "value": "Draw it"}, {"from": "gpt", "value": "<image>"}],
        },
        "invalid_row",
        "messages[1] (assistant) holds an image marker; images belong in user turns",
    ),
]


@pytest.mark.parametrize("bad", range(len(SHAREGPT_BAD)))
def test_a_bad_sharegpt_row_stops_the_load_naming_row_id_and_problem(tmp_path, bad):
    _png(tmp_path / "a.png", RED)
    good = {
        "id": "good",
        "image": "a.png",
        "conversations": [{"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "red"}],
    }
    row, _, problem = SHAREGPT_BAD[bad]
    path = _json(tmp_path / "llava.json", [good, row])
    with pytest.raises(InputError) as raised:
        load_records(path, format="sharegpt")
    assert str(raised.value) == f"{path} row 1 (id {row['id']!r}): {problem}"


def test_skipped_sharegpt_rows_are_counted_by_reason(tmp_path):
    _png(tmp_path / "a.png", RED)
    good = {
        "id": "good",
        "image": "a.png",
        "conversations": [{"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "red"}],
    }
    rows = [good] + [bad[0] for bad in SHAREGPT_BAD]
    dataset, report = load_records_with_report(
        _json(tmp_path / "d.json", rows), format="sharegpt", on_error="skip"
    )
    assert dataset["id"] == ["good"]
    assert report.skipped_by_reason == {"missing_field": 2, "wrong_type": 2, "invalid_row": 2}
    assert [row.record_id for row in report.skipped] == [bad[0]["id"] for bad in SHAREGPT_BAD]


def test_a_json_array_with_a_syntax_error_is_refused_as_a_whole(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[{"id": "a"},\n {"id": }]', encoding="utf-8")
    with pytest.raises(InputError) as raised:
        load_records(path, format="sharegpt")
    assert str(raised.value) == (
        f"{path}: invalid JSON (Expecting value at line 2 column 9); a .json file is one array of rows and "
        "cannot be read in part (JSON lines can: one row a line, .jsonl)."
    )


# ---- LLaMA-Factory --------------------------------------------------------------------------------

MLLM_DEMO = [  # the layout of LLaMA-Factory's data/mllm_demo.json
    {
        "messages": [
            {"content": "<image>Who are they?", "role": "user"},
            {"content": "They're Kane and Gretzka from Bayern Munich.", "role": "assistant"},
            {"content": "What are they doing?<image>", "role": "user"},
            {"content": "They are celebrating on the soccer field.", "role": "assistant"},
        ],
        "images": ["mllm_demo_data/1.jpg", "mllm_demo_data/1.png"],
    },
    {
        "messages": [{"content": "Who is he?", "role": "user"}, {"content": "Messi.", "role": "assistant"}],
        "images": ["mllm_demo_data/2.jpg"],
        "system": "You are a football fan.",
    },
]


def _mllm_demo(tmp_path: Path) -> Path:
    Image.new("RGB", (16, 16), RED).save(tmp_path / "1.jpg")
    (tmp_path / "mllm_demo_data").mkdir()
    (tmp_path / "1.jpg").rename(tmp_path / "mllm_demo_data" / "1.jpg")
    _png(tmp_path / "mllm_demo_data" / "1.png", BLUE)
    Image.new("RGB", (16, 16), (0, 200, 0)).save(tmp_path / "mllm_demo_data" / "2.jpg")
    return _json(tmp_path / "mllm_demo.json", MLLM_DEMO)


def test_llama_factory_rows_keep_markers_images_and_system_text(tmp_path):
    dataset = load_records(_mllm_demo(tmp_path), format="llama_factory")
    assert _records(dataset) == [
        (
            None,
            [
                {"role": "user", "content": "<image>Who are they?"},
                {"role": "assistant", "content": "They're Kane and Gretzka from Bayern Munich."},
                {"role": "user", "content": "What are they doing?<image>"},
                {"role": "assistant", "content": "They are celebrating on the soccer field."},
            ],
            {},
        ),
        (
            None,
            [
                {"role": "system", "content": "You are a football fan."},
                {"role": "user", "content": "Who is he?"},
                {"role": "assistant", "content": "Messi."},
            ],
            {},
        ),
    ]
    assert _colours(dataset[0])[1] == BLUE and len(dataset[1]["images"]) == 1


@pytest.mark.parametrize(
    "row, reason, problem",
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "<video>Why?"},
                    {"role": "assistant", "content": "."},
                ],
                "videos": ["v.mp4"],
            },
            "invalid_row",
            "has 'videos': glmlab records hold images; leave video rows out of this file",
        ),
        (
            {
                "messages": [{"role": "user", "content": "Q"}, {"role": "observation", "content": "{}"}],
                "images": ["a.png"],
            },
            "wrong_type",
            "messages[1] has role 'observation'; expected one of ('system', 'user', 'assistant')",
        ),
        (
            {"images": ["a.png"]},
            "missing_field",
            "missing field 'messages' (a LLaMA-Factory row holds {'role', 'content'} messages and 'images')",
        ),
    ],
)
def test_a_bad_llama_factory_row_is_named_and_skippable(tmp_path, row, reason, problem):
    _png(tmp_path / "a.png", RED)
    good = {
        "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
        "images": ["a.png"],
    }
    path = _json(tmp_path / "data.json", [good, row])
    with pytest.raises(InputError) as raised:
        load_records(path, format="llama_factory")
    assert str(raised.value) == f"{path} row 1: {problem}"
    _, report = load_records_with_report(path, format="llama_factory", on_error="skip")
    assert (report.rows_loaded, report.skipped_by_reason) == (1, {reason: 1})


# ---- a CSV beside its images ----------------------------------------------------------------------


def _csv_folder(tmp_path: Path, text: str) -> Path:
    _png(tmp_path / "images" / "a.png", RED)
    _png(tmp_path / "images" / "b.png", BLUE)
    (tmp_path / "data.csv").write_text(text, encoding="utf-8")
    return tmp_path


def test_csv_rows_become_records_with_text_answers_and_metadata(tmp_path):
    folder = _csv_folder(
        tmp_path,
        'id,image,question,answer,kind\nr0,images/a.png,"How many, in all?",042,count\n'
        "r1,images/b.png,Colour?,blue,\n",
    )
    dataset = load_records(folder, format="csv")
    assert _records(dataset) == [
        (
            "r0",
            [{"role": "user", "content": "How many, in all?"}, {"role": "assistant", "content": "042"}],
            {"kind": "count"},
        ),
        (
            "r1",
            [{"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "blue"}],
            {"kind": None},
        ),
    ]
    assert [_colours(row) for row in dataset] == [[RED], [BLUE]]


def test_bad_csv_rows_are_named_by_data_row_and_skipped_by_reason(tmp_path):
    folder = _csv_folder(
        tmp_path,
        "id,image,question,answer\n"
        "ok,images/a.png,Colour?,red\n"
        "blank,images/a.png,Colour?,\n"
        "gone,images/zzz.png,Colour?,red\n"
        "wide,images/a.png,Colour?,red,extra\n",
    )
    csv_path = folder / "data.csv"
    messages = []
    for rows in range(2, 5):  # each bad row alone after the good one
        lines = csv_path.read_text().splitlines()
        single = folder / "one.csv"
        single.write_text("\n".join([lines[0], lines[1], lines[rows]]) + "\n")
        with pytest.raises(InputError) as raised:
            load_records(single, format="csv")
        messages.append(str(raised.value))
    assert messages == [
        f"{single} row 1 (id 'blank'): missing field 'answer' (give 'question' and 'answer', or 'messages')",
        f"{single} row 1 (id 'gone'): image file 'images/zzz.png' not found (looked at {folder / 'images/zzz.png'})",
        f"{single} row 1 (id 'wide'): has 5 cells, the header has 4",
    ]
    dataset, report = load_records_with_report(folder, format="csv", on_error="skip")
    assert dataset["id"] == ["ok"]
    assert report.skipped_by_reason == {"missing_field": 1, "missing_image": 1, "invalid_row": 1}


def test_a_csv_without_a_needed_column_is_refused_naming_it_and_columns_rename(tmp_path):
    folder = _csv_folder(tmp_path, "picture,question,label\nimages/a.png,Colour?,red\n")
    with pytest.raises(InputError) as raised:
        load_records(folder, format="csv")
    assert str(raised.value) == (
        f"{folder / 'data.csv'}: no column 'image', 'answer' (its columns are ['picture', 'question', 'label']); "
        "a CSV of records has columns image, question, answer (rename others with columns)."
    )
    renamed = load_records(folder, format="csv", columns={"picture": "image", "label": "answer"})
    assert renamed[0]["messages"][-1] == {"role": "assistant", "content": "red"}


def test_unknown_format_and_wrong_file_kind_are_refused(tmp_path):
    (tmp_path / "data.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"format='alpaca': expected one of \('glmlab', 'sharegpt'"):
        load_records(tmp_path, format="alpaca")
    with pytest.raises(InputError) as raised:
        load_records(tmp_path, format="csv")
    assert str(raised.value) == (
        f"{tmp_path}: no data.csv in this folder; a csv data folder holds data.csv and its image files, "
        "or pass the file itself."
    )
    with pytest.raises(InputError, match=r"not a data folder or \.csv file \(format 'csv'\)"):
        load_records(tmp_path / "data.jsonl", format="csv")


# ---- placing the images ---------------------------------------------------------------------------


def test_markers_place_images_in_the_prompt_and_their_count_is_checked():
    turns = [{"role": "user", "content": "Left <image> right\n<image>"}]
    assert prompts.conversation_messages(["a", "b"], turns, markers=True) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Left"},
                {"type": "image", "image": "a"},
                {"type": "text", "text": "right"},
                {"type": "image", "image": "b"},
            ],
        }
    ]
    # Without markers=True (a plain question to ask/chat) the text is the user's own.
    assert prompts.conversation_messages(["a"], turns)[0]["content"][0] == {"type": "image", "image": "a"}
    with pytest.raises(InputError, match=r"holds 2 <image> marker\(s\) for 1 image\(s\)"):
        prompts.conversation_messages(["a"], turns, markers=True)


def test_the_collator_trains_on_the_image_where_the_record_put_it(vlm, tmp_path):
    _mllm_demo(tmp_path)
    record = load_records(tmp_path / "mllm_demo.json", format="llama_factory")[0]
    collator = LoraCollator(
        vlm.processor,
        eos_token_id=answer_end_token_id(vlm.tokenizer, vlm.eos_token_ids),
        max_image_pixels=vlm.max_image_pixels,
    )
    image = "<|begin_of_image|><|image|><|end_of_image|>"
    text = collator.encode(record).prompt_text
    assert f"<|user|>\n{image}Who are they?/nothink<|assistant|>" in text
    assert f"<|user|>\nWhat are they doing?{image}" in text
    fixed = LoraCollator(vlm.processor, eos_token_id=collator.eos_token_id, prompt="Describe.")
    assert f"<|user|>\nWhat are they doing?{image}" not in fixed.encode(record).prompt_text
    assert f"{image}Describe." in fixed.encode(record).prompt_text


# ---- by name, from a recipe or a suite ------------------------------------------------------------


def test_a_data_source_names_the_format_for_recipes_and_suites(tmp_path):
    _mllm_demo(tmp_path)
    data = {"folder": str(tmp_path / "mllm_demo.json"), "format": "llama_factory"}
    assert DataSource(**data).label == f"folder {tmp_path / 'mllm_demo.json'} (llama_factory)"
    assert len(load_source(DataSource(**data))) == 2
    suite = Suite.from_dict({"name": "demo", "data": data, "metrics": ["exact_match"]})
    samples = load_samples(suite)
    first = samples.item(samples.samples[0])["messages"]
    assert first[-1]["content"][0] == {"type": "text", "text": "What are they doing?"}
    assert first[-1]["content"][1]["type"] == "image"


def test_a_data_source_with_an_unknown_format_or_no_file_of_it_is_a_config_problem(tmp_path):
    with pytest.raises(ConfigError, match="format"):
        Suite.from_dict(
            {"name": "x", "data": {"folder": str(tmp_path), "format": "alpaca"}, "metrics": ["exact_match"]}
        )
    (tmp_path / "data.jsonl").write_text("{}\n")
    source = DataSource(folder=str(tmp_path), format="csv")
    assert source.disk_problems() == [
        (
            "folder",
            f"{str(tmp_path)!r} holds no records (expected a folder with data.csv, or a .csv file; relative "
            f"paths are taken from the current directory {Path.cwd()})",
        )
    ]
