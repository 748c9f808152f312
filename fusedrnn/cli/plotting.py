"""matplotlib, a dependency of fusedrnn: commands that plot call ``pyplot()``, and go on without a plot where an
install left it out (``pip install --no-deps``)."""

from __future__ import annotations

__all__ = ["pyplot"]


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend, or None (with a message) when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    matplotlib.use("Agg")  # files only: works without a display, on servers and in CI
    import matplotlib.pyplot as plt

    return plt
