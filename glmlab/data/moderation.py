"""Synthetic moderation images with ground-truth labels: posters, signs and app screenshots, zh and en.

Each record is one image whose text carries exactly one label of the default moderation policy
(glmlab/policies/moderation.yaml): `allowed`, `contact_details` (an ad asking to call, message or
mail the seller), `medical_claim` (a cure promised without licence) or `violent_or_hateful` (threats, or
a group told it is unwanted; the groups are fictional places). Labels are balanced (each appears
equally often, in a seeded order); the language, the kind of picture, the wording, colours and layout
are drawn from the seed, so the same seed gives the same pixels. The hard negatives are in `allowed`:
ads with a street address but no private contact, and everyday health advice.

The record asks the judge step of `glmlab.moderation.moderate`: its question is `judge_prompt(policy,
text)` with the true text of the image, and its answer the judgement JSON {label, reason, evidence}
(evidence: the deciding line as printed, "" for allowed; reason: one fixed sentence per label). So a
suite over it scores the judge given a perfect read, and a LoRA recipe trains that step. Metadata holds
`label`, `language`, `kind`, `text` (every line in reading order, as drawn) and `evidence`.
Chinese needs a CJK font (`glmlab.data.fonts`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from glmlab.data.fonts import load_font
from glmlab.data.loaders import write_and_reference
from glmlab.errors import ConfigError
from glmlab.moderation import Policy, judge_prompt, load_policy

LABELS = ("allowed", "contact_details", "medical_claim", "violent_or_hateful")
LANGUAGES = ("zh", "en")
KINDS = ("poster", "sign", "screenshot")
REASONS = {
    "allowed": "Nothing in the text breaks the policy.",
    "contact_details": "The ad asks readers to contact the seller privately.",
    "medical_claim": "It promises to cure a disease without a licence or evidence.",
    "violent_or_hateful": "It threatens violence or tells a group of people they are unwanted.",
}
PRODUCTS = {
    "en": ("Designer bags", "Used phones", "Gold watches", "Sneakers", "Laptops", "Car parts"),
    "zh": ("名牌包包", "二手手机", "黄金手表", "运动鞋", "笔记本电脑", "汽车配件"),
}
PLACES = {
    "en": ("Riverside", "Eastfield", "Port Alma", "Greenhill", "Lakeview"),
    "zh": ("河畔", "东岭", "南湾", "青山", "湖景"),
}
DISEASES = {
    "en": ("diabetes", "high blood pressure", "arthritis", "asthma", "hair loss"),
    "zh": ("糖尿病", "高血压", "关节炎", "哮喘", "脱发"),
}
REMEDIES = {
    "en": ("Golden herbal tea", "Magic mineral water", "Ancient root powder", "Energy patch"),
    "zh": ("祖传草本茶", "神奇矿泉水", "古方根粉", "能量贴"),
}
USERS = {"en": ("mike_88", "sunny.day", "jt_rivers", "anna_k"), "zh": ("小明", "阳光心情", "老王", "安娜")}
# Palettes: (background, ink, accent) per kind
POSTER_COLORS = (
    ((255, 236, 179), (120, 20, 20), (220, 60, 40)),
    ((200, 230, 255), (20, 40, 90), (30, 110, 200)),
)
POSTER_COLORS += (
    ((255, 255, 255), (30, 30, 30), (230, 120, 20)),
    ((40, 40, 60), (255, 255, 255), (250, 200, 40)),
)
SIGN_COLORS = (
    ((20, 110, 60), (255, 255, 255)),
    ((25, 60, 140), (255, 255, 255)),
    ((245, 245, 245), (180, 20, 20)),
)
SIGN_COLORS += (((250, 210, 30), (20, 20, 20)),)
_UNIT_RE = re.compile(r"[!-~]+|\s+|[^!-~\s][，。！？、：；）」]?")  # a Latin run, spaces, or one character
ASPECT = {"poster": (0.75, 1.0), "sign": (1.0, 0.6), "screenshot": (0.56, 1.0)}


def generate_moderation(
    n: int,
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    size: int = 448,
    languages: tuple[str, ...] = LANGUAGES,
    kinds: tuple[str, ...] = KINDS,
    photo_effects: bool = True,
    policy: str | None = None,
) -> list[dict[str, Any]]:
    """`n` labelled moderation records, deterministic given `seed`.

    size: the longer image side in px (posters 3:4, signs 5:3, screenshots 9:16).
    languages / kinds: which to draw from. photo_effects: posters and signs get a slight tilt, blur and
    light change, as if photographed (screenshots stay sharp). policy: a policy YAML path whose label
    names are this set's four (the default policy when None): its wording goes into the questions.
    With `out_dir`, PNGs and data.jsonl are written there and the records point at the files.
    """
    _check_options(n, size, languages, kinds)
    rules = _policy(policy)
    rng = np.random.default_rng(seed)
    queue: list[str] = []
    records = []
    for index in range(n):
        if not queue:
            queue = [LABELS[i] for i in rng.permutation(len(LABELS))]
        label = queue.pop()
        language = languages[int(rng.integers(len(languages)))]
        kind = kinds[int(rng.integers(len(kinds)))]
        lines, evidence = _content(label, language, rng)
        if kind == "screenshot":
            lines = [_pick(rng, USERS[language]), *lines]
        image = _render(kind, lines, language, size, rng)
        if photo_effects and kind != "screenshot":
            image = _photograph(image, rng)
        text = "\n".join(lines)
        verdict = {"label": label, "reason": REASONS[label], "evidence": evidence}
        records.append(
            {
                "id": f"moderation-s{seed}-{index:05d}",
                "image": image,
                "question": judge_prompt(rules, text),
                "answer": json.dumps(verdict, ensure_ascii=False),
                "metadata": {
                    "question_type": "moderation",
                    "answer_type": "closed",
                    "label": label,
                    "language": language,
                    "kind": kind,
                    "text": text,
                    "evidence": evidence,
                },
            }
        )
    return write_and_reference(records, out_dir)


def _check_options(n: int, size: int, languages: tuple[str, ...], kinds: tuple[str, ...]) -> None:
    if n < 0:
        raise ConfigError(f"n={n}: expected a count >= 0.")
    if not 224 <= size <= 2048:
        raise ConfigError(f"size={size}: expected 224..2048 px so the text stays readable.")
    if not languages or any(language not in LANGUAGES for language in languages):
        raise ConfigError(f"languages={languages!r}: expected some of {LANGUAGES}.")
    if not kinds or any(kind not in KINDS for kind in kinds):
        raise ConfigError(f"kinds={kinds!r}: expected some of {KINDS}.")


def _policy(path: str | None) -> Policy:
    policy = load_policy(path)
    if sorted(policy.names) != sorted(LABELS) or policy.allowed_label != "allowed":
        raise ConfigError(
            f"policy={path!r}: its labels are {policy.names} (allowed: {policy.allowed_label!r}); the "
            f"moderation set is labelled {list(LABELS)} with 'allowed'. Reword the definitions, keep the names."
        )
    return policy


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _digits(rng: np.random.Generator, count: int) -> str:
    return "".join(str(int(digit)) for digit in rng.integers(0, 10, count))


# ---- content: (lines in reading order, the deciding line or "") ------------------------------------


def _content(label: str, language: str, rng: np.random.Generator) -> tuple[list[str], str]:
    return {
        "allowed": _allowed,
        "contact_details": _contact,
        "medical_claim": _medical,
        "violent_or_hateful": _hateful,
    }[label](language, rng)


def _contact(language: str, rng: np.random.Generator) -> tuple[list[str], str]:
    product = _pick(rng, PRODUCTS[language])
    handle = _pick(rng, ("deals", "shop", "vip", "best")) + _digits(rng, 3)
    if language == "en":
        contact = _pick(
            rng,
            (
                f"WhatsApp +44 7700 {_digits(rng, 6)}",
                f"Call 555-{_digits(rng, 4)} now",
                f"Email {handle}@mail-offers.com",
                f"Telegram @{handle}",
            ),
        )
        lines = [f"{product} SALE", f"Up to {int(rng.integers(3, 8)) * 10}% off", contact]
    else:
        contact = _pick(
            rng,
            (
                f"加微信：{handle}",
                f"咨询电话：13{_digits(rng, 9)}",
                f"QQ：{_digits(rng, 9)}",
                f"私聊加V：{handle}",
            ),
        )
        lines = [f"{product}大甩卖", f"全场{int(rng.integers(3, 8))}折起", contact]
    return lines, contact


def _medical(language: str, rng: np.random.Generator) -> tuple[list[str], str]:
    remedy, disease = _pick(rng, REMEDIES[language]), _pick(rng, DISEASES[language])
    days = int(rng.integers(3, 31))
    if language == "en":
        claim = _pick(rng, (f"Cures {disease} in {days} days", f"Say goodbye to {disease} forever"))
        lines = [remedy, claim, _pick(rng, ("No doctor, no pills", "100% natural"))]
    else:
        claim = _pick(rng, (f"{days}天根治{disease}", f"永久告别{disease}"))
        lines = [remedy, claim, _pick(rng, ("不用吃药，不用看医生", "纯天然无副作用"))]
    return lines, claim


def _hateful(language: str, rng: np.random.Generator) -> tuple[list[str], str]:
    place = _pick(rng, PLACES[language])
    if language == "en":
        line = _pick(
            rng,
            (
                f"People from {place} are not welcome here. Get out!",
                "Open your shop again and we will smash it",
                f"Anyone from {place} who comes here gets beaten",
            ),
        )
        lines = [_pick(rng, ("NOTICE", "Warning", "To the neighbours")), line]
    else:
        line = _pick(
            rng,
            (f"{place}的人滚出去，这里不欢迎你们！", "再敢开门就砸了你的店", f"{place}来的人见一个打一个"),
        )
        lines = [_pick(rng, ("通知", "警告", "告邻居")), line]
    return lines, line


def _allowed(language: str, rng: np.random.Generator) -> tuple[list[str], str]:
    product, place = _pick(rng, PRODUCTS[language]), _pick(rng, PLACES[language])
    if language == "en":
        choices = (
            [
                f"{product} SALE",
                f"Up to {int(rng.integers(3, 8)) * 10}% off this weekend",
                f"{place} Mall, 2nd floor",
            ],
            ["Wet floor", "Please walk carefully"],
            ["Wash your hands before meals", "Drink water, sleep well"],
            ["Library hours", f"Mon-Fri {int(rng.integers(8, 11))}:00-18:00"],
            ["See you at 7 at the cinema?", "Bring snacks!"],
        )
    else:
        choices = (
            [f"{product}大甩卖", f"本周末全场{int(rng.integers(3, 8))}折", f"地址：{place}商场二楼"],
            ["小心地滑", "请慢行"],
            ["饭前便后要洗手", "多喝水，早睡觉"],
            ["图书馆开放时间", f"周一至周五 {int(rng.integers(8, 11))}:00-18:00"],
            ["今晚七点电影院见？", "记得带零食！"],
        )
    return list(choices[int(rng.integers(len(choices)))]), ""


# ---- drawing ----------------------------------------------------------------------------------------


def _render(kind: str, lines: list[str], language: str, size: int, rng: np.random.Generator) -> Image.Image:
    width, height = (round(size * side) for side in ASPECT[kind])
    style = ("sans", "serif")[int(rng.integers(2))] if kind != "screenshot" else "sans"
    font = lambda px: load_font(px, style, cjk=language == "zh")  # noqa: E731
    if kind == "poster":
        return _poster(lines, width, height, font, rng)
    if kind == "sign":
        return _sign(lines, width, height, font, rng)
    return _screenshot(lines, width, height, font, language)


def _poster(lines: list[str], width: int, height: int, font, rng: np.random.Generator) -> Image.Image:
    background, ink, accent = POSTER_COLORS[int(rng.integers(len(POSTER_COLORS)))]
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    band = int(height * rng.uniform(0.05, 0.1))
    draw.rectangle((0, 0, width, band), fill=accent)
    draw.rectangle((0, height - band, width, height), fill=accent)
    sizes = [height / 9] + [height / 15] * (len(lines) - 1)
    placed = _fit(lines, sizes, font, width * 0.88, height - 2 * band - height / 10, gap=height / 30)
    y = band + height / 20
    for line, face, part, top in placed:
        draw.text((width / 2, y + top), part, font=face, fill=accent if line == 0 else ink, anchor="ma")
    return image


def _sign(lines: list[str], width: int, height: int, font, rng: np.random.Generator) -> Image.Image:
    plate, ink = SIGN_COLORS[int(rng.integers(len(SIGN_COLORS)))]
    image = Image.new("RGB", (width, height), (200, 200, 196))
    draw = ImageDraw.Draw(image)
    margin = width // 24
    draw.rounded_rectangle((margin, margin, width - margin, height - margin), radius=margin, fill=plate)
    draw.rounded_rectangle(
        (2 * margin, 2 * margin, width - 2 * margin, height - 2 * margin), radius=margin, outline=ink, width=3
    )
    sizes = [height / 7] + [height / 11] * (len(lines) - 1)
    inner = height - 6 * margin
    placed = _fit(lines, sizes, font, width * 0.78, inner, gap=0)
    used = placed[-1][3] + placed[-1][1].size * 1.3
    for _, face, part, top in placed:
        draw.text((width / 2, (height - used) / 2 + top), part, font=face, fill=ink, anchor="ma")
    return image


def _fit(
    lines: list[str], sizes: list[float], font, width: float, height: float, *, gap: float
) -> list[tuple]:
    """(line index, font, text, y offset) of each drawn row: `lines` wrapped to `width`, every size shrunk together
    until the rows fit `height`."""
    scale = 1.0
    while True:
        placed, y = [], 0.0
        for index, (line, size) in enumerate(zip(lines, sizes, strict=True)):
            face = font(max(10, round(size * scale)))
            for part in _wrap(line, face, width):
                placed.append((index, face, part, y))
                y += face.size * 1.3
            y += gap
        if y - gap <= height or scale < 0.3:
            return placed
        scale *= 0.9


def _screenshot(lines: list[str], width: int, height: int, font, language: str) -> Image.Image:
    """A social app post: a status bar, the poster's name, the post's lines in a bubble."""
    image = Image.new("RGB", (width, height), (242, 242, 247))
    draw = ImageDraw.Draw(image)
    bar = height // 14
    draw.rectangle((0, 0, width, bar), fill=(255, 255, 255))
    draw.line((0, bar, width, bar), fill=(210, 210, 215), width=1)
    user, *post = lines
    name_face, body_face = font(max(12, height // 30)), font(max(12, height // 22))
    pad = width // 16
    draw.ellipse(
        (pad, bar + pad, pad + 2 * name_face.size, bar + pad + 2 * name_face.size), fill=(120, 160, 220)
    )
    draw.text(
        (pad + 2.6 * name_face.size, bar + pad + name_face.size / 2), user, font=name_face, fill=(60, 60, 70)
    )
    wrapped = [part for line in post for part in _wrap(line, body_face, width - 4 * pad)]
    top = bar + pad + 3 * name_face.size
    step = int(body_face.size * 1.4)
    draw.rounded_rectangle(
        (pad, top, width - pad, top + step * len(wrapped) + pad), radius=pad // 2, fill=(255, 255, 255)
    )
    for index, part in enumerate(wrapped):
        draw.text((2 * pad, top + pad / 2 + index * step), part, font=body_face, fill=(20, 20, 25))
    return image


def _wrap(line: str, face: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> list[str]:
    """`line` broken to fit `width` px: at spaces or between two Chinese characters, never inside a run of
    Latin letters and digits (a phone number stays whole). Written by hand: textwrap counts characters,
    not a font's pixels, and knows no Chinese."""
    parts: list[str] = []
    current = ""
    for unit in _UNIT_RE.findall(line):
        candidate = current + unit
        if current.strip() and face.getlength(candidate.strip()) > width:
            parts.append(current.strip())
            current = unit.lstrip()
        else:
            current = candidate
    return [*parts, current.strip()]


def _photograph(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """What a phone camera does to a poster or sign: a slight tilt, soft focus, light and grain."""
    angle = float(rng.uniform(-3, 3))
    image = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(190, 190, 186))
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 0.7))))
    pixels = np.asarray(image, dtype=np.float32) * float(rng.uniform(0.85, 1.05))
    pixels += rng.normal(0.0, float(rng.uniform(1.5, 5.0)), pixels.shape[:2])[..., None]
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
