"""Old path of :mod:`oaas_sdk.model.object` (kept for the imports users and docs name): this
module *is* that one, so every name, private ones included, resolves as before."""

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model.object import *  # noqa: F403
else:
    from .model import object as _impl

    sys.modules[__name__] = _impl
