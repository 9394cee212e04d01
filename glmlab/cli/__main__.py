"""`python -m glmlab.cli`: the `glmlab` command, as torchrun starts it in each process (`--nproc`)."""

from glmlab.cli import app

if __name__ == "__main__":
    app()
