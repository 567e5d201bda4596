"""`dnnlab` and `python -m dnnlab`: the stop signals are recorded from here on, before the CLI
and its libraries are imported (dnnlab.interrupt), then the CLI runs."""


def main() -> None:
    from dnnlab import interrupt

    interrupt.install()
    from dnnlab.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
