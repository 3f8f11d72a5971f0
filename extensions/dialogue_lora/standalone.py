"""The standalone app: `python -m extensions.dialogue_lora` serves the tab and a chat box on 127.0.0.1.

For people without text-generation-webui. Folders resolve as the CLI resolves them (user_data/models and
user_data/loras when user_data/ exists in the working folder, else models/ and loras/), or from
--model_dir, --lora_dir and --dataset_dir.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading

from .errors import CliParser, UserError
from .host import StandaloneHost, bits_words
from .paths import resolve_dirs
from .prompt import name_key

TITLE = "Dialogue LoRA"


def _css_at_launch(gr) -> bool:
    import inspect

    return "css" in inspect.signature(gr.Blocks.launch).parameters


def build_app(host: StandaloneHost):
    """The tab (Prepare, Train, Evaluate, Use) plus a Chat tab talking to the model loaded in Use."""
    import gradio as gr

    from .ui import CSS, EXPECTED, _error_text, build_tab

    # Gradio 6 takes the page's CSS at launch (see main), earlier versions here
    old_css = {} if _css_at_launch(gr) else {"css": CSS}
    with gr.Blocks(title=TITLE, analytics_enabled=False, **old_css) as app:
        gr.Markdown(f"# {TITLE}\nRaw dialogue → training samples → a LoRA adapter → a character you can chat "
                    f"with. Models: `{host.dirs().models}` · adapters: `{host.dirs().loras}` · datasets: "
                    f"`{host.dirs().datasets}`")
        with gr.Tabs():
            with gr.Tab("Dialogue LoRA"):
                shared = build_tab(host)
            with gr.Tab("Chat") as chat_tab:
                gr.Markdown("Chat with the model and adapter loaded in *Dialogue LoRA → 4. Use*. Each reply is "
                            "one line, stopped at the newline, from a prompt in the training format.")
                talking = gr.Markdown()  # who answers, from what: said each time the tab opens
                chatbot = gr.Chatbot(**_chatbot_kwargs(gr), label="Chat", height=360)
                turns = gr.State([])
                made_with = gr.State(None)  # the model and adapters the turns were said with
                with gr.Row():
                    message = gr.Textbox(label="Message", placeholder="Say something and press Enter", scale=4)
                    send = gr.Button("Send", variant="primary", scale=1)
                    clear = gr.Button("Clear", scale=1)
                chat_status = gr.Markdown()

        logic = shared["logic"]

        def let_go(history, said_with, now=None) -> str:
            """Why a conversation held with another model or adapter than the one in use `now` is let go (its
            replies are not this adapter's, and would be its prompt's context); "" when it is not."""
            now = now or _in_use(host)
            if not history or said_with is None or said_with == now:
                return ""
            why = "another model or adapter" if now[0] else "a model that is unloaded now"
            return f"*A new conversation: the one before was with {why}.*"

        def heading(name, user) -> str:
            return chat_heading(host, logic.chat_name(name), user) + logic.saved_again(host.in_use()[1])

        def on_send(text, history, name, user, rounds, temperature, said_before):
            history = list(history or [])
            # what answers: a Load under way (on another page) first ends, as the reply would wait for it
            said_with = _in_use(host, settled=True)
            # a Load on another page (or in 4. Use without reopening this tab) since the last reply
            new = let_go(history, said_before, said_with)
            if new:
                history = []
            try:
                reply = logic.chat(history, text, name, user, rounds, temperature)
            except EXPECTED as e:
                if new:
                    return chatbot_value([]), [], text, f"{new}  \n{_error_text(e)}", None, heading(name, user)
                return gr.update(), history, text, _error_text(e), gr.update(), gr.update()
            history += [((user or "You").strip() or "You", text), (logic.chat_name(name), reply)]
            return (chatbot_value(history), history, "", new, said_with,
                    heading(name, user) if new else gr.update())

        def on_open(name, user, history, said_with):
            """The heading; a conversation held with another model or adapter is let go (`let_go`)."""
            new = let_go(history, said_with)
            if new:
                return f"{heading(name, user)}  \n{new}", chatbot_value([]), [], None
            return heading(name, user), gr.update(), gr.update(), gr.update()

        chat_tab.select(on_open, [shared["char_name"], shared["user_name"], turns, made_with],
                        [talking, chatbot, turns, made_with])
        inputs = [message, turns, shared["char_name"], shared["user_name"], shared["rounds"], shared["temperature"],
                  made_with]
        outputs = [chatbot, turns, message, chat_status, made_with, talking]
        send.click(on_send, inputs, outputs)
        message.submit(on_send, inputs, outputs)
        clear.click(lambda: (chatbot_value([]), [], ""), None, [chatbot, turns, chat_status])
        if hasattr(chatbot, "clear"):  # the chatbot's own trash icon (Gradio 4.3x+) forgets the turns too
            chatbot.clear(lambda: ([], ""), None, [turns, chat_status])
    return app


def _in_use(host, settled: bool = False) -> list:
    """[model, [adapters]] in use: what a conversation was held with (a State keeps it as a list)."""
    model, adapters = host.in_use_settled() if settled else host.in_use()
    return [model, list(adapters)]


def chat_heading(host, name: str, user: str | None) -> str:
    """The Chat tab's line on what answers: the character (`TabLogic.chat_name`'s), the model and adapter
    in use, the user's name."""
    model, adapters = host.in_use()
    if not model:
        return "Nothing is loaded for chat: pick a model (and an adapter) in *Dialogue LoRA → 4. Use* and load it."
    used = (f"`{model}`" + (f" + `{', '.join(adapters)}`" if adapters else " (no adapter)")
            + bits_words(*host.in_use_bits()))
    user = (user or "").strip() or "You"
    clash = name_key(user) == name_key(name)  # as the chat's own check (prompt.check_chat_names)
    warning = "  \n⚠️ your name is the character's: change *Your name* in 4. Use" if clash else ""
    return f"**{name}** answers, from {used}; you are **{user}**.{warning}"


