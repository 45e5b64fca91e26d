"""Input schemas: built from training data, enforced on every request.

nbdeploy builds the signature itself rather than relying on MLflow's inference,
which gives up on pandas ``category`` columns and types integer columns so
strictly that a JSON ``1.0`` is refused. A column has one of four types
(``double``, ``long``, ``boolean``, ``string``) and remembers whether training
data had missing or infinite values, since a NaN the model never saw is an input
error, not a prediction.

The parsers turn each wire format into one float matrix (all-numeric schemas,
the fast path) or a dict of column arrays, checking types without echoing
values in any message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.exceptions import SchemaError

if TYPE_CHECKING:
    import pandas as pd

NUMERIC = ("double", "long", "boolean")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # double | long | boolean | string
    nullable: bool = False
    allow_inf: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "nullable": self.nullable,
            "allow_inf": self.allow_inf,
        }


@dataclass(frozen=True)
class Schema:
    columns: tuple[Column, ...]
    #: True when the model was trained on a bare array (columns named by position).
    positional: bool = False
    #: Columns requests may carry for the log only (segments, sensitive attributes,
    #: business keys): parsed and kept beside the features, never given to the model.
    passthrough: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric(self) -> bool:
        return all(c.type in NUMERIC for c in self.columns)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "columns": [c.to_dict() for c in self.columns],
            "positional": self.positional,
        }
        if self.passthrough:
            out["passthrough"] = list(self.passthrough)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        return cls(
            tuple(Column(**c) for c in data["columns"]),
            bool(data.get("positional")),
            tuple(data.get("passthrough") or ()),
        )

    # -- building ----------------------------------------------------------

    @classmethod
    def infer(cls, X: Any) -> Schema:
        """The schema of training data (a DataFrame or a 2-D array)."""
        import pandas as pd

        positional = not isinstance(X, pd.DataFrame)
        frame = as_frame(X)
        if frame.shape[1] == 0:
            raise SchemaError("the training data has no columns; pass X with at least one feature")
        columns = []
        for name in frame.columns:
            series = frame[name]
            kind = _column_type(series)
            values = series.to_numpy()
            nullable = bool(series.isna().any())
            allow_inf = kind == "double" and bool(np.isinf(values.astype(float)).any())
            columns.append(Column(str(name), kind, nullable, allow_inf))
        return cls(tuple(columns), positional)

    def to_mlflow(self) -> Any:
        from mlflow.types import ColSpec, DataType
        from mlflow.types import Schema as MlflowSchema

        kinds = {
            "double": DataType.double,
            "long": DataType.double,
            "boolean": DataType.boolean,
            "string": DataType.string,
        }
        # long is published as double: MLflow's own enforcement would refuse 1.0 or NaN.
        return MlflowSchema(
            [ColSpec(kinds[c.type], c.name, required=not c.nullable) for c in self.columns]
        )

    def as_published(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` in the types the MLflow signature states (integers as float, text as
        object): pyfunc models enforce the signature themselves and refuse int64 for
        double, or a category column for string.
        """
        published = {"long": "float64", "string": "object"}
        casts = {
            c.name: published[c.type]
            for c in self.columns
            if c.type in published and c.name in frame
        }
        return frame.astype(casts) if casts else frame

    # -- enforcing -----------------------------------------------------------

    def from_frame(self, data: Any) -> dict[str, Any]:
        """Check a DataFrame (or array) from Python; returns its columns in schema order."""
        try:
            return self._from_frame(data)
        except SchemaError as exc:  # told with the user's dtypes, from this one frame
            raise in_pandas_terms(exc, data) from None

    def _from_frame(self, data: Any) -> dict[str, Any]:
        frame = as_frame(data, self.names if self.positional else None)
        self._check_names([str(c) for c in frame.columns])
        if len(frame) == 0:
            raise SchemaError("the batch is empty: send at least one row")
        by_name = {str(c): c for c in frame.columns}
        out = {}
        for col in self.columns:
            series = frame[by_name[col.name]]
            numeric = series.dtype.kind in "fiub"
            out[col.name] = self._column(
                col, series.to_numpy() if numeric else series.to_numpy(dtype=object)
            )
        for name in self.passthrough:
            if name in by_name:
                out[name] = _passthrough(name, frame[by_name[name]].astype(object).tolist(), True)
        return out

    def from_rows(
        self, names: list[str] | None, rows: Any, *, may_hold_booleans: bool = True
    ) -> np.ndarray | dict[str, Any]:
        """Rows as lists (``dataframe_split``, positional ``instances``).

        ``may_hold_booleans=False`` (the caller saw no ``true``/``false`` in the raw
        body) lets an all-numeric batch become one float matrix without a Python
        loop over cells; numpy would otherwise read a boolean mixed into numbers as 0/1.
        """
        if not isinstance(rows, list) or not rows:
            raise SchemaError("the batch is empty: send at least one row")
        width = len(self.columns) if names is None else len(names)
        if names is not None:
            self._check_names(names)
        if self.numeric and not may_hold_booleans and (names is None or names == self.names):
            try:
                matrix = np.array(rows)
            except (ValueError, TypeError):  # ragged nesting: the column path says where
                matrix = np.empty((0, 0), dtype=object)
            # JSON booleans are not numbers: all-boolean rows take the checked path
            kinds = "fiub" if all(c.type == "boolean" for c in self.columns) else "fiu"
            if matrix.ndim == 2 and matrix.shape[1] == width and matrix.dtype.kind in kinds:
                return self._numeric_matrix(matrix.astype(np.float64, copy=False))
        for row in rows:
            if not isinstance(row, list | tuple) or len(row) != width:
                raise SchemaError(f"every row must be a list of {width} values", code="bad_request")
        columns = list(zip(*rows, strict=True))
        order = names if names is not None else self.names
        return self.from_columns(dict(zip(order, columns, strict=True)))

    def from_records(self, records: Any) -> dict[str, Any]:
        """Rows as objects (``dataframe_records``, ``instances`` of objects)."""
        if not isinstance(records, list) or not records:
            raise SchemaError("the batch is empty: send at least one row")
        expected = set(self.names)
        for record in records:
            if not isinstance(record, dict):
                raise SchemaError("every record must be a JSON object", code="bad_request")
            if record.keys() != expected:
                self._check_names(list(record))
        out = self.from_columns({n: [r[n] for r in records] for n in self.names})
        for name in self.passthrough:
            if any(name in r for r in records):
                out[name] = _passthrough(name, [r.get(name) for r in records])
        return out

    def from_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """A 2-D array of numbers in schema order (OIP tensors of an all-numeric schema):
        checked for missing and infinite values, as float64."""
        if not self.numeric or matrix.ndim != 2 or matrix.shape[1] != len(self.columns):
            raise SchemaError(
                f"expected a numeric matrix of {len(self.columns)} columns", code="bad_request"
            )
        return self._numeric_matrix(matrix.astype(np.float64, copy=False))

    def from_columns(self, columns: dict[str, Any]) -> dict[str, Any]:
        """Column name -> values (``inputs`` as an object, OIP V2 named inputs)."""
        self._check_names(list(columns))
        lengths = {
            len(v) if isinstance(v, list | tuple | np.ndarray) else -1 for v in columns.values()
        }
        if -1 in lengths:
            raise SchemaError("every column must be a list of values", code="bad_request")
        if len(lengths) != 1:
            raise SchemaError("all columns must have the same number of values", code="bad_request")
        if lengths == {0}:
            raise SchemaError("the batch is empty: send at least one row")
        out = {c.name: self._column(c, columns[c.name]) for c in self.columns}
        for name in self.passthrough:
            if name in columns:
                out[name] = _passthrough(name, columns[name])
        return out

    # -- helpers -------------------------------------------------------------

    def _check_names(self, names: list[str]) -> None:
        expected = self.names
        if names == expected:
            return
        if self.passthrough:  # they may come along, in any order, or not at all
            names = [n for n in names if n not in self.passthrough]
            if names == expected:
                return
        missing = [n for n in expected if n not in set(names)]
        extra = [n for n in names if n not in set(expected)]
        if missing:
            raise SchemaError(
                f"missing column {missing[0]!r} (expected columns: {', '.join(expected)})",
                column=missing[0],
            )
        if extra:
            shown = extra[0] if len(extra[0]) <= 64 else extra[0][:61] + "..."
            raise SchemaError(
                f"unexpected column {shown!r}; the model takes {', '.join(expected)}", column=shown
            )
        if len(names) != len(set(names)):
            raise SchemaError("a column is given twice", code="bad_request")

    def _numeric_matrix(self, matrix: np.ndarray) -> np.ndarray:
        if np.isnan(matrix).any() or np.isinf(matrix).any():
            for j, col in enumerate(self.columns):
                self._check_finite(col, matrix[:, j])
        return matrix

    def _column(self, col: Column, values: Any) -> Any:
        if col.type == "string":
            checked = _all_strings(values) if len(values) >= _VECTOR_ROWS else None
            if checked is not None:
                out, missing = checked
                if missing.any():
                    if not col.nullable:
                        raise SchemaError(
                            f"column {col.name!r} has a missing value but had none in training",
                            column=col.name,
                        )
                    out[missing] = None
                return out
            out = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                if _missing(v):
                    if not col.nullable:
                        raise SchemaError(
                            f"column {col.name!r} has a missing value but had none in training",
                            column=col.name,
                        )
                    out[i] = None
                elif isinstance(v, str):
                    out[i] = v
                else:
                    raise SchemaError(
                        f"column {col.name!r} expects string values, got {_json_type(v)}",
                        column=col.name,
                    )
            return out
        try:
            array = values if isinstance(values, np.ndarray) else np.array(values)
        except (ValueError, TypeError):  # ragged lists as values
            array = None
        if array is None or array.ndim != 1 or array.dtype.kind not in "fiub":
            array = self._coerce_numbers(col, values)  # names the column and the bad type
        if col.type == "boolean" and array.dtype.kind != "b":
            raise SchemaError(
                f"column {col.name!r} expects boolean values, got number", column=col.name
            )
        if col.type != "boolean" and array.dtype.kind == "b":
            raise SchemaError(
                f"column {col.name!r} expects {col.type} values, got boolean", column=col.name
            )
        array = array.astype(np.float64, copy=False) if col.type != "boolean" else array
        self._check_finite(col, array)
        if col.type == "long" and not col.nullable:
            # whole numbers within float64's exact range become integers again; anything
            # else stays as sent (a cast would wrap 1e308 round to garbage)
            exact = np.all(array == np.round(array)) and np.all(np.abs(array) <= 2.0**53)
            return array.astype(np.int64) if exact else array
        return array

    def _coerce_numbers(self, col: Column, values: Any) -> np.ndarray:
        out = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            if _missing(v):
                out[i] = np.nan
            elif isinstance(v, int | float | np.number) and not isinstance(v, bool | str):
                out[i] = v
            else:
                raise SchemaError(
                    f"column {col.name!r} expects {col.type} values, got {_json_type(v)}",
                    column=col.name,
                )
        return out

    @staticmethod
    def _check_finite(col: Column, array: np.ndarray) -> None:
        if array.dtype.kind != "f":
            return
        if not col.nullable and np.isnan(array).any():
            raise SchemaError(
                f"column {col.name!r} has a missing value (null/NaN) but had none in training",
                column=col.name,
            )
        if not col.allow_inf and np.isinf(array).any():
            raise SchemaError(
                f"column {col.name!r} has an infinite value but had none in training",
                column=col.name,
            )


