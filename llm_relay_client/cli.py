"""``chat``: talk to an llm-relay server from the shell.

    chat "Explain HTTP/2 in one paragraph"           # streams the answer to stdout
    git diff | chat "Write a commit message"          # piped text is added to the prompt
    chat --json "Hi" | jq -r 'select(.type=="token").content'
    chat --reasoning --reasoning-effort high "Why?"    # the model's thinking, dimmed
    chat                                              # interactive, with history

Ctrl-C cancels the answer being streamed (the server stops the upstream request);
a second Ctrl-C exits. A reader that goes away (``chat ... | head -n 1``) ends the
request the same way, quietly, with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from llm_relay_client.auth import fetch_token
from llm_relay_client.cli_output import Output
from llm_relay_client.errors import AUTH_CODES, CONNECTION_ERROR, TIMEOUT, UPSTREAM_CODES, ChatError
from llm_relay_client.sync import SyncChatClient, SyncStream

EXIT_OK = 0
EXIT_ERROR = 1  # any other failure (internal, server_shutdown, ...)
EXIT_USAGE = 2  # bad arguments or no prompt
EXIT_AUTH = 3  # no token, a refused or expired token, a failed login
EXIT_UPSTREAM = 4  # the model provider failed (upstream_* codes, credits, moderation)
EXIT_CONNECTION = 5  # the server cannot be reached, or was lost for good
EXIT_REFUSED = 6  # the server refused the request (validation, limits, model allowlist, room)
EXIT_INTERRUPTED = 130  # Ctrl-C

REFUSED_CODES = frozenset(
    {
        "forbidden",
        "invalid_payload",
        "payload_too_large",
        "model_not_allowed",
        "rate_limited",
        "too_many_streams",
        "not_found",
    }
)

DEFAULT_URL = "http://127.0.0.1:8000"
EPILOG = f"""\
environment:
  LLM_RELAY_URL       server URL (default {DEFAULT_URL})
  LLM_RELAY_TOKEN     JWT to connect with (--token wins)
  LLM_RELAY_PASSWORD  password for --user (otherwise prompted)
  LLM_RELAY_HISTORY   interactive history file (default ~/.llm_relay_history)

exit codes:
  0 ok   1 other error   2 usage   3 auth   4 upstream (model provider)
  5 connection   6 request refused (limits, validation, model, room)   130 interrupted
"""


def exit_code(error: ChatError) -> int:
    if error.code in AUTH_CODES:
        return EXIT_AUTH
    if error.code in UPSTREAM_CODES:
        return EXIT_UPSTREAM
    if error.code in (CONNECTION_ERROR, TIMEOUT):
        return EXIT_CONNECTION
    if error.code in REFUSED_CODES:
        return EXIT_REFUSED
    return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat",
        description="Stream an answer from an llm-relay server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", nargs="*", help="the prompt (default: stdin, or interactive)")
    parser.add_argument("--url", default=os.environ.get("LLM_RELAY_URL", DEFAULT_URL))
    parser.add_argument("--token", help="JWT (default: $LLM_RELAY_TOKEN)")
    parser.add_argument("--user", help="log in with this account via POST /auth/token")
    parser.add_argument("-m", "--model", help="model (default: the server's DEFAULT_MODEL)")
    parser.add_argument("-t", "--temperature", type=float)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("-s", "--system", help="a system message sent before the prompt")
    parser.add_argument("-r", "--room", help="chat in a room (the server keeps its conversation)")
    parser.add_argument("--json", action="store_true", help="print protocol events as JSON lines")
    parser.add_argument(
        "--reasoning", action="store_true", help="show the model's reasoning (dimmed on a terminal)"
    )
    v2 = parser.add_argument_group("request fields (sent as given; see PROTOCOL.md)")
    v2.add_argument("--reasoning-effort", choices=("minimal", "low", "medium", "high"))
    v2.add_argument("--reasoning-max-tokens", type=int, metavar="N")
    v2.add_argument("--top-p", type=float)
    v2.add_argument("--seed", type=int)
    v2.add_argument("--stop", action="append", metavar="TEXT", help="a stop sequence (repeatable)")
    v2.add_argument("--models", nargs="+", metavar="MODEL", help="fallback models, in order")
    v2.add_argument("--response-format", choices=("text", "json_object"))
    v2.add_argument(
        "--tools",
        type=Path,
        metavar="FILE",
        help="a JSON file with the tools list; the calls are printed (not run)",
    )
    v2.add_argument("--tool-choice", help="none, auto, required, or a tool's name")
    parser.add_argument(
        "-i", "--interactive", action="store_true", help="interactive mode even when piped"
    )
    return parser


def run_stream(stream: SyncStream, output: Output) -> int:
    """Print one answer; Ctrl-C cancels it, a second Ctrl-C gives up at once."""
    events = stream.raw_events()
    interrupted = False
    while True:
        try:
            item = next(events, None)
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            stream.cancel()  # a second Ctrl-C during this propagates
            continue
        if item is None:
            break
        output.event(*item)
    output.end_of_answer()
    if stream.stream.error is not None:
        if not output.as_json:
            output.error(stream.stream.error)
        return exit_code(stream.stream.error)
    if interrupted:
        if not output.as_json:
            output.note("[cancelled]")
        return EXIT_INTERRUPTED
    return EXIT_OK


def resolve_token(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if args.user:
        password = os.environ.get("LLM_RELAY_PASSWORD")
        if password is None:
            password = getpass.getpass(f"Password for {args.user}: ")
        return asyncio.run(fetch_token(args.url, args.user, password))
    return os.environ.get("LLM_RELAY_TOKEN") or None


def read_prompt(args: argparse.Namespace, stdin: TextIO) -> str | None:
    """The prompt from the arguments and/or piped stdin; ``None`` means interactive."""
    prompt = " ".join(args.prompt).strip()
    if args.interactive:
        return None
    if stdin.isatty():
        return prompt or None
    piped = stdin.read().strip()
    return "\n\n".join(part for part in (prompt, piped) if part)


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields the arguments ask for (the file of ``--tools`` read here)."""
    reasoning = {"effort": args.reasoning_effort, "max_tokens": args.reasoning_max_tokens}
    reasoning = {k: v for k, v in reasoning.items() if v is not None}
    choice = args.tool_choice
    if choice is not None and choice not in ("none", "auto", "required"):
        choice = {"type": "function", "function": {"name": choice}}
    chosen = {
        "model": args.model,
        "models": args.models,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "stop": args.stop,
        "reasoning": reasoning or None,
        "response_format": {"type": args.response_format} if args.response_format else None,
        "tools": _read_tools(args.tools) if args.tools else None,
        "tool_choice": choice,
        "room": args.room,
    }
    return {k: v for k, v in chosen.items() if v is not None}