def _messages_format() -> bool:
    """Gradio 5+ chatbots take role/content messages; 4.x takes [user, bot] pairs."""
    import gradio as gr

    return int(gr.__version__.split(".")[0]) >= 5


def _chatbot_kwargs(gr) -> dict:
    """The installed Gradio's message format, and no share or copy-all buttons: they float over the top
    right of the box, on the newest message once the chat scrolls (the reply's own copy button stays)."""
    import inspect

    params = inspect.signature(gr.Chatbot.__init__).parameters
    kwargs = {"type": "messages"} if "type" in params else {}
    if "buttons" in params:  # Gradio 6
        kwargs["buttons"] = []
    for flag in ("show_share_button", "show_copy_all_button"):  # Gradio 4 and 5
        if flag in params:
            kwargs[flag] = False
    return kwargs


def chatbot_value(turns: list[tuple[str, str]]) -> list:
    """Alternating (user, character) turns as the installed Gradio's Chatbot value."""
    if _messages_format():
        return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, (_, text) in enumerate(turns)]
    return [[turns[i][1], turns[i + 1][1] if i + 1 < len(turns) else None] for i in range(0, len(turns), 2)]


def main(argv: list[str] | None = None) -> int:
    p = CliParser(prog="python -m extensions.dialogue_lora", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: $DIALOGUE_LORA_PORT, else 7861)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--model_dir", help="models folder (default: user_data/models or models/)")
    p.add_argument("--lora_dir", help="adapters folder (default: user_data/loras or loras/)")
    p.add_argument("--dataset_dir", help="datasets folder (default: user_data/training/datasets or training/datasets/)")
    args = p.parse_args(argv)
    if args.port is None:
        env = os.environ.get("DIALOGUE_LORA_PORT", "").strip()
        try:
            args.port = int(env) if env else 7861
        except ValueError:
            raise UserError(f"DIALOGUE_LORA_PORT={env!r} is not a port number (or give --port)") from None
    if not 0 < args.port < 65536:
        given = argv if argv is not None else sys.argv[1:]
        where = "--port" if any(a.startswith("--port") for a in given) else "DIALOGUE_LORA_PORT"
        raise UserError(f"{where} must be between 1 and 65535, not {args.port}")
    if importlib.util.find_spec("gradio") is None:
        print("error: the standalone app needs gradio: pip install -r requirements.txt", file=sys.stderr)
        return 2
    for flag in ("model_dir", "lora_dir", "dataset_dir"):  # a typo would serve empty lists without a word
        folder = getattr(args, flag)
        if folder and not os.path.isdir(folder):
            raise UserError(f"--{flag} {folder}: no such folder")
    try:  # before the address is printed: a taken port must not look like a served page first
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            # as the server binds: a port its last run left in TIME_WAIT (a restart right after a stop) is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((args.host, args.port))
    except OSError as e:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e} (try another --port)") from None
    dirs = resolve_dirs(model_dir=args.model_dir, lora_dir=args.lora_dir, dataset_dir=args.dataset_dir)
    host = StandaloneHost({"stop_at_newline": True, "character_chat": True, "rounds": 5}, dirs)
    app = build_app(host)
    print(f"Dialogue LoRA: http://{args.host}:{args.port}  (models: {dirs.models}, adapters: {dirs.loras}, "
          f"datasets: {dirs.datasets})", flush=True)
    from .ui import load_training_libraries

    # the first Start's checks need torch and transformers: imported while the page is being opened
    threading.Thread(target=load_training_libraries, name="load-training-libraries", daemon=True).start()
    try:
        import gradio as gr

        from .ui import CSS

        new_css = {"css": CSS} if _css_at_launch(gr) else {}
        app.queue().launch(server_name=args.host, server_port=args.port, inbrowser=False, show_error=True,
                           **new_css)
    except OSError as e:  # the port is taken, or the address is not this machine's
        print(f"error: cannot serve on {args.host}:{args.port}: {e} (try another --port)", file=sys.stderr)
        return 2
    return 0
