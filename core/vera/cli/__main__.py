import sys

from vera.cli import main

sys.exit(main())