class UsageError(Exception):
    """A bad argument found after parsing (exit code 2)."""


def _read_tools(path: Path) -> list[Any]:
    try:
        tools = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--tools {path}: {exc}") from None
    if not isinstance(tools, list):
        raise UsageError(f"--tools {path}: expected a JSON list of tool definitions")
    return tools


def one_shot(client: SyncChatClient, args: argparse.Namespace, prompt: str, out: Output) -> int:
    messages: list[dict[str, Any]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": prompt})
    return run_stream(client.stream(messages, **options(args)), out)


def interactive(client: SyncChatClient, args: argparse.Namespace, out: Output) -> int:
    """A conversation: each prompt is sent with the turns before it (``/reset`` forgets)."""
    tty = sys.stdin.isatty()
    history_file = _setup_readline() if tty else None
    system = [{"role": "system", "content": args.system}] if args.system else []
    turns: list[dict[str, Any]] = []
    if tty:
        user = client.session.user.name if client.session else "?"
        out.note(f"Connected as {user}. /reset forgets the conversation, Ctrl-D quits.")
    try:
        while True:
            try:
                line = input("> " if tty else "")
            except EOFError:
                return EXIT_OK
            except KeyboardInterrupt:
                out.note("")
                return EXIT_INTERRUPTED
            prompt = line.strip()
            if not prompt:
                continue
            if prompt in ("/exit", "/quit"):
                return EXIT_OK
            if prompt == "/reset":
                turns.clear()
                continue
            new = [{"role": "user", "content": prompt}]
            messages = new if args.room else [*system, *turns, *new]
            stream = client.stream(messages, **options(args))
            status = run_stream(stream, out)
            if status == EXIT_OK and not (stream.done and stream.done.tool_calls):
                turns.extend([*new, {"role": "assistant", "content": stream.text}])
    finally:
        if history_file is not None:
            _save_history(history_file)


def _setup_readline() -> Path | None:
    try:
        import readline
    except ImportError:  # pragma: no cover - Windows without pyreadline
        return None
    path = Path(os.environ.get("LLM_RELAY_HISTORY", Path.home() / ".llm_relay_history"))
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(1000)
    return path


def _save_history(path: Path) -> None:
    import readline

    with contextlib.suppress(OSError):
        readline.write_history_file(path)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``chat ... | head -n 1``): it had what it wanted, so this
        # is a success (exit 0), and leaving ``SyncChatClient`` on the way here closed the
        # connection deliberately, which stops the upstream request. Later writes (the
        # interpreter's last flush) go to /dev/null instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(args.json, reasoning=args.reasoning)
    try:
        prompt = read_prompt(args, sys.stdin)
        if prompt == "":
            out.note("chat: error: the prompt is empty")
            return EXIT_USAGE
        options(args)  # refuse a bad --tools file before connecting
        token = resolve_token(args)
        with SyncChatClient(args.url, token=token) as client:
            if args.json and client.session is not None:
                out.event("session", _session_payload(client))
            if args.room:
                client.join(args.room)
            if prompt is None:
                return interactive(client, args, out)
            return one_shot(client, args, prompt, out)
    except UsageError as error:
        out.note(f"chat: error: {error}")
        return EXIT_USAGE
    except ChatError as error:
        out.error(error)
        if error.is_auth and not (args.token or args.user or os.environ.get("LLM_RELAY_TOKEN")):
            out.note("chat: give a token with --token or LLM_RELAY_TOKEN, or log in with --user")
        return exit_code(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _session_payload(client: SyncChatClient) -> dict[str, Any]:
    session = client.session
    assert session is not None
    return {
        "sid": session.sid,
        "user": {"id": session.user.id, "name": session.user.name},
        "limits": dict(session.limits),
        "default_model": session.default_model,
        "protocol": session.protocol,
    }


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