#: the schema's wire types in the words of the pandas dtypes a user has
_PANDAS_TYPES = {"long": "int64", "double": "float64", "boolean": "bool",
                 "string": "str (object, string or category)"}  # fmt: skip
_WRONG_TYPE = re.compile(r"column '(?P<column>.+)' expects (?P<type>\w+) values, got \w+")


def in_pandas_terms(exc: SchemaError, X: Any) -> SchemaError:
    """A wrong-type error about a DataFrame column, told with the user's pandas dtypes.

    The server speaks JSON ("expects long values, got string"); the user has an
    ``object`` column where training had ``int64``.
    """
    import pandas as pd

    found = _WRONG_TYPE.fullmatch(str(exc))
    if found is None or not isinstance(X, pd.DataFrame) or found["column"] not in X.columns:
        return exc
    column, expected = found["column"], _PANDAS_TYPES.get(found["type"], found["type"])
    dtype = X[column].dtype
    return SchemaError(
        f"column {column!r} is {dtype} in your data but the model was trained on {expected}: "
        f"convert it, e.g. X[{column!r}].astype({expected.split()[0]!r})",
        column=column,
        code=exc.code,
    )


def _passthrough(name: str, values: Any, from_python: bool = False) -> np.ndarray:
    """A passthrough column as an object array of JSON scalars (missing as None).

    From a DataFrame (``from_python``) anything else, e.g. a timestamp, is kept as its
    text; from the wire a nested list or object is refused, since the log keeps scalars.
    """
    if not isinstance(values, list | tuple | np.ndarray):
        raise SchemaError(
            f"passthrough column {name!r} must be a list of values", code="bad_request"
        )
    checked = _all_strings(values) if len(values) >= _VECTOR_ROWS else None
    if checked is not None:  # text, the usual passthrough: no loop over the cells
        out, missing = checked
        out[missing] = None
        return out
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if isinstance(v, np.generic):
            v = v.item()
        if _missing(v):
            out[i] = None
        elif isinstance(v, str | bool | int | float):
            out[i] = v
        elif from_python and not isinstance(v, list | dict | tuple):
            out[i] = str(v)
        else:
            raise SchemaError(
                f"passthrough column {name!r} takes text, numbers or booleans, got {_json_type(v)}",
                column=name,
            )
    return out


