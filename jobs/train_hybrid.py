"""spark-submit entry for ``placerec train-hybrid``: same command, same arguments as at a shell."""

import sys

from placerec.cli import main

if __name__ == "__main__":
    main(["train-hybrid", *sys.argv[1:]], prog_name="placerec")
