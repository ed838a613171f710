"""`python -m medsft serve MODEL`: the OpenAI-compatible server."""

from __future__ import annotations

import argparse
import os
import sys

from medsft.errors import OneLineErrors


def parser() -> argparse.ArgumentParser:
    """`serve RUN_DIR_OR_MODEL [--host 127.0.0.1] [--port 8000] [--api_key KEY] [limits]`."""
    from medsft.commands.common import DTYPES
    from medsft.serving.pipeline import ServeOptions

    class Parser(OneLineErrors, argparse.ArgumentParser):
        pass

    def positive(kind):
        def parse(text):
            value = kind(text)
            if value <= 0:
                raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
            return value
        return parse

    defaults = ServeOptions()
    parser = Parser(prog="medsft serve", allow_abbrev=False)
    parser.add_argument("model", help="a medsft run, an adapter or model folder, a hub id or smollm2-135m-instruct")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api_key", default=os.environ.get("MEDSFT_API_KEY"),
                        help="require Authorization: Bearer KEY on every endpoint but /health and / (or MEDSFT_API_KEY)")
    parser.add_argument("--max_tokens_cap", type=positive(int), default=defaults.max_tokens_cap, help="largest max_tokens a request may ask for")
    parser.add_argument("--max_batch", type=positive(int), default=defaults.max_batch, help="requests decoded together (1: one at a time)")
    parser.add_argument("--max_queue", type=positive(int), default=defaults.max_queue, help="requests that may wait; more get 503")
    parser.add_argument("--max_body_bytes", type=positive(int), default=defaults.max_body_bytes, help="larger bodies get 413")
    parser.add_argument("--max_prompt_tokens", type=positive(int), default=None, help="longest prompt (default: the model's context)")
    parser.add_argument("--trust_remote_code", action="store_true", help="run the model's own code (never taken from a run folder)")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="load in this dtype (default: a run's own, else float32)")
    parser.add_argument("--device_map", default=None, help="spread the model over this machine's GPUs (auto, balanced, ...)")
    parser.add_argument("--chat_template_kwargs", default=None,
                        help="JSON keywords for the chat template, on top of a run's own (a request may add its own)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                        help="serve another LoRA adapter of the same base as model NAME (repeatable)")
    parser.add_argument("--timeout", type=positive(float), default=defaults.timeout, help="seconds a request may wait and generate")
    return parser


def main(argv: list[str]) -> int:
    """Load the model and serve it until stopped."""
    import ipaddress

    from medsft.console.quiet import quiet_libraries
    from medsft.serving.pipeline import ServeOptions

    from medsft.commands.common import json_mapping

    args = parser().parse_args(argv)
    template_kwargs = json_mapping(args.chat_template_kwargs, "--chat_template_kwargs")
    quiet_libraries()
    import uvicorn

    from medsft.models import adapters, inference
    from medsft.serving import server

    extra = [adapters.parse(option) for option in args.adapter]

    options = ServeOptions(args.max_tokens_cap, args.max_batch, args.max_queue, args.max_body_bytes, args.max_prompt_tokens,
                           args.timeout, args.api_key or None)
    loaded = inference.load(args.model, args.trust_remote_code, chat_template_kwargs=template_kwargs, dtype=args.dtype,
                            device_map=args.device_map)
    app = server.create_app(loaded, options, extra)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and options.api_key is None:
        print(f"medsft: warning: serving on {args.host} without an API key: anyone who can reach it can use it "
              "(set --api_key or MEDSFT_API_KEY)", file=sys.stderr, flush=True)
    print(f"medsft: serving {', '.join(app.state.models)} on http://{args.host}:{args.port} (OpenAI API under /v1)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
