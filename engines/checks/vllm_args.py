"""vLLM's own `vllm serve` argument parser accepts every command line glmlab writes.

Runs in vLLM's environment. Request: {"commands": {variant: argv}} (argv starts with `vllm serve`).
Each argv is parsed by the parser `vllm serve` itself builds (ServeSubcommand.subparser_init, i.e.
make_arg_parser), checked by its own pre-start validation (ServeSubcommand.validate) and turned into
vLLM's engine arguments (AsyncEngineArgs.from_cli_args); the reasoning and tool-call parsers it names
must be registered in vLLM, and the LoRA options (`--enable-tower-connector-lora` included) must arrive
as glmlab meant them.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from common import CheckFailed, main


def parser_and_command():
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    command = ServeSubcommand()
    command.subparser_init(subparsers)
    return parser, command


def check_one(parser, command, argv: list[str]) -> None:
    from vllm import AsyncEngineArgs
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    if argv[:2] != ["vllm", "serve"]:
        raise CheckFailed(f"not a `vllm serve` line: {argv[:2]}")
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(argv[1:])
    except SystemExit:
        raise CheckFailed(f"vLLM's parser refuses it: {errors.getvalue().strip().splitlines()[-1]}") from None
    command.validate(args)
    if args.model_tag != argv[2]:
        raise CheckFailed(f"model {args.model_tag!r}, glmlab meant {argv[2]!r}")
    args.model = args.model_tag  # as ServeSubcommand.cmd does before it builds the engine arguments
    if not Path(args.model).is_dir():  # a hub id: building the engine arguments would download it
        return
    engine = AsyncEngineArgs.from_cli_args(args)
    ReasoningParserManager.get_reasoning_parser(args.reasoning_parser)
    ToolParserManager.get_tool_parser(args.tool_call_parser)
    if "--lora-modules" in argv:
        given = argv[argv.index("--lora-modules") + 1 :]
        given = given[: next((i for i, word in enumerate(given) if word.startswith("--")), len(given))]
        parsed = [f"{module.name}={module.path}" for module in args.lora_modules]
        if parsed != given:
            raise CheckFailed(f"--lora-modules parsed as {parsed}, glmlab meant {given}")
    if "--max-lora-rank" in argv and engine.max_lora_rank != int(argv[argv.index("--max-lora-rank") + 1]):
        raise CheckFailed(f"--max-lora-rank parsed as {engine.max_lora_rank}")
    if "--enable-lora" in argv and not engine.enable_lora:
        raise CheckFailed("--enable-lora did not enable LoRA")
    if engine.enable_tower_connector_lora != ("--enable-tower-connector-lora" in argv):
        raise CheckFailed(f"tower/connector LoRA parsed as {engine.enable_tower_connector_lora}")


def check(request: dict) -> str:
    import vllm

    parser, command = parser_and_command()
    for variant, argv in request["commands"].items():
        try:
            check_one(parser, command, argv)
        except CheckFailed as failure:
            raise CheckFailed(f"{variant}: {failure}") from None
        except Exception as error:
            raise CheckFailed(f"{variant}: {type(error).__name__}: {error}") from None
        print(f"{variant}: accepted", flush=True)
    return f"vLLM {vllm.__version__} accepts {len(request['commands'])} command lines"


if __name__ == "__main__":
    main(check)
