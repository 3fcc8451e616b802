"""``python -m simulators ...``: the ``simulate`` group without the main CLI."""

from simulators.cli import simulate

if __name__ == "__main__":
    simulate(prog_name="python -m simulators")
