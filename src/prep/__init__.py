"""prep: fine-tuning data in, validated and token-exact training shards out.

The Python API has the CLI's verbs: `prep.convert(...)`, with more stages to come.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prep")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+src"
