"""napari-ccdseg: find ionisation clusters, glowing and hot pixels in CCD frames.

The core modules (everything outside ``widgets/``) never import Qt, so they run headless
from the ``ccdseg`` command line and in batch jobs.
"""

__version__ = "0.1.0"
