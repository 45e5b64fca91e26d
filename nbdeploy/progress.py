"""Progress bars that stay readable in saved notebooks.

tqdm's notebook bar is an ipywidget: an executed notebook keeps only its state, which
needs JavaScript from a CDN to draw, so nbconvert's HTML and offline readers see
nothing. In a kernel this bar is plain HTML (with a text fallback) updated in place
through a display id: it renders live in JupyterLab and stays in the saved output.
Outside a kernel (the ``nbdeploy`` command, scripts) it is tqdm's text bar.
"""

from __future__ import annotations

import html
import sys
import time
from types import TracebackType
from typing import Any

#: seconds between two redraws of the notebook bar (a display update is a message)
_EVERY = 0.25


def _in_kernel() -> bool:
    if "IPython" not in sys.modules:  # never import IPython just to ask
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


class Progress:
    """The subset of tqdm's interface nbdeploy and papermill use."""

    def __init__(
        self, total: int, *, desc: str = "", unit: str = "it", disable: bool = False
    ) -> None:
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.n = 0
        self._started = self._drawn = time.monotonic()
        self._handle: Any = None
        self._tqdm: Any = None
        if disable:
            return
        if _in_kernel():
            from IPython.display import display

            self._handle = display(self._bundle(), raw=True, display_id=True)
        else:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=unit)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif time.monotonic() - self._drawn >= _EVERY:
            self.refresh()

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._tqdm is not None:
            self._tqdm.set_description(desc)

    def refresh(self) -> None:
        if self._tqdm is not None:
            self._tqdm.n = self.n
            self._tqdm.refresh()
        elif self._handle is not None:
            self._handle.update(self._bundle(), raw=True)
            self._drawn = time.monotonic()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._handle is not None:
            self.refresh()  # the saved output shows where it ended
        self._handle = self._tqdm = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _bundle(self) -> dict[str, str]:
        share = min(self.n / self.total, 1.0) if self.total else 1.0
        elapsed = time.monotonic() - self._started
        text = (f"{self.desc}: {share:.0%} {self.n}/{self.total} {self.unit} "
                f"[{elapsed:.1f} s]")  # fmt: skip
        bar = (
            "<span style='display:inline-block;width:220px;height:12px;border:1px solid #999;"
            "vertical-align:middle;margin:0 6px'><span style='display:block;height:100%;"
            f"width:{share:.1%};background:#2f6fba'></span></span>"
        )
        page = (f"<div class='nbdeploy-progress' style='font-size:12px'>"
                f"{html.escape(self.desc)}{bar}{share:.0%} {self.n}/{self.total} "
                f"{html.escape(self.unit)} [{elapsed:.1f} s]</div>")  # fmt: skip
        return {"text/plain": text, "text/html": page}
