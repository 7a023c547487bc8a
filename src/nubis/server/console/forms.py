"""Console forms into the API's request models: the same validation, its errors as a 422 page
(a console route shows ``NubisError``s; a raw pydantic error would be an internal error)."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic

from nubis.errors import ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)


def parse_form(model: type[M], values: dict[str, Any]) -> M:
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}"
                           for e in exc.errors())
        raise ValidationError(f"invalid form: {fields}") from None
