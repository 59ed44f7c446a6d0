import sys

from nanoformer.cli import main

sys.exit(main())