def _column_type(series: pd.Series) -> str:
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "long"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return "double"
    return "string"


#: From this many values on, a string column is checked by pandas in C, not cell by cell
#: (a batch of 500,000 rows spent half its scoring time in that loop)
_VECTOR_ROWS = 256


def _all_strings(values: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``values`` as a new object array and the mask of its missing cells, when every
    other cell is a ``str``; None sends the caller to the loop that says what is wrong."""
    import pandas as pd
    from pandas.api.types import infer_dtype

    try:
        array = np.array(values, dtype=object)
    except (ValueError, TypeError):
        return None
    if array.ndim != 1 or infer_dtype(array, skipna=True) not in ("string", "empty"):
        return None
    missing = np.asarray(pd.isna(array), dtype=bool)
    if not all(_missing(v) for v in array[missing]):  # pandas' NaNs of other kinds
        return None
    return array, missing


def _missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float | np.floating) and value != value)
        or (type(value).__name__ in ("NAType", "NaTType"))
    )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def as_frame(X: Any, names: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a 2-D array or a list of rows."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        return X
    array = np.asarray(X)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise SchemaError(f"expected a table (2-D), got {array.ndim}-D data", code="bad_request")
    cols = (
        names
        if names is not None and len(names) == array.shape[1]
        else [f"f{i}" for i in range(array.shape[1])]
    )
    return pd.DataFrame(array, columns=cols)
