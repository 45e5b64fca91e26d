"""Schema checks of string columns: a batch of any size gets the same answers and the
same errors, whether its cells are checked one by one or, from a few hundred rows on,
by pandas in C."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from nbdeploy.exceptions import SchemaError
from nbdeploy.schema import _VECTOR_ROWS, Schema

SIZES = [3, _VECTOR_ROWS + 1, 5000]


def _schema(nullable: bool) -> Schema:
    training = pd.DataFrame({"plan": ["a", None if nullable else "b", "c"], "x": [1.0, 2, 3]})
    return Schema.infer(training)


@pytest.mark.parametrize("rows", SIZES)
def test_strings_pass_through_as_objects_whatever_the_dtype(rows):
    plans = np.array(["basic", "pro", "team"], dtype=object)[np.arange(rows) % 3]
    for column in (plans, pd.Categorical(plans), pd.array(plans, dtype="string")):
        got = _schema(False).from_frame(pd.DataFrame({"plan": column, "x": 1.0}))["plan"]
        assert got.dtype == object and list(got) == list(plans)


@pytest.mark.parametrize("rows", SIZES)
def test_missing_cells_become_none_where_training_had_them(rows):
    plans = ["basic"] * rows
    plans[-1], plans[rows // 2], plans[1] = None, np.nan, np.float32("nan")
    frame = pd.DataFrame({"plan": plans, "x": 1.0})
    got = _schema(True).from_frame(frame)["plan"]
    assert got[-1] is None and got[rows // 2] is None and got[1] is None and got[0] == "basic"
    with pytest.raises(SchemaError, match="'plan' has a missing value"):
        _schema(False).from_frame(frame)


@pytest.mark.parametrize("rows", SIZES)
def test_a_number_among_strings_is_named_however_long_the_batch(rows):
    plans: list[object] = ["basic"] * rows
    plans[rows - 2] = 7
    with pytest.raises(SchemaError, match="'plan' is object in your data but the model was "):
        _schema(True).from_frame(pd.DataFrame({"plan": plans, "x": 1.0}))


@pytest.mark.parametrize("rows", SIZES)
def test_a_text_passthrough_column_is_kept_with_its_gaps(rows):
    regions = ["north", "south"] * rows
    regions[1] = None
    training = pd.DataFrame({"x": [1.0, 2.0]})
    schema = Schema.infer(training)
    schema = dataclasses.replace(schema, passthrough=("region",))
    got = schema.from_frame(pd.DataFrame({"x": 1.0, "region": regions[:rows]}))["region"]
    assert list(got) == regions[:rows]
