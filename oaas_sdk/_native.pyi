"""Type stub of the native extension ``oaas_sdk._native`` (built from ``oprc-py/``).

Private: users go through ``oaas_sdk``; the package decides which implementation runs.
"""

__version__: str

def build_profile() -> str:
    """``"release"`` or ``"debug"``: the Cargo profile the extension was compiled with."""

def build_info() -> dict[str, object]:
    """``{"version": str, "profile": str, "components": list[str]}``."""
