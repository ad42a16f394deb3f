"""spark-submit entry for ``placerec extract-review-keywords``: same command, same arguments as at a shell."""

import sys

from placerec.cli import main

if __name__ == "__main__":
    main(["extract-review-keywords", *sys.argv[1:]], prog_name="placerec")
