"""glmlab.export.gguf: GGUF files, mmproj and an Ollama Modelfile by llama.cpp's own converter.

The default run has no llama.cpp: it checks the Modelfile and commands, the errors, the pre-tokenizer
choice and the export's steps around a stand-in converter and quantizer (`fake_llama_cpp`). The
`engines` tests run the real converter, quantizer and llama.cpp from `make engines` (.engines/).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import fake_llama_cpp

from glmlab.errors import ConfigError, GlmlabError
from glmlab.export import MANIFEST, export_gguf
from glmlab.export.gguf import OLLAMA_TEMPLATE, known_pre_tokenizer, modelfile, ollama_name, run_commands

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ROOT / ".engines"

MODELFILE = '''# Ollama Modelfile written by `glmlab export --format gguf`; create the model with
#   ollama create NAME -f Modelfile
FROM ./model-q4_k_m.gguf
FROM ./mmproj-f16.gguf
TEMPLATE """[gMASK]<sop>
{{- range .Messages }}
{{- if eq .Role "system" }}<|system|>
{{ .Content }}
{{- else if eq .Role "user" }}<|user|>
{{ .Content }}
{{- else if eq .Role "assistant" }}<|assistant|>
<think></think>
{{- if .Content }}
{{ .Content }}
{{- end }}
{{- end }}
{{- end }}<|assistant|>
"""
PARAMETER stop "<|user|>"
PARAMETER stop "<|observation|>"
PARAMETER stop "<|endoftext|>"
PARAMETER temperature 0.8
PARAMETER top_p 0.6
PARAMETER top_k 2
PARAMETER repeat_penalty 1.1
PARAMETER num_ctx 4096
'''


@pytest.fixture
def no_llama_env(monkeypatch):
    monkeypatch.delenv("GLMLAB_LLAMA_CPP", raising=False)
    monkeypatch.delenv("GLMLAB_LLAMA_PYTHON", raising=False)


def other_tokenizer_checkpoint(
    tiny_path: Path, out: Path, *, weights: bool = False, merges: bool = True
) -> Path:
    """A copy of the tiny checkpoint (config and tokenizer; `weights` too) whose tokenizer glmlab does
    not know: two filler pieces swap ids. merges=False drops the tokenizer's merges."""
    if weights:
        shutil.copytree(tiny_path, out)
    else:
        out.mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_path / name, out / name)
    tokenizer = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    vocab["Ġa"], vocab["a_"] = vocab["a_"], vocab["Ġa"]
    if not merges:
        tokenizer["model"]["merges"] = []
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return out


# ---- the Modelfile and the commands -----------------------------------------------------------------


def test_modelfile_names_both_files_the_template_stops_sampling_and_context():
    assert modelfile("model-q4_k_m.gguf", "mmproj-f16.gguf", 4096) == MODELFILE


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "多行\nquestion"},
    ],
    [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Q2"},
    ],
]
GO_RENDER = """package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func main() {
	source, _ := os.ReadFile(os.Args[1])
	var conversations [][]Message
	if err := json.NewDecoder(os.Stdin).Decode(&conversations); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("ollama").Parse(string(source)))
	rendered := []string{}
	for _, messages := range conversations {
		var out strings.Builder
		if err := tmpl.Execute(&out, map[string]any{"Messages": messages}); err != nil {
			panic(err)
		}
		rendered = append(rendered, out.String())
	}
	json.NewEncoder(os.Stdout).Encode(rendered)
}
"""


