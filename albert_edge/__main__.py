import sys

from albert_edge.cli import main

sys.exit(main())
