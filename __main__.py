"""``python -m clipae COMMAND ...``: the console scripts without their installed names."""
import sys

from .cli import main

sys.exit(main())
