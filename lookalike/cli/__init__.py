"""The ``lookalike`` command: parse, call the library, render.

One module per command group (``featurize``, ``store``, ``classify``), and ``options`` for
what they share (featurizer options, progress bars, output formats). The library raises
``LookalikeError``; only this package turns it into one red line and exit code 1.
"""

from __future__ import annotations

import click

from ..errors import LookalikeError


class _Group(click.Group):
    """Turns the library's errors into one red line and exit code 1, and Ctrl-C into exit code 130,
    never a traceback (a command that kept something says what in its own ``Interrupted``)."""

    def invoke(self, ctx):
        from .options import Interrupted, warning_lines

        try:
            with warning_lines():
                return super().invoke(ctx)
        except LookalikeError as e:
            raise click.ClickException(str(e)) from e
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lookalike")
def main():
    """Find similar images with a pretrained CNN's embeddings.

    Every image becomes a vector (a pretrained network's penultimate layer,
    L2-normalised); similar images have vectors with a high cosine similarity.
    The default model, EfficientNet-Lite0, ships with the package and works offline.
    """


def _register() -> None:
    from . import classify, dupes, featurize, finetune, serve, store, watch

    for module in (featurize, store, watch, dupes, classify, finetune, serve):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
