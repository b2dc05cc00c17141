"""`python -m vggbench ...` runs the CLI (the same as the `vggbench` script)."""

from .cli import main

if __name__ == "__main__":
    main()
