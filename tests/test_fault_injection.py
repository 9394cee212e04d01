"""kill -9 at seeded random points of an eval run and of a training run; every resume ends identical.

Each run is killed with a real SIGKILL at 20 points drawn from a seeded generator, and resumed after
each kill in the same folder; whenever a resumed run finishes, its results are compared with an
uninterrupted run's and the next kills start a new run. A point is one of:

- a time: the run is killed that many seconds after it started (anywhere: loading, generating,
  training, writing a checkpoint, the final adapter or the summary);
- the n-th fsync of the run: killed just before it, i.e. with a state file written to its temporary
  name but not yet renamed, or a row written but not yet synced;
- (eval) the k-th row, cut inside a multi-byte character: the run writes the row's first bytes up to
  the middle of a character of its Chinese question, then is killed (the first point always is one).

Times are seeded fractions of the uninterrupted run's duration, measured first, so the points spread
over the whole run however fast the machine is.

Importing torch and transformers takes ~6 s, so 40+ fresh interpreters would take minutes: a
fork server imports everything once and forks one child per run; the fork server sends SIGKILL to
the child (it reaps it only afterwards, so the pid cannot have been reused).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KILLS = 20  # per run kind
SEED = 13

# Runs as `python -c`: reads one job per line on stdin, answers one JSON line per job on stdout.
FORK_SERVER = r"""
import json, os, signal, sys, time, traceback, warnings
protocol = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # anything printed goes to the log, never into the protocol
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
import datasets, glmlab, glmlab.eval.run, glmlab.lora.training, matplotlib.figure, peft  # imported once, shared by every child
from glmlab.eval import Suite, evaluate
from glmlab.lora import train
ROOT = sys.argv[1]
EVAL, TRAIN = json.loads(sys.argv[2]), json.loads(sys.argv[3])
vlm = glmlab.load("tiny")


