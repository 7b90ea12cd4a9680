"""The export formats of the integer network (:mod:`nas.deploy.formats.base`): importing this package registers
them in :data:`FORMATS`, in the order the exporter writes them."""
from nas.deploy.formats.base import FORMATS, ExportFormat, register  # noqa: F401
from nas.deploy.formats import qdq, int8, qonnx  # noqa: F401,E402  (each registers itself)
