"""Hash, then load the same bytes: a file swapped after the check is never loaded."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import nbdeploy as nd
from nbdeploy import config, integrity, registry
from nbdeploy.serving.adapter import load


class _Exec:
    """Unpickling this runs ``code``: what a hostile writer of the cache would plant."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def test_files_swapped_between_hashing_and_loading_are_not_loaded(
    champion, churn_data, monkeypatch, tmp_path
):
    _, _, X_test, _ = churn_data
    folder = registry.fetch_model(champion)  # fetched into the cache
    expected = load(champion).predict(X_test.head(50).to_dict("list")).predictions
    mark = tmp_path / "pwned"
    evil = pickle.dumps(_Exec(f"open({str(mark)!r}, 'w').write('pwned')"))
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != integrity.MANIFEST]
    hashes = {p.relative_to(folder).as_posix(): integrity._sha256(p.read_bytes()) for p in files}
    hashes["model.pkl"] = integrity._sha256(evil)
    hashed = integrity._sha256
    swaps = []

    def swap_after_hashing(data: bytes) -> str:
        # the moment the check has hashed something, a writer on the cache swaps the
        # manifest and the pickle for ones that agree with each other
        digest = hashed(data)
        if not swaps:
            (folder / integrity.MANIFEST).write_text(json.dumps({"sha256": hashes}))
            (folder / "model.pkl").write_bytes(evil)
            swaps.append(True)
        return digest

    monkeypatch.setattr(integrity, "_sha256", swap_after_hashing)
    model = load(champion)
    assert swaps and (folder / "model.pkl").read_bytes() == evil  # the swap happened
    assert not mark.exists()  # the hostile pickle never ran
    got = model.predict(X_test.head(50).to_dict("list")).predictions
    assert np.array_equal(got, expected)  # the verified model answers
    monkeypatch.undo()
    with pytest.raises(nd.IntegrityError, match="manifest"):
        load(champion)  # the next load reads the swapped files, and refuses them
    assert not mark.exists()


def test_the_cache_is_keyed_by_registry_and_manifest(home, churn_data, churn_models, monkeypatch):
    """Two registries with a churn/1 each share one home's cache without mixing."""
    X, y, X_test, _ = churn_data
    first = nd.register(churn_models[0], "churn", X, y)
    monkeypatch.setenv("NBDEPLOY_TRACKING_URI", f"sqlite:///{home / 'other.db'}")
    config.reset()
    second = nd.register(churn_models[1], "churn", X, y)
    assert (first.name, first.version) == (second.name, second.version)
    rows = X_test.head(200).to_dict("list")
    proba_second = load(second).predict(rows).proba
    path_second = registry.fetch_model(second)
    monkeypatch.delenv("NBDEPLOY_TRACKING_URI")
    config.reset()
    proba_first = load(first).predict(rows).proba
    assert registry.fetch_model(first) != path_second
    assert not np.allclose(proba_first, proba_second)  # each registry's own model