def arm(kill):
    # The child's own kill points: before its n-th fsync, or inside its k-th samples.jsonl row.
    count = {"fsync": 0, "row": 0}
    real_fsync = os.fsync

    def fsync(fd):
        count["fsync"] += 1
        if kill.get("at_fsync") == count["fsync"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_fsync(fd)

    os.fsync = fsync
    log = glmlab.eval.run.SampleLog
    real_append = log.append

    def append(self, row):
        count["row"] += 1
        if kill.get("at_row") == count["row"]:
            data = glmlab.eval.run.sample_line(glmlab.eval.run.json_row(row)).encode()
            inside = [i for i in range(len(data)) if data[i] & 0xC0 == 0x80]  # continuation bytes
            with open(self.path, "ab") as file:
                file.write(data[: inside[int(kill["cut"] * len(inside))]])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_append(self, row)

    log.append = append
    return count


def run(job):
    count = arm(job.get("kill") or {})
    if job["kind"] == "eval":
        suite = Suite.from_yaml(os.path.join(ROOT, "eval", "shapes.yaml"), overrides=EVAL["suite"])
        evaluate(suite, vlm, run_dir=job["dir"], progress=False, **EVAL["run"])
    else:
        train(os.path.join(ROOT, "lora", "shapes.yaml"), job["dir"], resume=True, **TRAIN)
    with open(job["report"], "w") as file:
        json.dump(count, file)


for line in sys.stdin:
    job = json.loads(line)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run(job)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    after = (job.get("kill") or {}).get("after_s")
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if after is not None and time.monotonic() - start >= after:
            os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still this child's
            done, status = os.waitpid(pid, 0)
            break
        time.sleep(0.002)
    signalled = os.WIFSIGNALED(status)
    answer = {"killed": signalled and os.WTERMSIG(status) == signal.SIGKILL,
              "code": None if signalled else os.WEXITSTATUS(status), "seconds": time.monotonic() - start}
    protocol.write(json.dumps(answer) + "\n")
    protocol.flush()
"""

# A run small enough to be killed 20 times in well under a minute, with multi-byte text in every row.
EVAL = {
    "suite": {"generation.max_new_tokens": 4, "prompt.template": "{question} 请用一个词回答。"},
    "run": {"limit": 8, "batch_size": 2},
}
# 6 steps of 2 samples out of 16 (the run ends in mid-epoch), a checkpoint every step, dropout on (so
# the restored RNG state matters), evaluation at steps 0, 3 and 6.
TRAIN = {
    "base_model": "tiny",
    "optimizer.max_steps": 6,
    "data.n": 16,
    "optimizer.batch_size": 2,
    "optimizer.gradient_accumulation_steps": 1,
    "evaluation.samples": 2,
    "evaluation.every_steps": 3,
    "evaluation.max_new_tokens": 4,
    "checkpoints.every_steps": 1,
    "checkpoints.total_limit": 2,
    "logging_steps": 1,
    "optimizer.warmup_ratio": 0.0,
    "adapter.dropout": 0.1,
}


class ForkServer:
    def __init__(self, log: Path) -> None:
        self.log = log.open("w")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER, str(ROOT), json.dumps(EVAL), json.dumps(TRAIN)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )

    def run(self, kind: str, folder: Path, kill: dict | None = None) -> dict:
        report = folder.parent / f"{folder.name}.count.json"
        report.unlink(missing_ok=True)
        job = {"kind": kind, "dir": str(folder), "kill": kill, "report": str(report)}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the fork server died; see {self.log.name}"
        answer = json.loads(line)
        if answer["code"] == 0:
            answer["counts"] = json.loads(report.read_text())
        return answer

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_path):
    server = ForkServer(tmp_path_factory.mktemp("fork-server") / "server.log")
    yield server
    server.close()


def kill_points(kind: str, reference: dict) -> list[dict]:
    """KILLS seeded points: times over the reference run, fsync numbers, and (eval) cut rows."""
    rng = random.Random(f"{SEED}-{kind}")
    points = []
    if kind == "eval":  # the first run always reaches its third row: a cut character is always tried
        points.append({"at_row": 3, "cut": rng.random()})
    while len(points) < KILLS:
        roll = rng.random()
        if kind == "eval" and roll < 0.25:
            points.append({"at_row": rng.randint(1, reference["counts"]["row"]), "cut": rng.random()})
        elif roll < 0.5:
            points.append({"at_fsync": rng.randint(1, reference["counts"]["fsync"])})
        else:
            points.append({"after_s": rng.uniform(0.0, reference["seconds"])})
    return points


def kill_and_resume(server: ForkServer, kind: str, root: Path, check) -> dict:
    """Kill at each point, resume after each kill; check every run that finishes. Returns tallies."""
    reference = server.run(kind, root / "reference")
    assert reference["code"] == 0, f"the uninterrupted {kind} run failed; see {server.log.name}"
    runs, folder, tally = 0, None, {"killed": 0, "finished": 0}
    for point in kill_points(kind, reference):
        if folder is None:
            runs += 1
            folder = root / f"run-{runs}"
        answer = server.run(kind, folder, point)
        assert answer["killed"] or answer["code"] == 0, (
            f"{kind} run {folder.name} failed after a kill at {point}; see {server.log.name}"
        )
        if answer["killed"]:
            tally["killed"] += 1
            kind_of_point = next(iter(point)).removeprefix("at_").removesuffix("_s")
            tally[f"killed_{kind_of_point}"] = tally.get(f"killed_{kind_of_point}", 0) + 1
            continue
        check(root / "reference", folder)
        tally["finished"] += 1
        folder = None
    if folder is not None:  # the last run was killed: finish it
        assert server.run(kind, folder)["code"] == 0, f"{kind}: the last resume failed; see {server.log.name}"
        check(root / "reference", folder)
        tally["finished"] += 1
    tally["reference_s"] = reference["seconds"]
    return tally


EVAL_COLUMNS = ["id", "index", "question", "raw", "prediction", "extracted", "exact_match", "error"]


def same_eval_run(reference: Path, resumed: Path) -> None:
    from glmlab.eval import EvalRun

    expected, actual = EvalRun.load(reference), EvalRun.load(resumed)
    assert actual.samples["id"].tolist() == expected.samples["id"].tolist()  # each row once, in order
    pd.testing.assert_frame_equal(actual.samples[EVAL_COLUMNS], expected.samples[EVAL_COLUMNS])
    pd.testing.assert_frame_equal(actual.summary, expected.summary)
    assert actual.thumbnails == expected.thumbnails
    assert actual.samples["question"].str.endswith("请用一个词回答。").all()
    assert (resumed / "samples.jsonl").read_bytes().endswith(b"\n")


def same_training_run(reference: Path, resumed: Path) -> None:
    expected = load_file(reference / "adapter_model.safetensors")
    actual = load_file(resumed / "adapter_model.safetensors")
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
    runs = [json.loads((folder / "glmlab.json").read_text()) for folder in (reference, resumed)]
    for info in runs:
        info.pop("versions"), info.pop("train_runtime_s")
        info["metrics"] = {key: value for key, value in info["metrics"].items() if "runtime" not in key}
    assert runs[1] == runs[0]
    assert (resumed / "adapter_config.json").read_bytes() == (reference / "adapter_config.json").read_bytes()


def test_an_eval_run_killed_at_20_random_points_resumes_to_the_uninterrupted_result(server, tmp_path):
    tally = kill_and_resume(server, "eval", tmp_path, same_eval_run)
    print(f"eval: {tally}")
    assert tally["killed"] >= KILLS // 2 and tally["finished"] >= 1


def test_a_training_run_killed_at_20_random_points_resumes_to_the_same_adapter(server, tmp_path):
    tally = kill_and_resume(server, "train", tmp_path, same_training_run)
    print(f"train: {tally}")
    assert tally["killed"] >= KILLS // 2 and tally["finished"] >= 1
