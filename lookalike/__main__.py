"""``python -m lookalike``: the same command as the ``lookalike`` console script."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="lookalike")
