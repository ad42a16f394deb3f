"""Demo data: a seeded generator of Korean place data and the NSMC mapper, both writing landing files."""

from placerec.demo.generator import generate
from placerec.demo.nsmc import import_nsmc_landing

__all__ = ["generate", "import_nsmc_landing"]
