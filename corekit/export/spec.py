"""The ``[export]`` section of a run spec (owned by the export stage): the bundle ``corekit run``
writes at the end."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from corekit.spec import SECTION


class ExportSpec(BaseModel):
    """The ``[export]`` section: what ``corekit export`` writes."""

    model_config = SECTION
    format: Literal["onnx"] = "onnx"
    quantize: Literal["none", "int8"] = Field("none", description="int8: onnxruntime's int8 weight quantization")
    opset: int | None = Field(None, ge=18, description="ONNX opset (default: the exporter's)")
