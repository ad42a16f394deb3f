"""spark-submit entry for ``placerec prune-index-versions``: same command, same arguments as at a shell."""

import sys

from placerec.cli import main

if __name__ == "__main__":
    main(["prune-index-versions", *sys.argv[1:]], prog_name="placerec")