@pytest.mark.skipif(
    shutil.which("go") is None,
    reason="renders the template with Go's text/template (Ollama's): run scripts/install-test-deps.sh",
)
def test_ollama_template_renders_what_the_chat_template_renders(tmp_path):
    from glmlab import tiny
    from glmlab.prompts import render

    (tmp_path / "main.go").write_text(GO_RENDER)
    (tmp_path / "template").write_text(OLLAMA_TEMPLATE)
    done = subprocess.run(
        ["go", "run", "main.go", "template"],
        input=json.dumps(CONVERSATIONS),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    processor = tiny.make_processor()
    assert json.loads(done.stdout) == [render(processor, messages) for messages in CONVERSATIONS]


def test_run_commands_pass_the_projector_to_llama_cpp_and_the_modelfile_to_ollama(tmp_path):
    out = tmp_path / "my export"
    commands = run_commands(out, "model-q8_0.gguf", "mmproj-f16.gguf", "invoices", 4096)
    files = f"-m '{out}/model-q8_0.gguf' --mmproj '{out}/mmproj-f16.gguf'"
    sampling = "--temp 0.8 --top-p 0.6 --top-k 2 --repeat-penalty 1.1"
    assert commands == {
        "llama_server": f"llama-server {files} --jinja -c 4096 {sampling} --port 8080",
        "llama_mtmd_cli": f"llama-mtmd-cli {files} {sampling} --image IMAGE.png -p 'What is in this image?'",
        "ollama": f"ollama create invoices -f '{out}/Modelfile' && ollama run invoices",
    }


@pytest.mark.parametrize(
    ("given", "name"), [("Invoices GGUF", "invoices-gguf"), ("a/b:c", "a-b-c"), ("--", "glmlab-gguf")]
)
def test_ollama_names_are_lowercase_letters_digits_and_dashes(given, name):
    assert ollama_name(given) == name


# ---- errors --------------------------------------------------------------------------------------------


def test_without_llama_cpp_the_error_says_how_to_get_it_and_nothing_is_written(tmp_path, no_llama_env):
    with pytest.raises(ConfigError) as error:
        export_gguf("tiny", tmp_path / "out")
    message = str(error.value)
    assert "GGUF export needs llama.cpp's converter (convert_hf_to_gguf.py); none given." in message
    assert "git clone https://github.com/ggml-org/llama.cpp" in message
    assert "pip install -r llama.cpp/requirements/requirements-convert_hf_to_gguf.txt" in message
    assert "`make engines` in a checkout of glmlab" in message
    assert not (tmp_path / "out").exists()


def test_a_folder_without_the_converter_is_no_llama_cpp_checkout(tmp_path, no_llama_env):
    with pytest.raises(
        ConfigError, match=r"holds no convert_hf_to_gguf\.py, so it is no llama\.cpp checkout"
    ):
        export_gguf("tiny", tmp_path / "out", llama_cpp=tmp_path)


def test_the_checkout_is_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GLMLAB_LLAMA_CPP", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="elsewhere: holds no convert_hf_to_gguf.py"):
        export_gguf("tiny", tmp_path / "out")


def test_unknown_quant_is_refused():
    with pytest.raises(ConfigError, match="--quant q5_k: choose one of f16, q8_0, q4_k_m"):
        export_gguf("tiny", "unused", quant="q5_k")


def test_a_python_without_the_converter_requirements_is_named(tmp_path):
    checkout = tmp_path / "llama.cpp"
    checkout.mkdir()
    (checkout / "convert_hf_to_gguf.py").write_text("import no_such_module_for_glmlab\n")
    with pytest.raises(ConfigError) as error:
        export_gguf("tiny", tmp_path / "out", llama_cpp=checkout)
    assert (
        f"{sys.executable} cannot run llama.cpp's converter: it has no module 'no_such_module_for_glmlab'"
        in (str(error.value))
    )
    assert f"-m pip install -r {checkout}/requirements/requirements-convert_hf_to_gguf.txt" in str(
        error.value
    )
    assert not (tmp_path / "out").exists()


def test_q4_k_m_without_a_quantizer_names_both_quantizers(tmp_path, monkeypatch):
    checkout = fake_llama_cpp(tmp_path / "llama.cpp")
    shutil.rmtree(checkout / "build")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as error:
        export_gguf("tiny", tmp_path / "out", quant="q4_k_m", llama_cpp=checkout)
    message = str(error.value)
    assert "--quant q4_k_m needs llama.cpp's quantizer, and neither is here: llama-cpp-python in" in message
    assert f"nor a llama-quantize binary on PATH or in {checkout}/build/bin" in message
    assert "Or choose --quant f16 or q8_0, which the converter writes itself." in message
    assert not (tmp_path / "out").exists()


def test_a_failing_converter_leaves_nothing_in_out(tmp_path):
    checkout = fake_llama_cpp(tmp_path / "llama.cpp", fails=True)
    with pytest.raises(GlmlabError, match="llama.cpp's converter failed.*fake converter: failing as asked"):
        export_gguf("tiny", tmp_path / "out", llama_cpp=checkout)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["llama.cpp"]


# ---- the pre-tokenizer -----------------------------------------------------------------------------


def test_the_tiny_tokenizer_is_gpt2_and_another_is_left_to_the_converter(tiny_path, tmp_path):
    assert known_pre_tokenizer(tiny_path) == "gpt-2"
    assert known_pre_tokenizer(other_tokenizer_checkpoint(tiny_path, tmp_path / "other")) is None


def test_a_bpe_tokenizer_without_merges_is_refused(tiny_path, tmp_path):
    checkpoint = other_tokenizer_checkpoint(tiny_path, tmp_path / "no-merges", merges=False)
    with pytest.raises(ConfigError, match="a BPE tokenizer without merges, which llama.cpp refuses to load"):
        known_pre_tokenizer(checkpoint)


def test_an_unrecognised_tokenizer_needs_pre_tokenizer(tiny_path, tmp_path):
    checkpoint = other_tokenizer_checkpoint(tiny_path, tmp_path / "other")
    checkout = fake_llama_cpp(tmp_path / "llama.cpp")
    with pytest.raises(
        ConfigError, match="does not recognise this tokenizer's pre-tokenizer. Pass --pre-tokenizer"
    ):
        export_gguf(checkpoint, tmp_path / "out", llama_cpp=checkout)
    assert not (tmp_path / "out").exists()
    given = export_gguf(checkpoint, tmp_path / "out", llama_cpp=checkout, pre_tokenizer="llama-bpe")
    assert (given.pre_tokenizer, given.pre_tokenizer_source) == ("llama-bpe", "given")
    assert (given.path / "model-f16.gguf").read_text() == "fake text f16 llama-bpe"


def test_what_the_converter_recognises_wins(tiny_path, tmp_path, caplog):
    checkout = fake_llama_cpp(tmp_path / "llama.cpp", recognises="glm4")
    exported = export_gguf(tiny_path, tmp_path / "out", llama_cpp=checkout, pre_tokenizer="gpt-2")
    assert (exported.pre_tokenizer, exported.pre_tokenizer_source) == ("glm4", "recognised")
    assert (
        "--pre-tokenizer gpt-2 not used: llama.cpp's converter recognises the tokenizer as glm4"
        in caplog.text
    )


# ---- the export's steps around llama.cpp -------------------------------------------------------------


def test_q4_k_m_quantises_the_f16_file_and_keeps_only_the_result(tmp_path):
    checkout = fake_llama_cpp(tmp_path / "llama.cpp")
    exported = export_gguf("tiny", tmp_path / "Invoices", quant="q4_k_m", llama_cpp=checkout, num_ctx=4096)
    out = tmp_path / "Invoices"
    assert sorted(path.name for path in out.iterdir()) == [
        "Modelfile",
        MANIFEST,
        "mmproj-f16.gguf",
        "model-q4_k_m.gguf",
    ]
    quantized = (out / "model-q4_k_m.gguf").read_text().split()
    assert (
        quantized[0] == "quantized" and quantized[1].endswith("/.model-f16.gguf") and quantized[2] == "Q4_K_M"
    )
    assert (out / "mmproj-f16.gguf").read_text() == "fake mmproj f16 "
    assert (out / "Modelfile").read_text() == MODELFILE
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == "gguf" and manifest["quant"] == "q4_k_m" and manifest["adapter"] is False
    assert (manifest["pre_tokenizer"], manifest["pre_tokenizer_source"]) == ("gpt-2", "given")
    assert (
        manifest["commands"] == exported.commands
        and "ollama create invoices -f" in exported.commands["ollama"]
    )
    assert set(manifest["seconds"]) == {"convert", "quantize", "mmproj"}
    assert manifest["sizes"] == {
        path.name: path.stat().st_size for path in out.iterdir() if path.name != MANIFEST
    }


def test_an_adapter_is_merged_first_and_the_merge_is_not_kept(adapters, tmp_path):
    checkout = fake_llama_cpp(tmp_path / "llama.cpp")
    exported = export_gguf(adapters["alpha"], tmp_path / "out", quant="q8_0", llama_cpp=checkout)
    assert sorted(path.name for path in exported.path.iterdir()) == [
        "Modelfile",
        MANIFEST,
        "mmproj-f16.gguf",
        "model-q8_0.gguf",
    ]
    assert (exported.path / "model-q8_0.gguf").read_text() == "fake text q8_0 gpt-2"
    manifest = json.loads((exported.path / MANIFEST).read_text())
    assert manifest["adapter"] is True and manifest["source"] == str(adapters["alpha"].resolve())
    assert set(manifest["seconds"]) == {"merge", "convert", "mmproj"}


def test_model_is_for_adapters_only(tiny_path, tmp_path):
    checkout = fake_llama_cpp(tmp_path / "llama.cpp")
    with pytest.raises(
        ConfigError, match="is a checkpoint, not an adapter; --model names an adapter's base only"
    ):
        export_gguf(tiny_path, tmp_path / "out", llama_cpp=checkout, model="tiny")


def test_cli_export_gguf_prints_the_files_and_the_commands(tmp_path, no_llama_env):
    from typer.testing import CliRunner

    from glmlab.cli import app

    missing = CliRunner().invoke(app, ["export", "tiny", "--format", "gguf", "--out", str(tmp_path / "out")])
    assert missing.exit_code == 2 and "ConfigError: GGUF export needs llama.cpp's converter" in missing.output
    checkout = fake_llama_cpp(tmp_path / "llama.cpp")
    args = ["export", "tiny", "--format", "gguf", "--quant", "q8_0", "--out", str(tmp_path / "tiny-gguf")]
    result = CliRunner().invoke(app, [*args, "--llama-cpp", str(checkout), "--num-ctx", "2048"])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'tiny-gguf'}: Modelfile (0.0 MiB), mmproj-f16.gguf (0.0 MiB)" in result.output
    assert "(pre-tokenizer gpt-2, given); run it with:" in result.output
    assert f"llama-server -m {tmp_path}/tiny-gguf/model-q8_0.gguf --mmproj" in result.output
    assert (
        f"ollama create tiny-gguf -f {tmp_path}/tiny-gguf/Modelfile && ollama run tiny-gguf" in result.output
    )
    assert "PARAMETER num_ctx 2048" in (tmp_path / "tiny-gguf" / "Modelfile").read_text()


