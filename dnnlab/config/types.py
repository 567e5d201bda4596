"""The field types of the schema that plain pydantic types would read too leniently: numbers
that are never booleans, column references, device counts, class weights; and `Section`, the
base of every section.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Section(BaseModel):
    """A section of the config: frozen, unknown keys refused, floats finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _not_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1; in a config a boolean where a number belongs is a slip
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]  # an int field: YAML ints, never true/false
Float = Annotated[float, BeforeValidator(_not_bool)]  # a float field: finite (see Section), never true/false


def _column_ref(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a column name or a 0-based column index")
    return value


ColumnRef = Annotated[Union[int, str], BeforeValidator(_column_ref)]  # a csv column: header name or index


def _device_count(value: Any) -> Any:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError("must be auto or a whole number of devices >= 1")
    return value


DeviceCount = Annotated[Union[Literal["auto"], int], BeforeValidator(_device_count)]  # train.devices


def _class_weight(value: Any) -> Any:
    if value in ("none", "balanced"):
        return value
    if not isinstance(value, dict) or not value:
        raise ValueError("must be none, balanced, or a map from class name to weight, e.g. {yes: 5.0}")
    out = {}
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
            raise ValueError(f"the weight of class {name!r} must be a number >= 0; got {weight!r}")
        out[str(name)] = float(weight)  # YAML reads a class named 1 as a number: names are strings
    return out


# train.class_weight: none, balanced, or {class name: weight}
ClassWeight = Annotated[Union[Literal["none", "balanced"], dict[str, float]], BeforeValidator(_class_weight)]
