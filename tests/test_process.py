"""Finding and stopping servers: the name lock, not the PID, says what is alive."""

from __future__ import annotations

import json
import subprocess
import sys

import nbdeploy as nd
from nbdeploy import config


def test_stop_all_never_kills_a_recycled_pid(home):
    """A deployment died; its PID now belongs to another process whose command line
    even says "nbdeploy". Nothing holds the deployment's name lock, so it is dead."""
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "nbdeploy", "serve"]
    )
    try:
        folder = config.settings().deployments_dir
        folder.mkdir(parents=True, exist_ok=True)
        state = {"name": "ghost", "ref": "churn@champion", "url": "http://127.0.0.1:9",
                 "pid": bystander.pid, "version": 1}  # fmt: skip
        (folder / "ghost.json").write_text(json.dumps(state))
        (folder / "ghost.lock").touch()  # left behind by the dead server, unlocked
        listed = nd.deployments()
        assert listed.set_index("name").loc["ghost", "status"] == "dead"
        assert nd.stop(all=True) == ["ghost"]  # its stale state is cleared...
        assert bystander.poll() is None  # ...and the bystander was never signalled
        assert nd.deployments().empty
    finally:
        bystander.kill()
        bystander.wait()


def test_a_held_name_lock_is_running(home):
    from nbdeploy.serving.process import hold_name, running

    assert not running("churn")
    lock = hold_name("churn")
    try:
        assert running("churn")
    finally:
        lock.close()
    assert not running("churn")
