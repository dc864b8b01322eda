"""``python -m pseudocell``."""
from pseudocell.cli import main

main()
