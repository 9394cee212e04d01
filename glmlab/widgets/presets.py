"""Preset prompts of the widgets, in English and Chinese: `PRESETS`, the everyday questions researchers
ask GLM-V (the VQA widget), and `CLASSROOM_PRESETS`, questions a teacher asks about a set of pictures
(the classroom widget: describe, spot a stereotype or an advertising trick, read a sign).

Each preset is (menu label, prompt). The grounding prompt asks for the `[x1, y1, x2, y2]` form that GLM-V
answers inside `<|begin_of_box|>` tags (0-1000 scale), which the widget draws on the preview. The
invoice presets ask the invoice generator's own questions, whose keys are the one invoice schema's
(`glmlab.office.INVOICE`), so a widget answer, an eval answer and `glmlab.office.extract` share fields.
"""

from __future__ import annotations

from glmlab.data.invoice_schema import QUESTIONS as INVOICE_QUESTIONS

PRESETS: list[tuple[str, str]] = [
    ("Describe the image", "Describe this image in detail."),
    ("描述图片", "请详细描述这张图片。"),
    ("Read all text (OCR)", "Read all the text in this image. Keep the original line breaks and layout."),
    ("文字识别（OCR）", "识别图片中的全部文字，保持原有的换行和排版。"),
    ("Invoice fields as JSON", INVOICE_QUESTIONS["en"] + " Output only the JSON."),
    ("发票字段（JSON）", INVOICE_QUESTIONS["zh"] + "只输出 JSON。"),
    ("Count the objects", "How many objects are in this image? Give the number first, then list them."),
    ("数一数物体", "图中有多少个物体？先给出数量，再逐一列出。"),
    (
        "Ground the main object (box)",
        "Find the main object in the image and give its bounding box as [x1, y1, x2, y2].",
    ),
    ("框出主要物体", "找出图中的主要物体，并给出它的边界框 [x1, y1, x2, y2]。"),
    ("Table to Markdown", "Convert the table in this image to a Markdown table."),
    ("表格转 Markdown", "把图中的表格转换成 Markdown 表格。"),
    ("Chart: key numbers", "What does this chart show? List its key numbers and the main trend."),
    ("图表要点", "这张图表展示了什么？列出关键数字和主要趋势。"),
    (
        "Medical image findings (research only)",
        "Describe the findings in this medical image. This is for research, not for diagnosis.",
    ),
    ("医学影像所见（仅供研究）", "描述这张医学影像中的所见。仅供研究，不用于诊断。"),
]

# Worded for pupils' pictures: each asks the model to point at what in the picture supports its answer,
# so the class can check the answer against the picture instead of taking it on trust.
CLASSROOM_PRESETS: list[tuple[str, str]] = [
    (
        "Describe the picture",
        "Describe this picture for a class of students: what is shown, who is in it and what is happening.",
    ),
    ("描述图片", "请为学生描述这张图片：画面里有什么、有谁、正在发生什么。"),
    (
        "Spot the stereotype",
        "Does this picture show a stereotype about a group of people (gender, age, origin, job)? Say which "
        "one, point to what in the picture shows it, and suggest a fairer way to show the same scene. If "
        "there is none, say so.",
    ),
    (
        "找出刻板印象",
        "这张图片是否表现了对某一群体（性别、年龄、地域、职业）的刻板印象？说明是哪一种，指出画面中的依据，"
        "并提出更公平的表现方式。如果没有，请直接说明。",
    ),
    (
        "Spot the advertising trick",
        "This is an advertisement. Which persuasion tricks does it use (exaggeration, false urgency, a "
        "celebrity, small print, an appeal to feelings)? Quote the words or point to the part of the "
        "picture that uses each one.",
    ),
    (
        "找出广告套路",
        "这是一则广告。它用了哪些说服技巧（夸大其词、制造紧迫感、名人效应、小字说明、情感诉求）？"
        "逐一引用相关文字或指出画面中的对应部分。",
    ),
    (
        "Read the sign",
        "Read the text on the sign exactly as written, then explain in simple words what it means and who "
        "it is for.",
    ),
    ("读标牌", "逐字读出标牌上的文字，再用简单的话解释它的意思，以及它是写给谁看的。"),
    (
        "Questions for discussion",
        "Write three open questions a teacher could ask students about this picture.",
    ),
    ("讨论问题", "针对这张图片，写出三个老师可以向学生提出的开放式问题。"),
]
