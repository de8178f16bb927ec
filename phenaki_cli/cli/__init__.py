"""The `phenaki` command line: the app, assembled from one module per command group.

The command modules define plain functions; this module registers them, in the order
`phenaki --help` lists them. Nothing imports it back. Commands only parse, call the library
and print; no model logic lives here.
"""

from __future__ import annotations

import sys

import typer

from phenaki_cli.cli import codec, complete, data, evaluate, generate, models, train
from phenaki_cli.cli.common import err
from phenaki_cli.errors import Interrupted, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Text-to-video stories with a causal C-ViViT tokenizer and a MaskGIT transformer.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: Shapes World renders, and dataset folders.")
app.add_typer(data_app, name="data")

for name, command in (("tokenize", codec.tokenize), ("reconstruct", codec.reconstruct),
                      ("story", generate.story), ("generate", generate.generate), ("eval", evaluate.eval_command),
                      ("info", models.info), ("complete", complete.complete), ("inpaint", complete.inpaint),
                      ("edit", complete.edit), ("train-tokenizer", train.train_tokenizer_command),
                      ("train", train.train_command), ("export", models.export_command)):
    app.command(name)(command)
for name, command in (("shapes", data.data_shapes), ("render", data.data_render), ("encode", data.data_encode),
                      ("embed", data.data_embed), ("text-encoder", data.data_text_encoder)):
    data_app.command(name)(command)


def main() -> None:
    import signal

    # Ctrl-C (and a polite kill) must reach the atomic writers even when a parent shell started us
    # with SIGINT ignored, as non-interactive shells do for background jobs
    from phenaki_cli.runtime import on_interrupt

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_interrupt)
    import os

    from rich.text import Text

    # under torchrun every process runs this; process 0 speaks for them all
    speaks = os.environ.get("RANK", "0") == "0"
    try:
        app()  # typer reports usage errors itself (exit 2) and turns Ctrl-C into exit 130
    except UserError as e:
        # the message as is: user text (paths, prompts) must not be read as markup
        err.print(Text.assemble(("error:", "red"), " ", str(e)), highlight=False)
        sys.exit(2)
    except Interrupted as e:  # the command said what it left
        if speaks and str(e):
            err.print(str(e), markup=False, highlight=False)
        sys.exit(130)
    except SystemExit as e:
        if e.code == 130 and speaks:
            err.print("interrupted; no partial output was left")
        raise
