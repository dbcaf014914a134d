"""The command line: argparse entry, human and JSON renderers; logging and signals are set up here only."""
