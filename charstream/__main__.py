"""`python -m charstream` runs the command line."""
from .cli import main

main(prog_name="charstream")
