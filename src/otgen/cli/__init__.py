"""The ``otgen`` command line (argument parsing only; all work is done by library calls).

Entry point: :func:`otgen.cli.main.main`; one module ``otgen.cli.<name>_cmd`` per subcommand.
"""
