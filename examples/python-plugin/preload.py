"""Imports, while the component is built, the standard-library modules that would
otherwise be imported on first use.

componentize-py snapshots the modules imported at build time, and the component has no
file system to import more from when it runs. The `email` package imports its
generator, header and charset modules on first use, and codecs are looked up by name
(`"x".encode("idna")`, a message in `iso-2022-jp`): without this, those fail at run time
with "No module named ..." or "unknown encoding".
"""

import email
import encodings
import importlib
import pkgutil

for _package in (email, encodings):
    for _info in pkgutil.walk_packages(_package.__path__, f"{_package.__name__}."):
        try:
            importlib.import_module(_info.name)
        except ImportError:
            # Platform codecs (mbcs, oem, cp65001 on Windows) are not there on WASI.
            pass
