"""`python -m keras_efficient.cli ...`"""

import sys

from keras_efficient.cli.main import main

sys.exit(main())
