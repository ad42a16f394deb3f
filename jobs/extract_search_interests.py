"""spark-submit entry for ``placerec extract-search-interests``: same command, same arguments as at a shell."""

import sys

from placerec.cli import main

if __name__ == "__main__":
    main(["extract-search-interests", *sys.argv[1:]], prog_name="placerec")