# ---- with the real llama.cpp (`make engines`) -------------------------------------------------------

LLAMA_CPP = ENGINES / "llama-src" / "vendor" / "llama.cpp"
LLAMA_PYTHON = ENGINES / "llama" / "bin" / "python"
LOAD_IN_LLAMA_CPP = """
import sys
import llama_cpp.mtmd_cpp as mtmd
from llama_cpp import Llama

llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False)
prompt = llm.tokenize("[gMASK]<sop><|user|>\\nHi<|assistant|>\\n".encode(), add_bos=False, special=True)
tokens = []
for token in llm.generate(prompt, top_k=1, temp=0.0):
    tokens.append(token)
    if len(tokens) == 4:
        break
params = mtmd.mtmd_context_params_default()
params.use_gpu, params.warmup = False, False
context = mtmd.mtmd_init_from_file(sys.argv[2].encode(), llm.model, params)
print(len(prompt), len(tokens), bool(context and mtmd.mtmd_support_vision(context)))
"""


@pytest.mark.engines
@pytest.mark.slow
def test_real_export_of_an_adapter_loads_in_llama_cpp(adapters, tmp_path):
    exported = export_gguf(
        adapters["alpha"],
        tmp_path / "out",
        quant="q4_k_m",
        llama_cpp=LLAMA_CPP,
        llama_python=str(LLAMA_PYTHON),
    )
    assert (exported.pre_tokenizer, exported.pre_tokenizer_source) == ("gpt-2", "given")
    done = subprocess.run(
        [
            str(LLAMA_PYTHON),
            "-c",
            LOAD_IN_LLAMA_CPP,
            str(exported.path / exported.model_file),
            str(exported.path / exported.mmproj_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.split() == ["8", "4", "True"], done.stderr[-3000:]


@pytest.mark.engines
@pytest.mark.slow
def test_real_converter_refuses_an_unknown_tokenizer_without_pre_tokenizer(tiny_path, tmp_path):
    checkpoint = other_tokenizer_checkpoint(tiny_path, tmp_path / "other", weights=True)
    with pytest.raises(ConfigError, match="does not recognise this tokenizer's pre-tokenizer"):
        export_gguf(checkpoint, tmp_path / "out", llama_cpp=LLAMA_CPP, llama_python=str(LLAMA_PYTHON))
    assert not (tmp_path / "out").exists()
