"""The torch-free edge runtime: load an export bundle and generate with onnxruntime.

Needs only numpy, onnxruntime and HF ``tokenizers`` (``pip install 'corekit[edge]'``)::

    from corekit.edge import EdgeModel
    model = EdgeModel("runs/tiny/export")
    print(model.generate(["def fib(n):"], max_new_tokens=32, temperature=0)[0])
"""

from corekit.edge.manifest import FORMAT_VERSION, read_manifest
from corekit.edge.runtime import EdgeModel

__all__ = ["EdgeModel", "FORMAT_VERSION", "read_manifest"]
