"""``nd.monitor``: a live ipywidgets panel over :func:`nbdeploy.monitoring.report`.

The panel holds no logic of its own: every number comes from one ``MonitorReport``
and every tab is that report's HTML (charts are inline SVG, nothing is fetched from
a CDN). A daemon thread polls the audit log cheaply (a few ``COUNT``/``MAX`` queries)
every ``interval`` seconds and recomputes the report only when traffic, feedback,
rejections or alerts changed, or the window slid by a minute; it never blocks the
kernel, and stops with :meth:`MonitorPanel.stop`, ``close()``, or when a new panel
is opened for the same deployment (re-running the cell). The mime bundle also
carries a ``text/html`` snapshot, so executed notebooks show the report where widgets
cannot render. In a kernel run by papermill or ``jupyter nbconvert --execute`` no
one can interact with the widget, and nbconvert would prefer its saved state (a
blank area without a CDN) to the snapshot: there the bundle is the snapshot alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import threading
import time
import weakref
from typing import Any

import ipywidgets as widgets

from nbdeploy import auditlog
from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring import WINDOWS, MonitorReport, report
from nbdeploy.monitoring.render import TABS

__all__ = ["MonitorPanel", "monitor"]

#: While live, the fairness, anomaly and label-free estimate views are recomputed at most
#: this often (seconds); a window change or "refresh now" recomputes everything at once.
EXTRAS_EVERY_S = 30.0


class MonitorPanel(widgets.VBox):
    """Tabs Overview, Drift, Quality, Performance, Fairness, Alerts, Compare; a window selector."""

    def __init__(
        self, name: str, window: str = "1h", *, interval: float = 3.0, by: str | None = None
    ) -> None:
        if window not in WINDOWS:
            raise NbdeployError(f"window must be one of {list(WINDOWS)}, not {window!r}")
        self.name, self.interval = name, interval
        #: a logged column the Drift, Quality and Performance tabs are sliced by
        self.by = by
        self.report: MonitorReport | None = None
        self.updates = 0
        #: when the fairness, anomaly and estimate views shown were computed
        self._extras_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.window = widgets.Dropdown(options=list(WINDOWS), value=window, description="window")
        self.live = widgets.ToggleButton(value=False, description="live", icon="refresh")
        self.refresh_button = widgets.Button(description="refresh now")
        self.status = widgets.HTML()
        self.panes = {tab: widgets.HTML() for tab in TABS}
        self.tabs = widgets.Tab(children=list(self.panes.values()), titles=list(TABS))
        controls = widgets.HBox([self.window, self.live, self.refresh_button, self.status])
        super().__init__([controls, self.tabs])
        self.refresh()
        self.window.observe(lambda _: self.refresh(), "value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.live.observe(self._toggle, "value")

    def refresh(self, *, everything: bool = True) -> MonitorReport:
        """Recompute the report for the selected window and update every tab.

        ``everything=False`` (what live refresh does) keeps the fairness, anomaly and
        label-free estimate views while they are less than :data:`EXTRAS_EVERY_S` old:
        they are most of a refresh's time, and new traffic every few seconds would
        otherwise keep the kernel busy recomputing them.
        """
        with self._lock:
            last = self.report
            reuse = (
                not everything
                and last is not None
                and last.window == self.window.value
                and time.time() - self._extras_at < EXTRAS_EVERY_S
            )
            rep = report(self.name, self.window.value, by=self.by, extras=not reuse)
            if reuse and last is not None:
                rep = dataclasses.replace(rep, extras=last.extras)
            else:
                self._extras_at = rep.generated
            for tab, content in rep.sections().items():
                if self.panes[tab].value != content:
                    self.panes[tab].value = content
            self.report, self.updates = rep, self.updates + 1
            when = dt.datetime.fromtimestamp(rep.generated).strftime("%H:%M:%S")
            o = rep.overview
            extras = ""
            if reuse:
                then = dt.datetime.fromtimestamp(self._extras_at).strftime("%H:%M:%S")
                extras = f" (fairness, anomalies, estimate and segments from {then})"
            self.status.value = (
                f"<span style='color:#555'>{html.escape(self.name)}: {o['predictions']} "
                f"predictions, {o['rejected']} rejected — updated {when}{extras}</span>"
            )
            return rep

    def _signature(self) -> tuple[Any, ...]:
        watermark = auditlog.shared().watermark(self.name)
        return *watermark, self.window.value, int(time.time() // 60)

    def start(self, interval: float | None = None) -> None:
        """Refresh live in a background thread (the kernel stays free)."""
        if interval is not None:
            self.interval = interval
        if self.running:  # a thread told to stop may still be finishing: start anew
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_poll, args=(weakref.ref(self), self._stop), name="nbdeploy-monitor", daemon=True
        )
        self._thread.start()
        if not self.live.value:
            self.live.value = True

    def stop(self) -> None:
        """Stop live refresh (the panel keeps its last state)."""
        self._stop.set()
        if self.live.value:
            self.live.value = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _toggle(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.start()
        else:
            self._stop.set()

    def close(self) -> None:
        self._stop.set()
        super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        interactive = frontend_is_interactive()
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {}) if interactive else {}
        if self.report is not None:
            bundle["text/plain"] = repr(self.report)
            bundle["text/html"] = self.report._repr_html_()
        return bundle


def frontend_is_interactive() -> bool:
    """Whether the cell being run came from a person's frontend (JupyterLab, VS Code).

    Headless executors (nbclient, hence papermill and ``nbconvert --execute``) send
    their requests with ``allow_stdin`` off; interactive frontends turn it on.
    """
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:  # not in a kernel: leave the bundle as ipywidgets makes it
        return True
    parent = kernel.get_parent() if hasattr(kernel, "get_parent") else {}
    return bool((parent or {}).get("content", {}).get("allow_stdin", True))


def _poll(panel_ref: weakref.ref[MonitorPanel], stopped: threading.Event) -> None:
    last: tuple[Any, ...] | None = None
    while True:
        panel = panel_ref()
        if panel is None or stopped.is_set() or panel.comm is None:
            return
        interval = panel.interval
        try:
            signature = panel._signature()
            if signature != last:
                panel.refresh(everything=False)
                last = signature
        except Exception as exc:  # show the problem, keep polling
            panel.status.value = f"<span style='color:#d9534f'>{html.escape(str(exc))}</span>"
        del panel
        if stopped.wait(interval):
            return


def monitor(
    name: str,
    window: str = "1h",
    *,
    live: bool = True,
    interval: float = 3.0,
    by: str | None = None,
) -> MonitorPanel:
    """The monitor panel of deployment ``name`` (live refresh every ``interval`` s).

    ``window`` is one of ``"15m"``, ``"1h"``, ``"6h"``, ``"24h"``, ``"7d"``, ``"all"``
    (changeable in the panel). ``by``: a logged column (e.g. a passthrough column) to
    slice drift, quality and performance by. ``panel.stop()`` or closing it ends live refresh;
    ``panel.report`` is the current :class:`~nbdeploy.monitoring.MonitorReport`.
    """
    panel = MonitorPanel(name, window, interval=interval, by=by)
    previous = _live.get(name)
    if previous is not None:  # re-running the cell: the old panel stops refreshing
        previous.stop()
    if live:
        panel.start()
        _live[name] = panel
    return panel


#: the live panel of each deployment: widgets stay referenced until closed, so without
#: this every re-run of a monitor cell would leave one more refresh thread behind
_live: weakref.WeakValueDictionary[str, MonitorPanel] = weakref.WeakValueDictionary()
