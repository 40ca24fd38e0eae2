import sys

from ray_distill.cli.main import main

sys.exit(main())
