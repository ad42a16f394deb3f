"""spark-submit entry for ``placerec maintain``: same command, same arguments as at a shell."""

import sys

from placerec.cli import main

if __name__ == "__main__":
    main(["maintain", *sys.argv[1:]], prog_name="placerec")
